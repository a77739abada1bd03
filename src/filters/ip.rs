//! IP address sets and the `ip_filter`.
//!
//! A `CidrSet` holds IPv4 and IPv6 CIDRs as sorted, merged, non-overlapping ranges. Lists of
//! more than `INDEX_MIN` ranges also get an index by the address's top 16 bits (65,537
//! offsets), so a lookup is one index read and a binary search over the few ranges of that
//! /16 bucket: its cost stays flat up to 100,000 CIDRs and beyond. No allocation. IPv4
//! addresses written in IPv4-mapped IPv6 form (`::ffff:a.b.c.d`) are treated as IPv4, both in
//! the list and in lookups.

use std::net::IpAddr;

/// One parsed CIDR (host bits cleared). A bare address is a /32 or /128.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Cidr {
    V4 { addr: u32, prefix: u8 },
    V6 { addr: u128, prefix: u8 },
}

impl Cidr {
    /// Parses `10.0.0.0/8`, `2001:db8::/32`, `192.0.2.7` or `::1`. Host bits below the prefix
    /// are cleared (`10.1.2.3/8` = `10.0.0.0/8`). IPv4-mapped IPv6 CIDRs of /96 or longer
    /// become IPv4 CIDRs.
    pub fn parse(s: &str) -> Result<Cidr, String> {
        let t = s.trim();
        let (ip, prefix) = match t.split_once('/') {
            Some((ip, p)) => {
                let p: u8 = p
                    .parse()
                    .map_err(|_| format!("{s:?}: prefix length {p:?} is not a number"))?;
                (ip, Some(p))
            }
            None => (t, None),
        };
        let ip: IpAddr = ip
            .parse()
            .map_err(|_| format!("{s:?} is not an IP address or CIDR (e.g. 203.0.113.0/24)"))?;
        match ip {
            IpAddr::V4(v4) => {
                let prefix = prefix.unwrap_or(32);
                if prefix > 32 {
                    return Err(format!("{s:?}: an IPv4 prefix is at most /32"));
                }
                Ok(Cidr::V4 {
                    addr: u32::from(v4) & mask32(prefix),
                    prefix,
                })
            }
            IpAddr::V6(v6) => {
                let prefix = prefix.unwrap_or(128);
                if prefix > 128 {
                    return Err(format!("{s:?}: an IPv6 prefix is at most /128"));
                }
                if let (Some(v4), true) = (v6.to_ipv4_mapped(), prefix >= 96) {
                    let p = prefix - 96;
                    return Ok(Cidr::V4 {
                        addr: u32::from(v4) & mask32(p),
                        prefix: p,
                    });
                }
                Ok(Cidr::V6 {
                    addr: u128::from(v6) & mask128(prefix),
                    prefix,
                })
            }
        }
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self, canonical(ip)) {
            (Cidr::V4 { addr, prefix }, IpAddr::V4(v4)) => u32::from(v4) & mask32(*prefix) == *addr,
            (Cidr::V6 { addr, prefix }, IpAddr::V6(v6)) => {
                u128::from(v6) & mask128(*prefix) == *addr
            }
            _ => false,
        }
    }
}

fn mask32(prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix))
    }
}

fn mask128(prefix: u8) -> u128 {
    if prefix == 0 {
        0
    } else {
        u128::MAX << (128 - u32::from(prefix))
    }
}

/// IPv4-mapped IPv6 (`::ffff:1.2.3.4`) becomes IPv4; everything else is unchanged.
#[inline]
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => ip,
        },
        v4 => v4,
    }
}

/// A set of CIDRs as sorted, merged, inclusive ranges.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CidrSet {
    v4: Ranges<u32>,
    v6: Ranges<u128>,
}

/// Lists with more ranges than this get the /16 bucket index (256 KiB).
pub const INDEX_MIN: usize = 256;

/// An address as a number: its top 16 bits choose the index bucket.
trait Key: Ord + Copy {
    fn top16(self) -> usize;
}

impl Key for u32 {
    fn top16(self) -> usize {
        (self >> 16) as usize
    }
}

impl Key for u128 {
    fn top16(self) -> usize {
        (self >> 112) as usize
    }
}

/// Sorted, merged, inclusive ranges, with the optional bucket index.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Ranges<T> {
    ranges: Vec<(T, T)>,
    /// Empty, or `index[b]` = number of ranges whose start's top 16 bits are < b (65,537).
    index: Vec<u32>,
}

impl<T: Key> Ranges<T> {
    fn new(ranges: Vec<(T, T)>) -> Ranges<T> {
        let mut index = Vec::new();
        if ranges.len() > INDEX_MIN {
            index.reserve_exact(65_537);
            let mut i = 0usize;
            for b in 0..=65_536usize {
                while i < ranges.len() && ranges[i].0.top16() < b {
                    i += 1;
                }
                // At most 2^32 ranges: a config cannot hold more.
                index.push(i as u32);
            }
        }
        Ranges { ranges, index }
    }

    #[inline]
    fn contains(&self, x: T) -> bool {
        if self.index.is_empty() {
            return find(&self.ranges, 0, x);
        }
        let b = x.top16();
        let (lo, hi) = (self.index[b] as usize, self.index[b + 1] as usize);
        // Ranges before `lo` start below x's bucket, those from `hi` on above it: the
        // candidate (last range starting at or before x) is in lo..hi or is lo - 1.
        find(&self.ranges[..hi], lo, x)
    }
}

impl CidrSet {
    pub fn new(cidrs: &[Cidr]) -> CidrSet {
        let mut v4 = Vec::new();
        let mut v6 = Vec::new();
        for c in cidrs {
            match *c {
                Cidr::V4 { addr, prefix } => v4.push((addr, addr | !mask32(prefix))),
                Cidr::V6 { addr, prefix } => v6.push((addr, addr | !mask128(prefix))),
            }
        }
        CidrSet {
            v4: Ranges::new(merge(v4, |e| e.checked_add(1))),
            v6: Ranges::new(merge(v6, |e| e.checked_add(1))),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.v4.ranges.is_empty() && self.v6.ranges.is_empty()
    }

    /// Number of merged ranges (for tests and diagnostics).
    pub fn ranges(&self) -> usize {
        self.v4.ranges.len() + self.v6.ranges.len()
    }

    #[inline]
    pub fn contains(&self, ip: IpAddr) -> bool {
        match canonical(ip) {
            IpAddr::V4(v4) => self.v4.contains(u32::from(v4)),
            IpAddr::V6(v6) => self.v6.contains(u128::from(v6)),
        }
    }
}

/// Sorts ranges and merges the overlapping or adjacent ones.
fn merge<T: Ord + Copy>(mut v: Vec<(T, T)>, next: impl Fn(T) -> Option<T>) -> Vec<(T, T)> {
    v.sort_unstable();
    let mut out: Vec<(T, T)> = Vec::with_capacity(v.len());
    for (s, e) in v {
        if let Some(last) = out.last_mut() {
            // Overlapping, or adjacent (last.1 + 1 == s): extend.
            let touches = match next(last.1) {
                Some(n) => s <= n,
                None => true, // last range already ends at the top of the space
            };
            if touches {
                if e > last.1 {
                    last.1 = e;
                }
                continue;
            }
        }
        out.push((s, e));
    }
    out.shrink_to_fit();
    out
}

#[inline]
fn find<T: Ord + Copy>(ranges: &[(T, T)], from: usize, x: T) -> bool {
    // Index of the first range starting after x (searching from `from`, all ranges before it
    // start at or below x); the candidate is the one before it.
    let i = from + ranges[from..].partition_point(|r| r.0 <= x);
    i > 0 && x <= ranges[i - 1].1
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Only addresses in the list pass.
    Allow,
    /// Addresses in the list are rejected.
    Deny,
}

/// `ip_filter: { mode, cidrs }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpFilter {
    pub mode: Mode,
    pub set: CidrSet,
    /// Decide and count, but let the request pass.
    pub dry_run: bool,
}

impl IpFilter {
    pub fn new(mode: Mode, cidrs: &[Cidr]) -> IpFilter {
        IpFilter {
            mode,
            set: CidrSet::new(cidrs),
            dry_run: false,
        }
    }

    /// True when `ip` may pass.
    #[inline]
    pub fn allows(&self, ip: IpAddr) -> bool {
        let listed = self.set.contains(ip);
        match self.mode {
            Mode::Allow => listed,
            Mode::Deny => !listed,
        }
    }
}

/// Parses a list: one CIDR or address per line; blank lines and `#` comments (a whole line or
/// the end of one) are skipped. `name` names the list in errors (`file:line: ...`).
pub fn parse_list(name: &str, text: &str) -> Result<Vec<Cidr>, String> {
    let mut out = Vec::with_capacity(text.len() / 16);
    for (i, line) in text.lines().enumerate() {
        let line = match line.find('#') {
            Some(h) => &line[..h],
            None => line,
        }
        .trim();
        if line.is_empty() {
            continue;
        }
        out.push(Cidr::parse(line).map_err(|m| format!("{name}:{}: {m}", i + 1))?);
    }
    Ok(out)
}

/// Reads and parses a list file (see `parse_list`).
pub fn read_list(path: &std::path::Path) -> Result<Vec<Cidr>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    parse_list(&path.display().to_string(), &text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn set(list: &[&str]) -> CidrSet {
        let c: Vec<Cidr> = list.iter().map(|s| Cidr::parse(s).unwrap()).collect();
        CidrSet::new(&c)
    }

    #[test]
    fn parses_cidrs_and_bare_ips() {
        assert_eq!(
            Cidr::parse("10.1.2.3/8").unwrap(),
            Cidr::V4 {
                addr: 0x0a00_0000,
                prefix: 8
            }
        );
        assert_eq!(
            Cidr::parse("192.0.2.7").unwrap(),
            Cidr::V4 {
                addr: 0xc000_0207,
                prefix: 32
            }
        );
        assert!(matches!(
            Cidr::parse("2001:db8::/32").unwrap(),
            Cidr::V6 { prefix: 32, .. }
        ));
        assert_eq!(
            Cidr::parse("::ffff:192.0.2.0/120").unwrap(),
            Cidr::parse("192.0.2.0/24").unwrap()
        );
        assert!(Cidr::parse("10.0.0.0/33").unwrap_err().contains("/32"));
        assert!(Cidr::parse("::/129").unwrap_err().contains("/128"));
        assert!(Cidr::parse("10.0.0/8").is_err());
        assert!(Cidr::parse("10.0.0.0/x").is_err());
        assert!(Cidr::parse("").is_err());
    }

    #[test]
    fn lookups_v4_v6_and_mapped() {
        let s = set(&["203.0.113.0/24", "10.0.0.0/8", "2001:db8::/32", "192.0.2.1"]);
        assert!(s.contains(ip("203.0.113.9")));
        assert!(s.contains(ip("10.255.255.255")));
        assert!(s.contains(ip("192.0.2.1")));
        assert!(!s.contains(ip("192.0.2.2")));
        assert!(!s.contains(ip("11.0.0.0")));
        assert!(!s.contains(ip("9.255.255.255")));
        assert!(s.contains(ip("2001:db8:ffff::1")));
        assert!(!s.contains(ip("2001:db9::1")));
        // IPv4-mapped IPv6 addresses are looked up as IPv4.
        assert!(s.contains(ip("::ffff:203.0.113.9")));
        assert!(!s.contains(ip("::ffff:8.8.8.8")));
    }

    #[test]
    fn merges_overlaps_and_neighbours() {
        let s = set(&[
            "10.0.0.0/24",
            "10.0.1.0/24",
            "10.0.0.128/25",
            "10.0.3.0/24",
            "0.0.0.0/1",
            "255.255.255.255",
        ]);
        // 0.0.0.0/1 swallows the 10.x ranges; 255.255.255.255 stays alone.
        assert_eq!(s.ranges(), 2);
        assert!(s.contains(ip("127.0.0.1")));
        assert!(!s.contains(ip("128.0.0.0")));
        assert!(s.contains(ip("255.255.255.255")));
        let all = set(&["0.0.0.0/0", "::/0"]);
        assert!(all.contains(ip("1.2.3.4")) && all.contains(ip("::1")));
        let empty = set(&[]);
        assert!(!empty.contains(ip("1.2.3.4")) && empty.is_empty());
    }

    #[test]
    fn agrees_with_a_linear_scan() {
        let mut cidrs = Vec::new();
        let mut rng = fastrand::Rng::with_seed(7);
        for _ in 0..2000 {
            let prefix = rng.u8(12..=32);
            let addr = rng.u32(..) & mask32(prefix);
            cidrs.push(Cidr::V4 { addr, prefix });
        }
        for _ in 0..600 {
            let prefix = rng.u8(8..=64);
            let addr = rng.u128(..) & mask128(prefix);
            cidrs.push(Cidr::V6 { addr, prefix });
        }
        let s = CidrSet::new(&cidrs);
        assert!(!s.v4.index.is_empty() && !s.v6.index.is_empty());
        let mut probes: Vec<IpAddr> = Vec::new();
        for _ in 0..5000 {
            probes.push(IpAddr::V4(Ipv4Addr::from(rng.u32(..))));
            probes.push(IpAddr::V6(Ipv6Addr::from(rng.u128(..))));
        }
        // Edges of every listed range, and just outside them.
        for c in &cidrs {
            match *c {
                Cidr::V4 { addr, prefix } => {
                    let end = addr | !mask32(prefix);
                    for a in [addr.wrapping_sub(1), addr, end, end.wrapping_add(1)] {
                        probes.push(IpAddr::V4(Ipv4Addr::from(a)));
                    }
                }
                Cidr::V6 { addr, prefix } => {
                    let end = addr | !mask128(prefix);
                    for a in [addr.wrapping_sub(1), addr, end, end.wrapping_add(1)] {
                        probes.push(IpAddr::V6(Ipv6Addr::from(a)));
                    }
                }
            }
        }
        for a in probes {
            let linear = cidrs.iter().any(|c| c.contains(a));
            assert_eq!(s.contains(a), linear, "{a}");
        }
    }

    #[test]
    fn filter_modes() {
        let c = [Cidr::parse("203.0.113.0/24").unwrap()];
        let deny = IpFilter::new(Mode::Deny, &c);
        let allow = IpFilter::new(Mode::Allow, &c);
        assert!(!deny.allows(ip("203.0.113.5")) && deny.allows(ip("198.51.100.1")));
        assert!(allow.allows(ip("203.0.113.5")) && !allow.allows(ip("198.51.100.1")));
    }
}
