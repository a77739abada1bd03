//! Request filters: client address, ip_filter, geofence, bot_detector. `Filters::compile`
//! builds those that belong to no endpoint and `Filters::chain` an endpoint's (reusing the
//! GeoIP database and the bot detectors, with their verdict caches, when their config did
//! not change); `Chain::check` decides, cheapest filter first, and returns the `Reject` of
//! the filter that refused the request.

pub mod bot;
pub mod client_ip;
pub mod geo;
pub mod ip;

use crate::config::security::SecurityConfig;
use crate::config::{Config, ConfigError, ConfigErrors};
use crate::reject::{Reason, Reject, WouldReject};
use bot::BotDetector;
use client_ip::ClientIpResolver;
use geo::{FileStamp, Geo, GeoDb, Geofence};
use ip::{CidrSet, IpFilter};
use std::net::IpAddr;
use std::sync::Arc;

/// The facts about one request the filters look at. The GeoIP lookup is made at most once,
/// when a geofence first needs it.
pub struct Subject<'a> {
    /// Resolved client address; `None` only for non-TCP peers.
    pub ip: Option<IpAddr>,
    pub user_agent: Option<&'a [u8]>,
    db: Option<&'a GeoDb>,
    geo: Option<Option<Geo<'a>>>,
    /// The ASN and anonymous-network databases, looked up at most once each.
    networks: Option<&'a Networks>,
    asn: Option<Option<u32>>,
    anonymous: Option<u8>,
    /// A bot detector whose `verify` entry (the index) the User-Agent matched, and whose
    /// verdict on the address needs the DNS: `verify_bot` asks it.
    pending: Option<(Arc<BotDetector>, usize)>,
    /// What the `dry_run` filters would have refused.
    pub would_reject: WouldReject,
}

/// The GeoIP databases of network rules: ASN (GeoLite2-ASN) and anonymous networks
/// (GeoIP2-Anonymous-IP).
#[derive(Debug, Default)]
pub struct Networks {
    pub asn: Option<Arc<GeoDb>>,
    pub anonymous: Option<Arc<GeoDb>>,
}

impl<'a> Subject<'a> {
    pub fn new(ip: Option<IpAddr>, user_agent: Option<&'a [u8]>, db: Option<&'a GeoDb>) -> Self {
        Subject {
            ip,
            user_agent,
            db,
            geo: None,
            networks: None,
            asn: None,
            anonymous: None,
            pending: None,
            would_reject: WouldReject::default(),
        }
    }

    /// After a chain's check: verifies the crawler it left pending (forward-confirmed
    /// reverse DNS, bounded in time, cached per address). A crawler that is not verified is
    /// refused as a bot.
    pub async fn verify_bot(
        &mut self,
        resolver: Option<&crate::upstream::discovery::Resolver>,
    ) -> Result<(), Reject> {
        let Some((bot, i)) = self.pending.take() else {
            return Ok(());
        };
        let ok = match self.ip {
            Some(ip) => bot.verify(i, ip, resolver).await,
            None => false,
        };
        if !ok {
            self.refuse(bot.cfg.dry_run, Reason::BotDetector)?;
        }
        Ok(())
    }

    /// The ASN and anonymous-network databases the geofences' network rules look in.
    pub fn with_networks(mut self, networks: Option<&'a Networks>) -> Self {
        self.networks = networks;
        self
    }

    /// The client's autonomous system number, looked up once. `None` = unknown.
    pub fn asn(&mut self) -> Option<u32> {
        if let Some(a) = self.asn {
            return a;
        }
        let db = self.networks.and_then(|n| n.asn.as_deref());
        let a = match (db, self.ip) {
            (Some(db), Some(ip)) => db.lookup_asn(ip).map(|(n, _)| n),
            _ => None,
        };
        self.asn = Some(a);
        a
    }

    /// The client network's anonymous kinds (bits of `geo::anonymous_kind`), looked up once.
    pub fn anonymous(&mut self) -> u8 {
        if let Some(a) = self.anonymous {
            return a;
        }
        let db = self.networks.and_then(|n| n.anonymous.as_deref());
        let a = match (db, self.ip) {
            (Some(db), Some(ip)) => db.lookup_anonymous(ip),
            _ => 0,
        };
        self.anonymous = Some(a);
        a
    }

    /// A filter's refusal: the rejection, or with `dry_run` a note of it and a pass.
    #[cold]
    fn refuse(&mut self, dry_run: bool, reason: Reason) -> Result<(), Reject> {
        if dry_run {
            self.would_reject.add(reason);
            return Ok(());
        }
        Err(Reject::new(reason))
    }

    /// The client's location, looked up once. `None` = unknown.
    pub fn geo(&mut self) -> Option<Geo<'a>> {
        if let Some(g) = self.geo {
            return g;
        }
        let g = match (self.db, self.ip) {
            (Some(db), Some(ip)) => db.lookup(ip),
            _ => None,
        };
        self.geo = Some(g);
        g
    }
}

/// The filters of one `security` block.
#[derive(Debug, Default)]
pub struct Chain {
    pub ip_filter: Option<IpFilter>,
    pub geofence: Option<Geofence>,
    pub bot_detector: Option<Arc<BotDetector>>,
}

impl Chain {
    pub fn is_empty(&self) -> bool {
        self.ip_filter.is_none() && self.geofence.is_none() && self.bot_detector.is_none()
    }

    /// ip_filter, then geofence, then bot_detector (cheapest first). A `dry_run` filter's
    /// refusal is noted in the subject and the next filter decides.
    #[inline]
    pub fn check(&self, s: &mut Subject<'_>) -> Result<(), Reject> {
        if let Some(f) = &self.ip_filter {
            // No address (not a TCP peer): an allow list cannot admit it, a deny list passes it.
            let ok = match s.ip {
                Some(ip) => f.allows(ip),
                None => f.mode == ip::Mode::Deny,
            };
            if !ok {
                s.refuse(f.dry_run, Reason::IpFilter)?;
            }
        }
        if let Some(g) = &self.geofence {
            let mut ok = true;
            if g.location {
                ok = g.allows(s.geo().as_ref());
            }
            if ok && g.network {
                let (asn, anonymous) = (s.asn(), s.anonymous());
                ok = g.allows_network(asn, anonymous);
            }
            if !ok {
                s.refuse(g.cfg.dry_run, Reason::Geofence)?;
            }
        }
        if let Some(b) = &self.bot_detector {
            // A User-Agent of a `verify` entry passes as that crawler only when verified.
            let bot = match b.verify_entry(s.user_agent) {
                None => b.is_bot(s.user_agent),
                Some(i) => match s.ip.map(|ip| b.quick_verdict(i, ip)) {
                    None => true,
                    Some(Some(verified)) => !verified,
                    Some(None) => {
                        s.pending = Some((Arc::clone(b), i));
                        false
                    }
                },
            };
            if bot {
                s.refuse(b.cfg.dry_run, Reason::BotDetector)?;
            }
        }
        Ok(())
    }
}

/// The filters that belong to no endpoint (an endpoint's own chain is in its runtime
/// `Endpoint`, built by `Filters::chain`).
#[derive(Debug, Default)]
pub struct Filters {
    pub client_ip: ClientIpResolver,
    pub geo: Option<Arc<GeoDb>>,
    /// The ASN and anonymous-network databases (`None` when the config has neither).
    pub networks: Option<Networks>,
    /// The resolver of crawler verification (`dns`), when a bot detector verifies crawlers.
    pub resolver: Option<crate::upstream::discovery::Resolver>,
    /// Add X-Geo-* headers to upstream requests.
    pub forward_geo: bool,
    /// The service-wide `security` block.
    pub service: Chain,
}

/// Header names set (and always stripped from the client's request) by `geoip.forward`.
pub const GEO_HEADERS: [&str; 4] = ["x-geo-country", "x-geo-region", "x-geo-city", "x-geo-asn"];

/// Opens the database at `path` (YAML key `key`) whose `database_type` contains `layout`,
/// or keeps `previous` when it is the same unchanged file.
fn open_db(
    key: &str,
    path: &std::path::Path,
    layout: &[&str],
    previous: Option<&Arc<GeoDb>>,
) -> Result<Arc<GeoDb>, ConfigErrors> {
    let err = |m: String| ConfigErrors::from(ConfigError::new(key, m));
    let stamp = FileStamp::of(path).map_err(err)?;
    if let Some(db) = previous.filter(|db| db.stamp == stamp) {
        return Ok(Arc::clone(db));
    }
    let db = GeoDb::open(path).map_err(err)?;
    if !layout.iter().any(|l| db.database_type.contains(l)) {
        return Err(err(format!(
            "{} is a {} database; this key takes the {} layout",
            path.display(),
            db.database_type,
            layout.join(" or ")
        )));
    }
    Ok(Arc::new(db))
}

impl Filters {
    /// Compiles the client address resolution, the GeoIP database (the one of `previous`
    /// when the file did not change) and the service-wide chain. An unreadable database is
    /// an error at once; a chain's errors are pushed into `errs`. `old_bots` are the bot
    /// detectors of the previous runtime: one with the same config is kept, with its cache.
    pub fn compile(
        config: &Config,
        previous: Option<&Filters>,
        old_bots: &[&Arc<BotDetector>],
        errs: &mut Vec<ConfigError>,
    ) -> Result<Filters, ConfigErrors> {
        let c = &config.client_ip;
        let headers = c
            .headers
            .iter()
            .filter_map(|h| http::HeaderName::from_bytes(h.as_bytes()).ok())
            .collect();
        let client_ip = ClientIpResolver::new(CidrSet::new(&c.trusted_proxies), headers);

        let g = config.geoip.as_ref();
        let geo = match g.and_then(|g| g.database.as_ref()) {
            None => None,
            Some(path) => {
                let previous = previous.and_then(|p| p.geo.as_ref());
                Some(open_db(
                    "geoip.database",
                    path,
                    &["Country", "City", "Enterprise"],
                    previous,
                )?)
            }
        };
        let old_networks = previous.and_then(|p| p.networks.as_ref());
        let asn = match g.and_then(|g| g.asn_database.as_ref()) {
            None => None,
            Some(path) => {
                let previous = old_networks.and_then(|n| n.asn.as_ref());
                Some(open_db("geoip.asn_database", path, &["ASN"], previous)?)
            }
        };
        let anonymous = match g.and_then(|g| g.anonymous_database.as_ref()) {
            None => None,
            Some(path) => {
                let previous = old_networks.and_then(|n| n.anonymous.as_ref());
                let key = "geoip.anonymous_database";
                Some(open_db(key, path, &["Anonymous-IP"], previous)?)
            }
        };
        let networks =
            (asn.is_some() || anonymous.is_some()).then_some(Networks { asn, anonymous });
        let verifies = std::iter::once(&config.security)
            .chain(config.endpoints.iter().map(|e| &e.security))
            .any(|s| {
                s.bot_detector
                    .as_ref()
                    .is_some_and(|b| !b.verify.bots.is_empty())
            });
        let resolver = match verifies {
            false => None,
            true => Some(
                crate::upstream::discovery::resolver(config.dns.as_ref())
                    .map_err(|m| ConfigErrors::from(ConfigError::new("dns", m)))?,
            ),
        };
        let mut filters = Filters {
            resolver,
            networks,
            client_ip,
            forward_geo: config.geoip.as_ref().is_some_and(|g| g.forward),
            geo,
            service: Chain::default(),
        };
        filters.service = filters.chain("security", &config.security, old_bots, errs);
        Ok(filters)
    }

    /// Compiles one `security` block (at YAML path `path`) on this runtime's GeoIP database.
    pub fn chain(
        &self,
        path: &str,
        sec: &SecurityConfig,
        old_bots: &[&Arc<BotDetector>],
        errs: &mut Vec<ConfigError>,
    ) -> Chain {
        chain(path, sec, self.geo.as_deref(), old_bots, errs)
    }
}

fn chain(
    path: &str,
    sec: &SecurityConfig,
    db: Option<&GeoDb>,
    old_bots: &[&Arc<BotDetector>],
    errs: &mut Vec<ConfigError>,
) -> Chain {
    let ip_filter = sec.ip_filter.as_ref().map(|f| IpFilter {
        dry_run: f.dry_run,
        ..IpFilter::new(f.mode, &f.cidrs)
    });
    let geofence = sec.geofence.as_ref().map(|g| {
        if let Some(db) = db {
            if g.uses_city_data() && !db.city {
                errs.push(ConfigError::new(
                    format!("{path}.geofence"),
                    format!(
                        "regions and cities need a City database; {} is a {} database",
                        db.stamp.path.display(),
                        db.database_type
                    ),
                ));
            }
        }
        Geofence::new(g.clone())
    });
    let bot_detector = sec.bot_detector.as_ref().and_then(|b| {
        if let Some(old) = old_bots.iter().find(|o| o.cfg == *b) {
            return Some(Arc::clone(old));
        }
        match BotDetector::new(b.clone()) {
            Ok(d) => Some(Arc::new(d)),
            Err((sub, msg)) => {
                errs.push(ConfigError::new(format!("{path}.bot_detector.{sub}"), msg));
                None
            }
        }
    });
    Chain {
        ip_filter,
        geofence,
        bot_detector,
    }
}

/// Strips client-sent X-Geo-* headers and, with `geoip.forward`, sets them from the databases
/// (each absent when unknown). The region is ISO 3166-2 (`US-CA`), the city its English name,
/// the ASN a number (`X-Geo-ASN`, from `geoip.asn_database`).
pub fn geo_headers(
    f: &Filters,
    client: Option<IpAddr>,
    upstream: &mut pingora::http::RequestHeader,
) -> pingora::Result<()> {
    for h in GEO_HEADERS {
        upstream.remove_header(h);
    }
    if !f.forward_geo {
        return Ok(());
    }
    let Some(ip) = client else {
        return Ok(());
    };
    asn_header(f, ip, upstream)?;
    let Some(db) = f.geo.as_deref() else {
        return Ok(());
    };
    let Some(g) = db.lookup(ip) else {
        return Ok(());
    };
    let value = |s: &str| http::HeaderValue::from_bytes(s.as_bytes()).ok();
    if let Some(v) = g.country.and_then(value) {
        upstream.insert_header(GEO_HEADERS[0], v)?;
    }
    if let Some((c, sub)) = g.region() {
        let mut r = String::with_capacity(c.len() + 1 + sub.len());
        r.push_str(c);
        r.push('-');
        r.push_str(sub);
        if let Some(v) = value(&r) {
            upstream.insert_header(GEO_HEADERS[1], v)?;
        }
    }
    if let Some(v) = g.city_name.and_then(value) {
        upstream.insert_header(GEO_HEADERS[2], v)?;
    }
    Ok(())
}

/// `X-Geo-ASN`: the client's autonomous system number, from `geoip.asn_database`.
fn asn_header(
    f: &Filters,
    ip: IpAddr,
    upstream: &mut pingora::http::RequestHeader,
) -> pingora::Result<()> {
    let db = f.networks.as_ref().and_then(|n| n.asn.as_deref());
    if let Some((asn, _)) = db.and_then(|db| db.lookup_asn(ip)) {
        upstream.insert_header(GEO_HEADERS[3], asn.to_string())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::runtime::Runtime;

    fn rejected(reason: Reason) -> Result<(), Reject> {
        Err(Reject::new(reason))
    }

    fn cfg(db: &std::path::Path, patterns: &str) -> Config {
        crate::config::parse(&format!(
            r#"
version: 1
server: {{ listen: ["127.0.0.1:0"] }}
geoip: {{ database: "{}" }}
security:
  geofence: {{ deny_countries: [KP] }}
  bot_detector: {{ patterns: [{patterns}] }}
backends:
  a: {{ discovery: {{ static: ["127.0.0.1:9001"] }} }}
endpoints:
  - {{ path: /a, backend: a, security: {{ bot_detector: {{ patterns: ["x"] }} }} }}
"#,
            db.display()
        ))
        .unwrap()
    }

    #[test]
    fn reload_reuses_unchanged_database_and_detectors() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("c.mmdb");
        let fixture = concat!(env!("CARGO_MANIFEST_DIR"), "/geoip-fixtures/countries.mmdb");
        std::fs::copy(fixture, &db).unwrap();
        // The runtime assembles the service-wide filters and each endpoint's chain.
        let compile =
            |patterns: &str, prev: Option<&Runtime>| Runtime::compile(cfg(&db, patterns), prev);
        let first = compile("\"bot\"", None).unwrap();
        let second = compile("\"bot\"", Some(&first)).unwrap();
        assert!(Arc::ptr_eq(
            first.filters.geo.as_ref().unwrap(),
            second.filters.geo.as_ref().unwrap()
        ));
        let b = |rt: &Runtime| rt.filters.service.bot_detector.clone().unwrap();
        assert!(Arc::ptr_eq(&b(&first), &b(&second)));
        // A changed pattern list builds a new detector; the endpoint's is kept.
        let third = compile("\"crawler\"", Some(&second)).unwrap();
        assert!(!Arc::ptr_eq(&b(&second), &b(&third)));
        assert!(Arc::ptr_eq(
            second.endpoints[0].filters.bot_detector.as_ref().unwrap(),
            third.endpoints[0].filters.bot_detector.as_ref().unwrap()
        ));
        // A changed file (size differs) is re-read.
        std::fs::copy(
            concat!(env!("CARGO_MANIFEST_DIR"), "/geoip-fixtures/cities.mmdb"),
            &db,
        )
        .unwrap();
        let fourth = compile("\"crawler\"", Some(&third)).unwrap();
        assert!(!Arc::ptr_eq(
            third.filters.geo.as_ref().unwrap(),
            fourth.filters.geo.as_ref().unwrap()
        ));
        assert!(fourth.filters.geo.as_ref().unwrap().city);
        // A vanished file is a config error naming geoip.database.
        std::fs::remove_file(&db).unwrap();
        let Err(err) = compile("\"crawler\"", Some(&fourth)) else {
            panic!("a vanished database is an error");
        };
        assert_eq!(err.0[0].path, "geoip.database");
    }

    #[test]
    fn chain_order_and_single_geo_lookup() {
        let db = GeoDb::open(std::path::Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/geoip-fixtures/cities.mmdb"
        )))
        .unwrap();
        let chain = Chain {
            ip_filter: Some(IpFilter::new(
                ip::Mode::Deny,
                &[ip::Cidr::parse("175.45.176.0/24").unwrap()],
            )),
            geofence: Some(Geofence::new(geo::GeofenceConfig {
                deny_countries: vec!["KP".into()],
                unknown_allows: true,
                ..Default::default()
            })),
            bot_detector: Some(Arc::new(
                BotDetector::new(bot::BotConfig {
                    allow: vec![],
                    deny: vec![],
                    patterns: vec!["bot".into()],
                    empty_user_agent_is_bot: false,
                    cache_size: 10,
                    dry_run: false,
                    verify: Default::default(),
                })
                .unwrap(),
            )),
        };
        let check = |ip: &str, ua: &str| {
            let mut s = Subject::new(Some(ip.parse().unwrap()), Some(ua.as_bytes()), Some(&db));
            chain.check(&mut s)
        };
        // The cheapest filter that rejects is the one named.
        assert_eq!(check("175.45.176.1", "bot"), rejected(Reason::IpFilter));
        assert_eq!(check("175.45.177.1", "bot"), rejected(Reason::Geofence));
        assert_eq!(check("81.2.69.142", "bot"), rejected(Reason::BotDetector));
        assert_eq!(check("81.2.69.142", "human"), Ok(()));
        assert_eq!(check("10.0.0.1", "human"), Ok(()));

        // One lookup per request: the service-wide check stores the location in the subject,
        // and the endpoint's check reuses it (with the database gone, it would be unknown).
        let kp = Chain {
            geofence: Some(Geofence::new(geo::GeofenceConfig {
                deny_countries: vec!["KP".into()],
                unknown_allows: true,
                ..Default::default()
            })),
            ..Default::default()
        };
        let mut s = Subject::new(Some("81.2.69.142".parse().unwrap()), None, Some(&db));
        assert_eq!(chain.check(&mut s), Ok(()));
        assert_eq!(s.geo.flatten().and_then(|g| g.country), Some("GB"));
        s.db = None;
        assert_eq!(s.geo().and_then(|g| g.country), Some("GB"));
        let mut s = Subject::new(Some("175.45.177.1".parse().unwrap()), None, Some(&db));
        assert_eq!(chain.check(&mut s), rejected(Reason::Geofence));
        s.db = None;
        assert_eq!(kp.check(&mut s), rejected(Reason::Geofence));
        // A chain without a geofence makes no lookup.
        let mut s = Subject::new(Some("81.2.69.142".parse().unwrap()), None, Some(&db));
        assert_eq!(Chain::default().check(&mut s), Ok(()));
        assert!(s.geo.is_none());
    }
}
