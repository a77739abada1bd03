//! Hot-path costs of the rate limits: one shared-bucket check, one client-bucket check in a
//! store of a million clients (against a dashmap-based store for comparison), client keys,
//! a whole request decision; and the memory of a million clients.
//!
//! `cargo bench --bench limits` (figures in README.md).

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test may panic on what it did not expect

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use dashmap::DashMap;
use gatehouse::limits::bucket::{Bucket, Gcra};
use gatehouse::limits::local::{Key, LocalStore, DEFAULT_MAX_CLIENTS};
use gatehouse::limits::{policy, Request, RequestLimits};
use pingora::http::RequestHeader;
use std::future::Future;
use std::time::Duration;

const CLIENTS: u64 = 1_000_000;

fn ipv4_key(i: u64) -> Key {
    policy::ip_key(Some(std::net::IpAddr::V4(std::net::Ipv4Addr::from(
        0x0a00_0000 + i as u32,
    ))))
}

/// 4096 keys spread over the million, visited in turn.
fn sample() -> Vec<Key> {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    (0..4096)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            ipv4_key(x % CLIENTS)
        })
        .collect()
}

fn gcra() -> Gcra {
    // 1M per second: nearly every check is admitted (the write path, the dearer one)
    Gcra::new(1_000_000, 50, Duration::from_secs(1))
}

fn rss_bytes() -> usize {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<usize>().ok())
        .map(|pages| pages * 4096)
        .unwrap_or(0)
}

fn memory_report() {
    let g = gcra();
    let before = rss_bytes();
    let s = LocalStore::new(DEFAULT_MAX_CLIENTS);
    for i in 0..CLIENTS {
        s.check(ipv4_key(i), &g, 0);
    }
    let after = rss_bytes();
    println!(
        "memory: {} clients tracked; maps hold {} bytes ({:.1} B/client); RSS grew {} bytes ({:.1} MiB, {:.1} B/client)",
        s.len(),
        s.memory_bytes(),
        s.memory_bytes() as f64 / CLIENTS as f64,
        after.saturating_sub(before),
        after.saturating_sub(before) as f64 / (1 << 20) as f64,
        after.saturating_sub(before) as f64 / CLIENTS as f64,
    );
}

fn block_on<F: Future>(f: F) -> F::Output {
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    let mut f = std::pin::pin!(f);
    loop {
        if let std::task::Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
    }
}

fn benches(c: &mut Criterion) {
    memory_report();
    let g = gcra();

    let b = Bucket::new();
    let mut now = 0u64;
    c.bench_function("shared_bucket_check", |bch| {
        bch.iter(|| {
            now += 1_000;
            black_box(b.check(&g, black_box(now)))
        })
    });

    let keys = sample();
    let store = LocalStore::new(DEFAULT_MAX_CLIENTS);
    for i in 0..CLIENTS {
        store.check(ipv4_key(i), &g, 0);
    }
    let mut i = 0usize;
    let mut now = 1_000_000u64;
    c.bench_function("client_bucket_check_1M_clients", |bch| {
        bch.iter(|| {
            i = (i + 1) & 4095;
            now += 100;
            black_box(store.check(keys[i], &g, now))
        })
    });

    let small = LocalStore::new(DEFAULT_MAX_CLIENTS);
    let few: Vec<Key> = (0..64).map(ipv4_key).collect();
    c.bench_function("client_bucket_check_64_clients", |bch| {
        bch.iter(|| {
            i = (i + 1) & 63;
            now += 100;
            black_box(small.check(few[i], &g, now))
        })
    });

    // The same decision on a dashmap, for comparison.
    let dm: DashMap<Key, u64, foldhash::fast::RandomState> =
        DashMap::with_hasher(foldhash::fast::RandomState::default());
    for i in 0..CLIENTS {
        dm.insert(ipv4_key(i), 0);
    }
    c.bench_function("dashmap_client_check_1M_clients", |bch| {
        bch.iter(|| {
            i = (i + 1) & 4095;
            now += 100;
            let mut e = dm.entry(keys[i]).or_insert(0);
            black_box(match g.decide(*e, now) {
                Ok(t) => {
                    *e = t;
                    true
                }
                Err(_) => false,
            })
        })
    });

    c.bench_function("key_ip", |bch| {
        let ip: std::net::IpAddr = "2001:db8:1:2::5"
            .parse()
            .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST));
        bch.iter(|| black_box(policy::ip_key(black_box(Some(ip)))))
    });
    c.bench_function("key_header_value_32B", |bch| {
        let v = b"0123456789abcdef0123456789abcdef";
        bch.iter(|| black_box(policy::value_key(black_box(v))))
    });

    // A whole decision: service-wide client (header strategy) and shared buckets, endpoint shared bucket.
    let cfg = gatehouse::config::parse(
        r#"
version: 1
server: { listen: ["127.0.0.1:0"] }
rate_limit: { max_rate: 100000000, client_max_rate: 10000000, every: 1s, strategy: header, key: X-Api-Key }
backends:
  a: { discovery: { static: ["127.0.0.1:9001"] } }
endpoints:
  - path: /x
    backend: a
    rate_limit: { max_rate: 100000000 }
"#,
    )
    .expect("bench config is valid");
    let rt = gatehouse::runtime::Runtime::compile(cfg, None).expect("bench config compiles");
    let endpoint = rt.endpoints[0].limiter.as_deref();
    let mut req = RequestHeader::build("GET", b"/x", None).expect("request");
    req.insert_header("x-api-key", "0123456789abcdef0123456789abcdef")
        .expect("header");
    let ip = Some(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST));
    c.bench_function("request_decision_3_buckets", |bch| {
        bch.iter(|| {
            now += 1_000;
            let mut st = RequestLimits::default();
            let asked = Request {
                head: &req,
                ip,
                now,
            };
            black_box(block_on(
                rt.limits
                    .check_request(endpoint, None, &asked, None, &mut st),
            ))
            .ok();
            black_box(st.guard.is_some())
        })
    });
}

criterion_group!(limits, benches);
criterion_main!(limits);
