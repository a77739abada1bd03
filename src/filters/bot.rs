//! The bot detector: decides by User-Agent.
//!
//! Evaluation order: verdict cache, empty User-Agent, exact `allow`, exact `deny`, then the
//! patterns (one `RegexSet`, a match anywhere rejects). Verdicts are cached per User-Agent in
//! a bounded, sharded cache (quick_cache: S3-FIFO-like eviction, a read lock per shard, no
//! global lock), so the regexes run once per distinct User-Agent while it stays in the cache.
//! User-Agents longer than `MAX_CACHED_UA` bytes are evaluated every time and never cached,
//! so the cache's memory stays bounded by `cache_size * MAX_CACHED_UA`.

use super::ip::{Cidr, CidrSet};
use regex::bytes::{RegexSet, RegexSetBuilder};
use std::collections::HashSet;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Longest User-Agent kept in the verdict cache.
pub const MAX_CACHED_UA: usize = 512;

/// Compiled size limit of the pattern set: big enough for ~1,500 crawler patterns.
const REGEX_SIZE_LIMIT: usize = 512 << 20;
/// Lazy-DFA cache per matcher.
const DFA_SIZE_LIMIT: usize = 64 << 20;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BotConfig {
    pub allow: Vec<String>,
    pub deny: Vec<String>,
    pub patterns: Vec<String>,
    pub empty_user_agent_is_bot: bool,
    pub cache_size: usize,
    /// Decide and count, but let the request pass.
    pub dry_run: bool,
    /// Crawlers whose User-Agent is believed only from their own networks.
    pub verify: VerifyConfig,
}

pub const DEFAULT_CACHE_SIZE: usize = 10_000;
pub const DEFAULT_VERIFY_TTL: Duration = Duration::from_secs(3600);
pub const DEFAULT_VERIFY_TIMEOUT: Duration = Duration::from_secs(2);

/// `bot_detector.verify` and its settings.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct VerifyConfig {
    pub bots: Vec<VerifiedBot>,
    /// A DNS failure (error or timeout) admits the request (`on_dns_failure: allow`).
    pub dns_failure_allows: bool,
    /// How long a verdict is kept per address.
    pub ttl: Duration,
    /// Bound on one verification (the reverse lookup and the forward ones).
    pub timeout: Duration,
}

/// One crawler: requests whose User-Agent matches `user_agent` pass as it only from an
/// address in `cidrs`, or one whose reverse name ends in one of `domains` and resolves back
/// to the address (forward-confirmed reverse DNS).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedBot {
    pub name: String,
    pub user_agent: String,
    /// Lower-case, without a trailing dot.
    pub domains: Vec<String>,
    pub cidrs: Vec<Cidr>,
}

/// Whether `name` (a reverse name, maybe with a trailing dot) is `domain` or under it.
pub fn in_domain(name: &str, domain: &str) -> bool {
    let name = name.trim_end_matches('.');
    name.len() >= domain.len()
        && name[name.len() - domain.len()..].eq_ignore_ascii_case(domain)
        && (name.len() == domain.len() || name.as_bytes()[name.len() - domain.len() - 1] == b'.')
}

/// What a verification found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Verified,
    Refused,
    /// The DNS failed or took too long: `on_dns_failure` decides.
    DnsFailure,
}

pub struct BotDetector {
    pub cfg: BotConfig,
    allow: HashSet<Box<[u8]>>,
    deny: HashSet<Box<[u8]>>,
    patterns: Option<RegexSet>,
    cache: Option<quick_cache::sync::Cache<Box<[u8]>, bool>>,
    /// The `user_agent` of each `verify` entry.
    verify_ua: Option<RegexSet>,
    verify_cidrs: Vec<CidrSet>,
    /// Verdicts per (address, entry), with when they were made.
    verdicts: quick_cache::sync::Cache<(IpAddr, usize), (bool, Instant)>,
}

impl std::fmt::Debug for BotDetector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BotDetector")
            .field("cfg", &self.cfg)
            .finish()
    }
}

/// Checks one pattern's syntax (for config validation, without compiling it).
pub fn check_pattern(p: &str) -> Result<(), String> {
    regex_syntax::Parser::new()
        .parse(p)
        .map(|_| ())
        .map_err(|e| first_line_error(&e.to_string()))
}

fn first_line_error(s: &str) -> String {
    // regex-syntax errors are multi-line drawings; keep the last line, which says what is wrong.
    s.lines()
        .rev()
        .find(|l| l.trim_start().starts_with("error:"))
        .map(|l| l.trim().trim_start_matches("error:").trim().to_string())
        .unwrap_or_else(|| s.replace('\n', " "))
}

fn builder<I, S>(patterns: I) -> RegexSetBuilder
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    let mut b = RegexSetBuilder::new(patterns);
    b.size_limit(REGEX_SIZE_LIMIT)
        .dfa_size_limit(DFA_SIZE_LIMIT);
    b
}

impl BotDetector {
    /// Compiles the detector. The error names the offending pattern as `patterns[i]: reason`
    /// (relative path; the caller prefixes its own).
    pub fn new(cfg: BotConfig) -> Result<BotDetector, (String, String)> {
        let patterns = if cfg.patterns.is_empty() {
            None
        } else {
            match builder(&cfg.patterns).build() {
                Ok(set) => Some(set),
                Err(e) => {
                    // Find the pattern at fault, if one alone fails.
                    for (i, p) in cfg.patterns.iter().enumerate() {
                        if let Err(e) = builder([p]).build() {
                            return Err((
                                format!("patterns[{i}]"),
                                first_line_error(&e.to_string()),
                            ));
                        }
                    }
                    return Err(("patterns".into(), first_line_error(&e.to_string())));
                }
            }
        };
        let cache = (cfg.cache_size > 0).then(|| quick_cache::sync::Cache::new(cfg.cache_size));
        let bots = &cfg.verify.bots;
        let verify_ua = if bots.is_empty() {
            None
        } else {
            let set = builder(bots.iter().map(|b| b.user_agent.as_str())).build();
            Some(set.map_err(|e| ("verify".to_string(), first_line_error(&e.to_string())))?)
        };
        Ok(BotDetector {
            verify_ua,
            verify_cidrs: bots.iter().map(|b| CidrSet::new(&b.cidrs)).collect(),
            verdicts: quick_cache::sync::Cache::new(cfg.cache_size.max(1)),
            allow: cfg.allow.iter().map(|s| s.as_bytes().into()).collect(),
            deny: cfg.deny.iter().map(|s| s.as_bytes().into()).collect(),
            patterns,
            cache,
            cfg,
        })
    }

    /// The `verify` entry whose `user_agent` matches, if any (the first one).
    #[inline]
    pub fn verify_entry(&self, ua: Option<&[u8]>) -> Option<usize> {
        let set = self.verify_ua.as_ref()?;
        set.matches(ua?).iter().next()
    }

    /// The verdict on `ip` as entry `i` that needs no DNS: an address of the entry's
    /// `cidrs`, an entry without domains, or a cached verdict. `None` = ask the DNS.
    pub fn quick_verdict(&self, i: usize, ip: IpAddr) -> Option<bool> {
        if self.verify_cidrs.get(i).is_some_and(|c| c.contains(ip)) {
            return Some(true);
        }
        let bot = self.cfg.verify.bots.get(i)?;
        if bot.domains.is_empty() {
            return Some(false);
        }
        match self.verdicts.get(&(ip, i)) {
            Some((v, at)) if at.elapsed() < self.cfg.verify.ttl => Some(v),
            _ => None,
        }
    }

    /// Verifies `ip` as entry `i` by forward-confirmed reverse DNS, within the timeout, and
    /// caches the verdict (not a DNS failure). True when the request passes as that bot.
    pub async fn verify(
        &self,
        i: usize,
        ip: IpAddr,
        resolver: Option<&crate::upstream::discovery::Resolver>,
    ) -> bool {
        let v = match (resolver, self.cfg.verify.bots.get(i)) {
            (Some(r), Some(bot)) => {
                match tokio::time::timeout(self.cfg.verify.timeout, fcrdns(r, bot, ip)).await {
                    Ok(v) => v,
                    Err(_) => Verdict::DnsFailure,
                }
            }
            _ => Verdict::DnsFailure,
        };
        match v {
            Verdict::Verified | Verdict::Refused => {
                let ok = v == Verdict::Verified;
                self.verdicts.insert((ip, i), (ok, Instant::now()));
                ok
            }
            Verdict::DnsFailure => self.cfg.verify.dns_failure_allows,
        }
    }

    /// True when the request with this User-Agent (None = header absent) is a bot. The
    /// User-Agent is taken as bytes, so a value that is not UTF-8 is still matched.
    #[inline]
    pub fn is_bot(&self, ua: Option<&[u8]>) -> bool {
        let ua = ua.unwrap_or(b"");
        if ua.is_empty() {
            return self.cfg.empty_user_agent_is_bot;
        }
        let Some(cache) = &self.cache else {
            return self.evaluate(ua);
        };
        if let Some(v) = cache.get(ua) {
            return v;
        }
        let v = self.evaluate(ua);
        if ua.len() <= MAX_CACHED_UA {
            cache.insert(ua.into(), v);
        }
        v
    }

    /// The uncached decision: allow, deny, then patterns.
    pub fn evaluate(&self, ua: &[u8]) -> bool {
        if ua.is_empty() {
            return self.cfg.empty_user_agent_is_bot;
        }
        if self.allow.contains(ua) {
            return false;
        }
        if self.deny.contains(ua) {
            return true;
        }
        self.patterns.as_ref().is_some_and(|p| p.is_match(ua))
    }

    /// Entries currently cached (tests, diagnostics).
    pub fn cached(&self) -> usize {
        self.cache.as_ref().map(|c| c.len()).unwrap_or(0)
    }
}

/// About `n` plausible crawler patterns (tests and benches): crawler names, versions,
/// case-insensitive and anchored variants, as public crawler lists have them.
pub fn sample_patterns(n: usize) -> Vec<String> {
    const STEMS: &[&str] = &[
        "bot", "crawler", "spider", "scraper", "fetch", "archiver", "indexer", "checker",
        "monitor", "preview", "harvest", "slurp", "agent", "scan", "reader", "seo",
    ];
    const VENDORS: &[&str] = &[
        "acme", "blue", "quick", "deep", "open", "net", "web", "data", "sky", "metric", "link",
        "page", "site", "rank", "meta", "giga", "nova", "zeta", "orbit", "pixel", "alpha", "delta",
        "echo", "lumen", "terra", "vector", "quant", "hyper", "atlas", "cobalt",
    ];
    let mut out = Vec::with_capacity(n);
    let mut i = 0usize;
    while out.len() < n {
        let v = VENDORS[i % VENDORS.len()];
        let s = STEMS[(i / VENDORS.len()) % STEMS.len()];
        let k = i / (VENDORS.len() * STEMS.len());
        let p = match i % 5 {
            0 => format!("(?i){v}{s}{k}"),
            1 => format!("{v}-?{s}{k}/\\d+"),
            2 => format!("(?i)^{v}{k}[ _]{s}"),
            3 => format!("{v}{s}{k}\\.(com|net|io)"),
            _ => format!("(?i){v}{k} {s}/[0-9.]+"),
        };
        out.push(p);
        i += 1;
    }
    out
}

/// The reverse names of `ip`, then, for each in one of the bot's domains, its addresses: the
/// bot is verified when one of them is `ip`.
async fn fcrdns(
    r: &crate::upstream::discovery::Resolver,
    bot: &VerifiedBot,
    ip: IpAddr,
) -> Verdict {
    let ip = super::ip::canonical(ip);
    let names = match r.reverse_lookup(ip).await {
        Ok(names) => names,
        Err(e) if e.is_no_records_found() || e.is_nx_domain() => return Verdict::Refused,
        Err(_) => return Verdict::DnsFailure,
    };
    let mut failed = false;
    for ptr in names.iter() {
        let name = ptr.0.to_ascii();
        if !bot.domains.iter().any(|d| in_domain(&name, d)) {
            continue;
        }
        match r.lookup_ip(ptr.0.clone()).await {
            Ok(ips) => {
                if ips.iter().any(|a| super::ip::canonical(a) == ip) {
                    return Verdict::Verified;
                }
            }
            Err(e) if e.is_no_records_found() || e.is_nx_domain() => {}
            Err(_) => failed = true,
        }
    }
    if failed {
        Verdict::DnsFailure
    } else {
        Verdict::Refused
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ua(s: &str) -> Option<&[u8]> {
        Some(s.as_bytes())
    }

    fn cfg(patterns: &[&str]) -> BotConfig {
        BotConfig {
            allow: vec!["HealthChecker/1.0".into(), "curl/8 friendly".into()],
            deny: vec!["BadBot/2.0".into()],
            patterns: patterns.iter().map(|s| s.to_string()).collect(),
            empty_user_agent_is_bot: true,
            cache_size: 100,
            dry_run: false,
            verify: Default::default(),
        }
    }

    #[test]
    fn order_empty_allow_deny_patterns() {
        let d = BotDetector::new(cfg(&["(?i)scrapy", "curl/"])).unwrap();
        assert!(d.is_bot(None));
        assert!(d.is_bot(ua("")));
        assert!(!d.is_bot(ua("HealthChecker/1.0")));
        // allow wins over a pattern that would match
        assert!(!d.is_bot(ua("curl/8 friendly")));
        assert!(d.is_bot(ua("BadBot/2.0")));
        assert!(!d.is_bot(ua("BadBot/2.1")));
        assert!(d.is_bot(ua("Mozilla/5.0 Scrapy/2.11")));
        assert!(d.is_bot(ua("curl/8.5.0")));
        assert!(!d.is_bot(ua("Mozilla/5.0 (X11; Linux x86_64) Firefox/120.0")));
        let mut c = cfg(&[]);
        c.empty_user_agent_is_bot = false;
        let d = BotDetector::new(c).unwrap();
        assert!(!d.is_bot(None));
        assert!(!d.is_bot(ua("anything")));
    }

    #[test]
    fn cache_is_bounded_and_agrees() {
        let d = BotDetector::new(cfg(&["(?i)bot"])).unwrap();
        for i in 0..1000 {
            let agent = format!("client-{i} {}", if i % 2 == 0 { "Bot" } else { "human" });
            assert_eq!(d.is_bot(ua(&agent)), i % 2 == 0);
            assert_eq!(d.is_bot(ua(&agent)), i % 2 == 0, "cached verdict");
        }
        assert!(d.cached() <= 100, "cache holds {}", d.cached());
        let long = "x".repeat(MAX_CACHED_UA + 1) + "bot";
        let before = d.cached();
        assert!(d.is_bot(ua(&long)));
        assert!(d.cached() <= before.max(100));
        // On an empty cache (the full one above cannot tell): a User-Agent over the limit is
        // never cached, one at the limit is, and cache_size 0 caches nothing.
        let d = BotDetector::new(cfg(&["(?i)bot"])).unwrap();
        assert!(d.is_bot(ua(&long)));
        assert!(!d.is_bot(ua(&"y".repeat(MAX_CACHED_UA + 1))));
        assert_eq!(d.cached(), 0, "over-long User-Agents are not cached");
        let at_limit = "z".repeat(MAX_CACHED_UA - 3) + "bot";
        assert!(d.is_bot(ua(&at_limit)));
        assert_eq!(d.cached(), 1);
        assert!(d.is_bot(ua(&at_limit)));
        assert_eq!(d.cached(), 1, "a repeated User-Agent is one entry");
        let mut c = cfg(&["(?i)bot"]);
        c.cache_size = 0;
        let d = BotDetector::new(c).unwrap();
        assert!(d.is_bot(ua("a bot")) && !d.is_bot(ua("human")));
        assert_eq!(d.cached(), 0);
    }

    #[test]
    fn invalid_pattern_is_named() {
        let err = BotDetector::new(cfg(&["ok", "fine", "also", "(unclosed"])).unwrap_err();
        assert_eq!(err.0, "patterns[3]");
        assert!(err.1.contains("unclosed"), "{}", err.1);
        assert!(check_pattern("(unclosed").unwrap_err().contains("unclosed"));
        assert!(check_pattern("(?i)fine").is_ok());
    }

    #[test]
    fn fifteen_hundred_patterns_compile() {
        let patterns = sample_patterns(1500);
        assert_eq!(patterns.len(), 1500);
        let unique: HashSet<&String> = patterns.iter().collect();
        assert_eq!(unique.len(), 1500);
        let mut c = cfg(&[]);
        c.patterns = patterns;
        let d = BotDetector::new(c).unwrap();
        assert!(d.is_bot(ua(
            "Mozilla/5.0 (compatible; ACMEbot0; +http://acme.example)"
        )));
        assert!(d.is_bot(ua("bluebot0/12")));
        assert!(!d.is_bot(ua(
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/120.0 Safari/537.36"
        )));
    }
}
