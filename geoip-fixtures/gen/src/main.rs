//! Writes ../countries.mmdb (GeoLite2-Country layout) and ../cities.mmdb (GeoLite2-City
//! layout) from the table below, then reads both back with the `maxminddb` crate as a check.
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
    Ok(())
}
