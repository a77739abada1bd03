//! Writes ../countries.mmdb (GeoLite2-Country layout), ../cities.mmdb (GeoLite2-City
//! layout), ../asn.mmdb (GeoLite2-ASN layout) and ../anonymous.mmdb (GeoIP2-Anonymous-IP
//! layout) from the tables below, then reads each back with the `maxminddb` crate as a check.
//!
//! The networks are real public allocations in the countries given (several are the ones
//! MaxMind's own test databases use), but the records are made up for tests: do not use these
//! files for anything else. Private and reserved ranges are left out (unknown), as in
//! MaxMind's databases.

use ipnet::IpNet;
use mmdb_writer::{ReservedNetworks, Writer};
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::{Duration, UNIX_EPOCH};

/// network, continent, country ISO, country name, subdivision (ISO, name), city (name, GeoNames id)
type Row = (
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    Option<(&'static str, &'static str)>,
    Option<(&'static str, u32)>,
);

const ROWS: &[Row] = &[
    ("81.2.69.0/24", "EU", "GB", "United Kingdom", Some(("ENG", "England")), Some(("London", 2643743))),
    ("216.160.83.0/24", "NA", "US", "United States", Some(("WA", "Washington")), Some(("Milton", 5803556))),
    ("89.160.20.0/24", "EU", "SE", "Sweden", Some(("E", "Östergötland County")), Some(("Linköping", 2694762))),
    ("175.16.199.0/24", "AS", "CN", "China", Some(("22", "Jilin Sheng")), Some(("Changchun", 2038180))),
    ("175.45.176.0/22", "AS", "KP", "North Korea", Some(("01", "Pyongyang")), Some(("Pyongyang", 1871859))),
    ("1.128.0.0/11", "OC", "AU", "Australia", None, None),
    ("2a02:ff0::/32", "EU", "DE", "Germany", Some(("HE", "Hesse")), Some(("Frankfurt am Main", 2925533))),
    ("2001:480::/32", "NA", "US", "United States", Some(("CA", "California")), Some(("San Diego", 5391811))),
    ("2001:218::/32", "AS", "JP", "Japan", Some(("13", "Tokyo")), Some(("Tokyo", 1850147))),
    ("2a03:2880::/32", "EU", "IE", "Ireland", Some(("L", "Leinster")), Some(("Dublin", 2964574))),
];

/// network, autonomous system number, organization
const ASNS: &[(&str, u32, &str)] = &[
    ("1.128.0.0/11", 1221, "Telstra Pty Ltd"),
    ("81.2.69.0/24", 20712, "Andrews & Arnold Ltd"),
    ("89.160.20.0/24", 29518, "Bredband2 AB"),
    ("216.160.83.0/24", 209, "CenturyLink Communications"),
    ("2a02:ff0::/32", 3320, "Deutsche Telekom AG"),
];

/// network, and which of vpn, tor, hosting, public_proxy, residential_proxy it is
const ANONYMOUS: &[(&str, [bool; 5])] = &[
    ("81.2.69.0/24", [true, false, false, false, false]),
    ("89.160.20.0/24", [false, true, false, false, false]),
    ("216.160.83.0/24", [false, false, true, false, false]),
    ("175.16.199.0/24", [false, false, false, true, false]),
    ("2a02:ff0::/32", [false, false, false, false, true]),
];

#[derive(Serialize)]
struct AsnRec {
    autonomous_system_number: u32,
    autonomous_system_organization: &'static str,
}

/// The GeoIP2-Anonymous-IP record: a flag is present only when true, as in MaxMind's files.
#[derive(Serialize)]
struct AnonymousRec {
    is_anonymous: bool,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    is_anonymous_vpn: bool,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    is_tor_exit_node: bool,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    is_hosting_provider: bool,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    is_public_proxy: bool,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    is_residential_proxy: bool,
}

#[derive(Serialize)]
struct Named {
    #[serde(skip_serializing_if = "Option::is_none")]
    code: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    iso_code: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    geoname_id: Option<u32>,
    names: BTreeMap<&'static str, &'static str>,
}

fn en(name: &'static str) -> BTreeMap<&'static str, &'static str> {
    [("en", name)].into()
}

#[derive(Serialize)]
struct CountryRec {
    continent: Named,
    country: Named,
    registered_country: Named,
}

#[derive(Serialize)]
struct CityRec {
    continent: Named,
    country: Named,
    registered_country: Named,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    subdivisions: Vec<Named>,
    #[serde(skip_serializing_if = "Option::is_none")]
    city: Option<Named>,
}

fn country(iso: &'static str, name: &'static str) -> Named {
    Named { code: None, iso_code: Some(iso), geoname_id: None, names: en(name) }
}

fn continent(code: &'static str) -> Named {
    Named { code: Some(code), iso_code: None, geoname_id: None, names: en(code) }
}

fn writer(kind: &str) -> Writer {
    Writer::builder(kind)
        .reserved_networks(ReservedNetworks::Excluded)
        .build_epoch(UNIX_EPOCH + Duration::from_secs(1_767_225_600)) // 2026-01-01, reproducible
        .description(&[("en", "gatehouse test fixture, made-up records")])
        .build()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut countries = writer("GeoLite2-Country");
    let mut cities = writer("GeoLite2-City");
    for &(net, cont, iso, cname, sub, city) in ROWS {
        let net: IpNet = net.parse()?;
        countries.insert(
            net,
            &CountryRec {
                continent: continent(cont),
                country: country(iso, cname),
                registered_country: country(iso, cname),
            },
        )?;
        cities.insert(
            net,
            &CityRec {
                continent: continent(cont),
                country: country(iso, cname),
                registered_country: country(iso, cname),
                subdivisions: sub
                    .map(|(code, name)| vec![Named { code: None, iso_code: Some(code), geoname_id: None, names: en(name) }])
                    .unwrap_or_default(),
                city: city.map(|(name, id)| Named { code: None, iso_code: None, geoname_id: Some(id), names: en(name) }),
            },
        )?;
    }
    for (w, file) in [(&countries, "countries.mmdb"), (&cities, "cities.mmdb")] {
        let path = out.join(file);
        std::fs::write(&path, w.to_bytes()?)?;
        let r = maxminddb::Reader::open_readfile(&path)?;
        r.verify()?;
        for &(net, _, iso, ..) in ROWS {
            let net: IpNet = net.parse()?;
            let got: Option<String> = r
                .lookup(net.addr())?
                .decode_path(&maxminddb::path!["country", "iso_code"])?;
            assert_eq!(got.as_deref(), Some(iso), "{file}: {net}");
        }
        println!("wrote {} ({} networks, {})", path.display(), ROWS.len(), r.metadata().database_type);
    }
    let mut asn = writer("GeoLite2-ASN");
    for &(net, number, org) in ASNS {
        let rec = AsnRec { autonomous_system_number: number, autonomous_system_organization: org };
        asn.insert(net.parse::<IpNet>()?, &rec)?;
    }
    let path = out.join("asn.mmdb");
    std::fs::write(&path, asn.to_bytes()?)?;
    let r = maxminddb::Reader::open_readfile(&path)?;
    r.verify()?;
    for &(net, number, _) in ASNS {
        let net: IpNet = net.parse()?;
        let got: Option<u32> =
            r.lookup(net.addr())?.decode_path(&maxminddb::path!["autonomous_system_number"])?;
        assert_eq!(got, Some(number), "asn.mmdb: {net}");
    }
    println!("wrote {} ({} networks, {})", path.display(), ASNS.len(), r.metadata().database_type);

    let mut anonymous = writer("GeoIP2-Anonymous-IP");
    for &(net, [vpn, tor, hosting, public_proxy, residential_proxy]) in ANONYMOUS {
        let rec = AnonymousRec {
            is_anonymous: true,
            is_anonymous_vpn: vpn,
            is_tor_exit_node: tor,
            is_hosting_provider: hosting,
            is_public_proxy: public_proxy,
            is_residential_proxy: residential_proxy,
        };
        anonymous.insert(net.parse::<IpNet>()?, &rec)?;
    }
    let path = out.join("anonymous.mmdb");
    std::fs::write(&path, anonymous.to_bytes()?)?;
    let r = maxminddb::Reader::open_readfile(&path)?;
    r.verify()?;
    for &(net, [_, tor, ..]) in ANONYMOUS {
        let net: IpNet = net.parse()?;
        let got: Option<bool> =
            r.lookup(net.addr())?.decode_path(&maxminddb::path!["is_tor_exit_node"])?;
        assert_eq!(got.unwrap_or(false), tor, "anonymous.mmdb: {net}");
    }
    println!("wrote {} ({} networks, {})", path.display(), ANONYMOUS.len(), r.metadata().database_type);
    Ok(())
}
