//! Hot-path costs of the request filters: each filter alone and the whole chain.
//! Run: `cargo bench --bench filters`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test may panic on what it did not expect

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use gatehouse::filters::bot::{sample_patterns, BotConfig, BotDetector};
use gatehouse::filters::client_ip::ClientIpResolver;
use gatehouse::filters::geo::{GeoDb, Geofence, GeofenceConfig};
use gatehouse::filters::ip::{parse_list, Cidr, CidrSet, IpFilter, Mode};
use gatehouse::filters::{Chain, Subject};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

fn random_cidrs(n: usize, rng: &mut fastrand::Rng) -> Vec<Cidr> {
    (0..n)
        .map(|i| {
            if i % 10 == 9 {
                let prefix = rng.u8(32..=64);
                let addr = rng.u128(..) & (u128::MAX << (128 - u32::from(prefix)));
                Cidr::V6 { addr, prefix }
            } else {
                let prefix = rng.u8(16..=32);
                let addr = rng.u32(..) & (u32::MAX << (32 - u32::from(prefix)));
                Cidr::V4 { addr, prefix }
            }
        })
        .collect()
}

/// A list file's text: one CIDR per line, as `random_cidrs` makes them.
fn list_text(cidrs: &[Cidr]) -> String {
    let mut s = String::with_capacity(cidrs.len() * 20);
    for c in cidrs {
        let line = match *c {
            Cidr::V4 { addr, prefix } => format!("{}/{prefix}\n", Ipv4Addr::from(addr)),
            Cidr::V6 { addr, prefix } => format!("{}/{prefix}\n", Ipv6Addr::from(addr)),
        };
        s.push_str(&line);
    }
    s
}

fn probes(rng: &mut fastrand::Rng) -> Vec<IpAddr> {
    (0..1024)
        .map(|i| {
            if i % 10 == 9 {
                IpAddr::V6(Ipv6Addr::from(rng.u128(..)))
            } else {
                IpAddr::V4(Ipv4Addr::from(rng.u32(..)))
            }
        })
        .collect()
}

fn bot(cache_size: usize) -> BotDetector {
    BotDetector::new(BotConfig {
        allow: vec!["HealthChecker/1.0".into()],
        deny: vec!["BadBot/2.0".into()],
        patterns: sample_patterns(1500),
        empty_user_agent_is_bot: true,
        cache_size,
        dry_run: false,
        verify: Default::default(),
    })
    .expect("patterns compile")
}

const BROWSER: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36";

fn bench(c: &mut Criterion) {
    let mut rng = fastrand::Rng::with_seed(42);
    let ips = probes(&mut rng);

    for n in [1_000usize, 100_000] {
        let filter = IpFilter::new(Mode::Deny, &random_cidrs(n, &mut rng));
        let mut i = 0usize;
        c.bench_function(&format!("ip_filter lookup ({n} CIDRs)"), |b| {
            b.iter(|| {
                i = (i + 1) & 1023;
                black_box(filter.allows(black_box(ips[i])))
            })
        });
    }

    let trusted = CidrSet::new(&[Cidr::parse("10.0.0.0/8").unwrap()]);
    let resolver = ClientIpResolver::new(
        trusted,
        vec![http::HeaderName::from_static("x-forwarded-for")],
    );
    let mut headers = http::HeaderMap::new();
    headers.insert(
        "x-forwarded-for",
        "198.51.100.1, 81.2.69.142, 10.0.0.7".parse().unwrap(),
    );
    let peer: IpAddr = "10.0.0.2".parse().unwrap();
    c.bench_function("client_ip resolve (trusted peer, 3-hop XFF)", |b| {
        b.iter(|| black_box(resolver.resolve(black_box(peer), &headers)))
    });

    let warm = bot(10_000);
    warm.is_bot(Some(BROWSER.as_bytes()));
    c.bench_function("bot_detector 1500 patterns, warm cache", |b| {
        b.iter(|| black_box(warm.is_bot(black_box(Some(BROWSER.as_bytes())))))
    });
    let cold = bot(0);
    c.bench_function(
        "bot_detector 1500 patterns, cold (no cache, no match)",
        |b| b.iter(|| black_box(cold.is_bot(black_box(Some(BROWSER.as_bytes()))))),
    );
    let crawler = "Mozilla/5.0 (compatible; zetabot99; +http://zeta.example/bot)";
    c.bench_function("bot_detector 1500 patterns, cold (no cache, match)", |b| {
        b.iter(|| black_box(cold.is_bot(black_box(Some(crawler.as_bytes())))))
    });
    // Loading a list file (`cidrs_file`): parse every line, then sort and merge the ranges.
    // (its own generator: the benches after it see the same data as without it)
    let text = list_text(&random_cidrs(1_000_000, &mut fastrand::Rng::with_seed(7)));
    let mut g = c.benchmark_group("list file");
    g.sample_size(10);
    g.bench_function("parse + build 1,000,000 CIDRs", |b| {
        b.iter(|| {
            let list = parse_list("feed.txt", black_box(&text)).expect("valid");
            black_box(IpFilter::new(Mode::Deny, &list))
        })
    });
    g.finish();

    c.bench_function("bot_detector compile 1500 patterns", |b| {
        b.iter(|| black_box(bot(10)))
    });

    let db = GeoDb::open(std::path::Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/geoip-fixtures/cities.mmdb"
    )))
    .expect("fixture");
    let fence = Geofence::new(GeofenceConfig {
        deny_countries: vec!["KP".into()],
        allow_countries: vec!["GB".into(), "DE".into(), "US".into()],
        unknown_allows: true,
        ..Default::default()
    });
    let gb: IpAddr = "81.2.69.142".parse().unwrap();
    c.bench_function("geofence lookup + decide (City db, known address)", |b| {
        b.iter(|| black_box(fence.allows(db.lookup(black_box(gb)).as_ref())))
    });
    let unknown: IpAddr = "10.1.2.3".parse().unwrap();
    c.bench_function("geofence lookup + decide (unknown address)", |b| {
        b.iter(|| black_box(fence.allows(db.lookup(black_box(unknown)).as_ref())))
    });

    // The whole chain as request_filter runs it: resolve the client, then ip_filter (1,000
    // CIDRs), geofence, bot_detector (1,500 patterns, warm cache).
    let chain = Chain {
        ip_filter: Some(IpFilter::new(Mode::Deny, &random_cidrs(1_000, &mut rng))),
        geofence: Some(fence.clone()),
        bot_detector: Some(Arc::new(warm)),
    };
    let mut req = http::HeaderMap::new();
    req.insert("x-forwarded-for", "81.2.69.142".parse().unwrap());
    req.insert("user-agent", BROWSER.parse().unwrap());
    c.bench_function(
        "whole chain (client_ip, ip_filter 1k, geofence, bot warm)",
        |b| {
            b.iter(|| {
                let client = resolver.resolve(black_box(peer), &req);
                let ua = req.get(http::header::USER_AGENT).map(|v| v.as_bytes());
                let mut s = Subject::new(Some(client), ua, Some(&db));
                let d = chain.check(&mut s);
                debug_assert!(d.is_ok());
                black_box(d)
            })
        },
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
