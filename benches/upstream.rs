//! Hot-path costs of the upstream layer: picking a host and the breaker's closed path.
//! Run: `cargo bench --bench upstream`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test may panic on what it did not expect

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use gatehouse::clock;
use gatehouse::config::{BackendConfig, Balance, BreakerConfig, Discovery, HashKey};
use gatehouse::upstream::backend::Backend;
use std::time::{Duration, Instant};

fn backend(balance: Balance, breaker: bool) -> Backend {
    let hosts = (1..=4)
        .map(|i| format!("127.0.0.1:{}", 9000 + i).parse().unwrap())
        .collect();
    Backend::new(
        "bench",
        BackendConfig {
            discovery: Discovery::Static(hosts),
            balance,
            hash_key: HashKey::ClientIp,
            health_check: None,
            circuit_breaker: breaker.then(|| BreakerConfig {
                interval: Duration::from_secs(60),
                timeout: Duration::from_secs(10),
                max_errors: 5,
                log_status_change: false,
            }),
            connect_timeout: Duration::from_secs(1),
            read_timeout: Duration::from_secs(1),
            write_timeout: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(1),
            tunnel_idle_timeout: Duration::from_secs(1),
            max_idle_connections: 1,
            retries: 1,
            host_header: None,
            tls: None,
            protocol: Default::default(),
        },
    )
}

fn bench(c: &mut Criterion) {
    let rr = backend(Balance::RoundRobin, false);
    c.bench_function("select round_robin (4 hosts)", |b| {
        b.iter(|| rr.select(b"", black_box(&[]), clock::now_ms(Instant::now())))
    });
    let ch = backend(Balance::ConsistentHash, false);
    c.bench_function("select consistent_hash (4 hosts)", |b| {
        b.iter(|| {
            ch.select(
                black_box(&[10, 1, 2, 3]),
                &[],
                clock::now_ms(Instant::now()),
            )
        })
    });
    let br = backend(Balance::RoundRobin, true);
    c.bench_function("gate + breaker success (closed)", |b| {
        b.iter(|| {
            let now = Instant::now();
            if let Ok(Some(pass)) = br.gate(now, clock::now_ms(now)) {
                if let Some(breaker) = &br.breaker {
                    breaker.record(pass, true, now);
                }
            }
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
