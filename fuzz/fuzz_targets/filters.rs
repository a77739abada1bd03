//! Client address resolution and CIDR parsing: never a panic; the resolved client is the
//! peer or an address written in the forwarding header; a parsed CIDR contains its own
//! network address.
#![no_main]

use gatehouse::filters::client_ip::{parse_forwarded_ip, ClientIpResolver};
use gatehouse::filters::ip::{Cidr, CidrSet};
use libfuzzer_sys::fuzz_target;
use std::net::IpAddr;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(c) = Cidr::parse(&text) {
        let net: IpAddr = match c {
            Cidr::V4 { addr, .. } => IpAddr::V4(addr.into()),
            Cidr::V6 { addr, .. } => IpAddr::V6(addr.into()),
        };
        assert!(c.contains(net));
        assert!(CidrSet::new(&[c]).contains(net));
    }
    let trusted = CidrSet::new(&[
        Cidr::parse("127.0.0.0/8").unwrap(),
        Cidr::parse("10.0.0.0/8").unwrap(),
    ]);
    let r = ClientIpResolver::new(
        trusted,
        vec![http::HeaderName::from_static("x-forwarded-for")],
    );
    let Ok(value) = http::HeaderValue::from_bytes(data) else {
        return;
    };
    let mut h = http::HeaderMap::new();
    h.insert("x-forwarded-for", value);
    let peer: IpAddr = "127.0.0.1".parse().unwrap();
    let client = r.resolve(peer, &h);
    let listed = text
        .split(',')
        .filter_map(|s| parse_forwarded_ip(s.trim()))
        .any(|ip| ip == client);
    assert!(client == peer || listed, "{client} from {text:?}");
});
