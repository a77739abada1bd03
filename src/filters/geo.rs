//! GeoIP: the MaxMind database (GeoIP2/GeoLite2, Country or City layout) and the geofence.
//!
//! The database is read into memory once (`#![forbid(unsafe_code)]` rules out mapping it:
//! `Reader::open_mmap` is `unsafe` because a file truncated under a mapping is undefined
//! behaviour, which is also what a careless database update would do). It is verified when
//! loaded and re-read on reload only when its path, size or mtime changed.
//!
//! A lookup decodes only the fields the geofence needs, borrowed from the database: the
//! country ISO code (or the registered country's), up to two subdivision ISO codes, the
//! city's English name and GeoNames id. No allocation.

use serde::de::{Deserializer, SeqAccess, Visitor};
use serde::Deserialize;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// Identity of a database file: it is re-read only when this changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileStamp {
    pub path: PathBuf,
    pub len: u64,
    pub mtime: Option<SystemTime>,
}

impl FileStamp {
    pub fn of(path: &Path) -> Result<FileStamp, String> {
        let m = std::fs::metadata(path)
            .map_err(|e| format!("cannot read GeoIP database {}: {e}", path.display()))?;
        if !m.is_file() {
            return Err(format!("GeoIP database {} is not a file", path.display()));
        }
        Ok(FileStamp {
            path: path.to_path_buf(),
            len: m.len(),
            mtime: m.modified().ok(),
        })
    }
}

pub struct GeoDb {
    reader: maxminddb::Reader<Vec<u8>>,
    pub stamp: FileStamp,
    /// City layout (regions and cities available), not just Country.
    pub city: bool,
    pub database_type: String,
}

impl std::fmt::Debug for GeoDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GeoDb")
            .field("stamp", &self.stamp)
            .field("database_type", &self.database_type)
            .finish()
    }
}

/// What the database says about one address. Strings borrow from the database.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Geo<'a> {
    /// ISO 3166-1 alpha-2, e.g. `DE`.
    pub country: Option<&'a str>,
    /// Subdivision ISO codes without the country, most general first (`CA` for US-CA).
    pub subdivisions: [Option<&'a str>; 2],
    pub city_name: Option<&'a str>,
    pub city_id: Option<u32>,
}

impl<'a> Geo<'a> {
    /// First subdivision as ISO 3166-2 parts (`("US", "CA")`).
    pub fn region(&self) -> Option<(&'a str, &'a str)> {
        Some((self.country?, self.subdivisions[0]?))
    }
}

#[derive(Deserialize)]
struct Rec<'a> {
    #[serde(borrow, default)]
    country: Option<Iso<'a>>,
    #[serde(borrow, default)]
    registered_country: Option<Iso<'a>>,
    #[serde(borrow, default)]
    subdivisions: Subs<'a>,
    #[serde(borrow, default)]
    city: Option<CityRec<'a>>,
}

#[derive(Deserialize)]
struct Iso<'a> {
    #[serde(borrow, default)]
    iso_code: Option<&'a str>,
}

#[derive(Deserialize)]
struct CityRec<'a> {
    #[serde(default)]
    geoname_id: Option<u32>,
    #[serde(borrow, default)]
    names: Option<EnName<'a>>,
}

#[derive(Deserialize)]
struct EnName<'a> {
    #[serde(borrow, default)]
    en: Option<&'a str>,
}

/// Up to two subdivisions, decoded without a Vec.
#[derive(Default)]
struct Subs<'a>([Option<&'a str>; 2]);

impl<'de: 'a, 'a> Deserialize<'de> for Subs<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Subs<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a list of subdivisions")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Subs<'a>, A::Error> {
                let mut out = [None, None];
                let mut i = 0;
                while let Some(s) = seq.next_element::<Iso<'de>>()? {
                    if i < 2 {
                        out[i] = s.iso_code;
                    }
                    i += 1;
                }
                Ok(Subs(out))
            }
        }
        d.deserialize_seq(V(std::marker::PhantomData))
    }
}

impl GeoDb {
    /// Reads and verifies the database at `path`.
    pub fn open(path: &Path) -> Result<GeoDb, String> {
        let stamp = FileStamp::of(path)?;
        let buf = std::fs::read(path)
            .map_err(|e| format!("cannot read GeoIP database {}: {e}", path.display()))?;
        let reader = maxminddb::Reader::from_source(buf)
            .map_err(|e| format!("{} is not a MaxMind DB (.mmdb) file: {e}", path.display()))?;
        reader
            .verify()
            .map_err(|e| format!("GeoIP database {} is corrupt: {e}", path.display()))?;
        let database_type = reader.metadata().database_type.clone();
        let city = database_type.contains("City") || database_type.contains("Enterprise");
        Ok(GeoDb {
            reader,
            stamp,
            city,
            database_type,
        })
    }

    /// The autonomous system of an address (GeoLite2-ASN layout): number and organization.
    #[inline]
    pub fn lookup_asn(&self, ip: IpAddr) -> Option<(u32, Option<&str>)> {
        let ip = super::ip::canonical(ip);
        let rec: AsnRec<'_> = self.reader.lookup(ip).ok()?.decode().ok()??;
        Some((
            rec.autonomous_system_number?,
            rec.autonomous_system_organization,
        ))
    }

    /// The anonymous-network kinds of an address (GeoIP2-Anonymous-IP layout), as the bits
    /// of `anonymous_kind`; 0 when the database does not list it.
    #[inline]
    pub fn lookup_anonymous(&self, ip: IpAddr) -> u8 {
        let ip = super::ip::canonical(ip);
        let Some(rec) = self
            .reader
            .lookup(ip)
            .ok()
            .and_then(|r| r.decode::<AnonRec>().ok().flatten())
        else {
            return 0;
        };
        let mut bits = 0;
        for (on, bit) in [
            (rec.is_anonymous_vpn, ANON_VPN),
            (rec.is_tor_exit_node, ANON_TOR),
            (rec.is_hosting_provider, ANON_HOSTING),
            (rec.is_public_proxy, ANON_PUBLIC_PROXY),
            (rec.is_residential_proxy, ANON_RESIDENTIAL_PROXY),
        ] {
            if on {
                bits |= bit | ANON_ANY;
            }
        }
        if rec.is_anonymous {
            bits |= ANON_ANY;
        }
        bits
    }

    /// Looks an address up; `None` when the database does not know it (or knows no country).
    #[inline]
    pub fn lookup(&self, ip: IpAddr) -> Option<Geo<'_>> {
        let ip = super::ip::canonical(ip);
        let res = self.reader.lookup(ip).ok()?;
        let rec: Rec<'_> = res.decode().ok()??;
        let country = rec
            .country
            .and_then(|c| c.iso_code)
            .or_else(|| rec.registered_country.and_then(|c| c.iso_code))?;
        let (city_name, city_id) = match rec.city {
            Some(c) => (c.names.and_then(|n| n.en), c.geoname_id),
            None => (None, None),
        };
        Some(Geo {
            country: Some(country),
            subdivisions: rec.subdivisions.0,
            city_name,
            city_id,
        })
    }
}

#[derive(Deserialize)]
struct AsnRec<'a> {
    #[serde(default)]
    autonomous_system_number: Option<u32>,
    #[serde(borrow, default)]
    autonomous_system_organization: Option<&'a str>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct AnonRec {
    is_anonymous: bool,
    is_anonymous_vpn: bool,
    is_tor_exit_node: bool,
    is_hosting_provider: bool,
    is_public_proxy: bool,
    is_residential_proxy: bool,
}

/// A city in `allow_cities`/`deny_cities`: a GeoNames id or an English name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CityRef {
    Id(u32),
    Name(String),
}

impl CityRef {
    pub fn parse(s: &str) -> CityRef {
        match s.trim().parse::<u32>() {
            Ok(id) => CityRef::Id(id),
            Err(_) => CityRef::Name(s.trim().to_string()),
        }
    }

    fn matches(&self, g: &Geo<'_>) -> bool {
        match self {
            CityRef::Id(id) => g.city_id == Some(*id),
            CityRef::Name(n) => g.city_name.is_some_and(|c| c.eq_ignore_ascii_case(n)),
        }
    }
}

/// The geofence's validated settings. Country codes are upper case, regions `CC-SUB`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GeofenceConfig {
    pub allow_countries: Vec<String>,
    pub deny_countries: Vec<String>,
    pub allow_regions: Vec<String>,
    pub deny_regions: Vec<String>,
    pub allow_cities: Vec<CityRef>,
    pub deny_cities: Vec<CityRef>,
    /// Decision for addresses the database does not know: true = allow.
    pub unknown_allows: bool,
    /// Autonomous systems (numbers) from the ASN database.
    pub allow_asns: Vec<u32>,
    pub deny_asns: Vec<u32>,
    /// The kinds of anonymous network refused (bits of `anonymous_kind`).
    pub deny_anonymous: u8,
    /// Decide and count, but let the request pass.
    pub dry_run: bool,
}

impl GeofenceConfig {
    /// Whether it has rules on the location (countries, regions, cities).
    pub fn has_location_rules(&self) -> bool {
        !self.allow_countries.is_empty() || !self.deny_countries.is_empty() || self.uses_city_data()
    }

    /// Whether it has ASN or anonymous-network rules.
    pub fn has_network_rules(&self) -> bool {
        !(self.allow_asns.is_empty() && self.deny_asns.is_empty()) || self.deny_anonymous != 0
    }

    pub fn uses_city_data(&self) -> bool {
        !(self.allow_regions.is_empty()
            && self.deny_regions.is_empty()
            && self.allow_cities.is_empty()
            && self.deny_cities.is_empty())
    }

    fn has_allow(&self) -> bool {
        !(self.allow_countries.is_empty()
            && self.allow_regions.is_empty()
            && self.allow_cities.is_empty())
    }
}

fn region_matches(list: &[String], g: &Geo<'_>) -> bool {
    let Some(country) = g.country else {
        return false;
    };
    g.subdivisions.iter().flatten().any(|sub| {
        list.iter().any(|r| {
            r.len() == country.len() + 1 + sub.len()
                && r.starts_with(country)
                && r.as_bytes()[country.len()] == b'-'
                && r[country.len() + 1..].eq_ignore_ascii_case(sub)
        })
    })
}

fn country_in(list: &[String], g: &Geo<'_>) -> bool {
    g.country
        .is_some_and(|c| list.iter().any(|x| x.eq_ignore_ascii_case(c)))
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Geofence {
    pub cfg: GeofenceConfig,
    /// The location is looked up: the geofence has location rules, or no network rule (a
    /// geofence of `unknown` alone decides on the location database).
    pub location: bool,
    /// The ASN and anonymous-network databases are looked up.
    pub network: bool,
}

/// Kinds of anonymous network in `deny_anonymous`, as bits.
pub const ANON_VPN: u8 = 1;
pub const ANON_TOR: u8 = 2;
pub const ANON_HOSTING: u8 = 4;
pub const ANON_PUBLIC_PROXY: u8 = 8;
pub const ANON_RESIDENTIAL_PROXY: u8 = 16;
/// `is_anonymous`: any of the kinds the database knows.
pub const ANON_ANY: u8 = 32;

/// The bit of a `deny_anonymous` entry.
pub fn anonymous_kind(s: &str) -> Option<u8> {
    Some(match s {
        "vpn" => ANON_VPN,
        "tor" => ANON_TOR,
        "hosting" => ANON_HOSTING,
        "public_proxy" => ANON_PUBLIC_PROXY,
        "residential_proxy" => ANON_RESIDENTIAL_PROXY,
        "any" => ANON_ANY,
        _ => return None,
    })
}

impl Geofence {
    pub fn new(cfg: GeofenceConfig) -> Geofence {
        let network = cfg.has_network_rules();
        Geofence {
            location: cfg.has_location_rules() || !network,
            network,
            cfg,
        }
    }

    /// True when a client in autonomous system `asn` (None = unknown to the ASN database),
    /// on a network of the anonymous kinds `anonymous` (bits; 0 = none known), may pass. A
    /// denied ASN or kind rejects; with `allow_asns`, the ASN must be listed (an unknown one
    /// is decided by `unknown`).
    pub fn allows_network(&self, asn: Option<u32>, anonymous: u8) -> bool {
        let c = &self.cfg;
        if anonymous & c.deny_anonymous != 0 {
            return false;
        }
        match asn {
            Some(a) => {
                !c.deny_asns.contains(&a) && (c.allow_asns.is_empty() || c.allow_asns.contains(&a))
            }
            None => c.allow_asns.is_empty() || c.unknown_allows,
        }
    }

    /// True when a client at `geo` (None = unknown to the database) may pass.
    ///
    /// A deny match (country, region or city) always rejects. Then, when any allow list is
    /// set, the client must match at least one of them (they add up: `allow_countries: [DE]`
    /// with `allow_cities: [London]` admits Germany and London).
    pub fn allows(&self, geo: Option<&Geo<'_>>) -> bool {
        let c = &self.cfg;
        let Some(g) = geo else {
            return c.unknown_allows;
        };
        if country_in(&c.deny_countries, g)
            || region_matches(&c.deny_regions, g)
            || c.deny_cities.iter().any(|x| x.matches(g))
        {
            return false;
        }
        if !c.has_allow() {
            return true;
        }
        country_in(&c.allow_countries, g)
            || region_matches(&c.allow_regions, g)
            || c.allow_cities.iter().any(|x| x.matches(g))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("geoip-fixtures")
            .join(name)
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn country_database() {
        let db = GeoDb::open(&fixture("countries.mmdb")).unwrap();
        assert!(!db.city);
        assert_eq!(db.lookup(ip("81.2.69.142")).unwrap().country, Some("GB"));
        assert_eq!(db.lookup(ip("2a02:ff0::7")).unwrap().country, Some("DE"));
        assert_eq!(
            db.lookup(ip("::ffff:81.2.69.142")).unwrap().country,
            Some("GB")
        );
        assert_eq!(db.lookup(ip("10.1.2.3")), None);
        assert_eq!(db.lookup(ip("127.0.0.1")), None);
        assert_eq!(db.lookup(ip("2001:db8::1")), None);
    }

    #[test]
    fn city_database() {
        let db = GeoDb::open(&fixture("cities.mmdb")).unwrap();
        assert!(db.city);
        let g = db.lookup(ip("216.160.83.56")).unwrap();
        assert_eq!(g.country, Some("US"));
        assert_eq!(g.region(), Some(("US", "WA")));
        assert_eq!(g.city_name, Some("Milton"));
        assert_eq!(g.city_id, Some(5803556));
    }

    #[test]
    fn missing_and_corrupt_databases_are_errors() {
        let err = GeoDb::open(Path::new("/nonexistent/x.mmdb")).unwrap_err();
        assert!(err.contains("cannot read GeoIP database"), "{err}");
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("bad.mmdb");
        std::fs::write(&p, b"this is not a database").unwrap();
        let err = GeoDb::open(&p).unwrap_err();
        assert!(err.contains("is not a MaxMind DB"), "{err}");
        // A real database cut short: metadata gone.
        let good = std::fs::read(fixture("countries.mmdb")).unwrap();
        std::fs::write(&p, &good[..good.len() / 2]).unwrap();
        assert!(GeoDb::open(&p).is_err());
    }

    fn geo<'a>(country: &'a str, sub: Option<&'a str>, city: Option<&'a str>, id: u32) -> Geo<'a> {
        Geo {
            country: Some(country),
            subdivisions: [sub, None],
            city_name: city,
            city_id: Some(id),
        }
    }

    #[test]
    fn geofence_rules() {
        let deny_kp = Geofence::new(GeofenceConfig {
            deny_countries: vec!["KP".into()],
            unknown_allows: true,
            ..Default::default()
        });
        assert!(!deny_kp.allows(Some(&geo("KP", None, None, 1))));
        assert!(deny_kp.allows(Some(&geo("DE", None, None, 1))));
        assert!(deny_kp.allows(None));

        let f = Geofence::new(GeofenceConfig {
            allow_countries: vec!["DE".into()],
            allow_cities: vec![CityRef::Name("london".into())],
            deny_regions: vec!["DE-BY".into()],
            deny_cities: vec![CityRef::Id(2950159)],
            unknown_allows: false,
            ..Default::default()
        });
        assert!(f.allows(Some(&geo("DE", Some("HE"), Some("Frankfurt"), 1))));
        assert!(!f.allows(Some(&geo("DE", Some("BY"), Some("Munich"), 2))));
        assert!(!f.allows(Some(&geo("DE", Some("BE"), Some("Berlin"), 2950159))));
        assert!(f.allows(Some(&geo("GB", Some("ENG"), Some("London"), 3))));
        assert!(!f.allows(Some(&geo("GB", Some("ENG"), Some("Leeds"), 4))));
        assert!(!f.allows(Some(&geo("US", Some("CA"), None, 5))));
        assert!(!f.allows(None));

        let regions = Geofence::new(GeofenceConfig {
            allow_regions: vec!["US-CA".into()],
            ..Default::default()
        });
        assert!(regions.allows(Some(&geo("US", Some("CA"), None, 1))));
        assert!(!regions.allows(Some(&geo("US", Some("WA"), None, 1))));
        // CA is also Canada's code: the country part must match.
        assert!(!regions.allows(Some(&geo("CA", Some("CA"), None, 1))));
    }

    #[test]
    fn asn_and_anonymous_lookups_and_decisions() {
        let asn = GeoDb::open(&fixture("asn.mmdb")).unwrap();
        let anon = GeoDb::open(&fixture("anonymous.mmdb")).unwrap();
        assert_eq!(
            asn.lookup_asn(ip("81.2.69.142")),
            Some((20712, Some("Andrews & Arnold Ltd")))
        );
        assert_eq!(
            asn.lookup_asn(ip("::ffff:1.128.0.1")).map(|a| a.0),
            Some(1221)
        );
        assert_eq!(asn.lookup_asn(ip("10.0.0.1")), None);
        assert_eq!(
            anon.lookup_anonymous(ip("89.160.20.1")),
            ANON_TOR | ANON_ANY
        );
        assert_eq!(
            anon.lookup_anonymous(ip("2a02:ff0::1")),
            ANON_RESIDENTIAL_PROXY | ANON_ANY
        );
        assert_eq!(anon.lookup_anonymous(ip("10.0.0.1")), 0);

        let fence = Geofence::new(GeofenceConfig {
            allow_asns: vec![209],
            deny_asns: vec![209],
            deny_anonymous: ANON_VPN,
            unknown_allows: false,
            ..Default::default()
        });
        assert!(fence.network && !fence.location, "no location rule");
        assert!(!fence.allows_network(Some(209), 0), "a deny wins");
        let fence = Geofence::new(GeofenceConfig {
            allow_asns: vec![209],
            deny_anonymous: ANON_VPN,
            unknown_allows: true,
            ..Default::default()
        });
        assert!(fence.allows_network(Some(209), ANON_HOSTING | ANON_ANY));
        assert!(!fence.allows_network(Some(209), ANON_VPN | ANON_ANY));
        assert!(!fence.allows_network(Some(1), 0));
        assert!(
            fence.allows_network(None, 0),
            "unknown: allow (the default)"
        );
        let plain = Geofence::new(GeofenceConfig::default());
        assert!(plain.location && !plain.network);
    }
}
