//! Decisions per second and latency of `store: redis` (one server in the clear, the same over
//! TLS, a 3-master Redis Cluster) against `store: local` and `store: fleet`, through
//! `Limits::check_request` (client bucket by IP + shared bucket, one script call), on
//! redis-servers this program starts on free loopback ports.
//!
//! `cargo bench --bench redis` prints the figures of docs/fleet.md. Without `--bench` (as
//! under `cargo test --all-targets`) it runs a short smoke version, without the cluster.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test may panic on what it did not expect

#[path = "../tests/common/mod.rs"]
#[allow(unused_imports)]
mod common;

use gatehouse::limits::{Request, RequestLimits};
use gatehouse::runtime::Runtime;
use pingora::http::RequestHeader;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const CLIENTS: u32 = 10_000;

fn limits(redis_block: &str, store: &str) -> Runtime {
    let cfg = gatehouse::config::parse(&format!(
        r#"
version: 1
server: {{ listen: ["127.0.0.1:0"] }}
redis: {redis_block}
backends:
  a: {{ discovery: {{ static: ["127.0.0.1:9001"] }} }}
endpoints:
  - path: /x
    backend: a
    rate_limit: {{ max_rate: 100000000, client_max_rate: 10000000, every: 1s, store: {store}, on_store_failure: deny }}
"#
    ))
    .expect("bench config is valid");
    Runtime::compile(cfg, None).expect("bench config compiles")
}

fn ip(i: u32) -> Option<IpAddr> {
    Some(IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i % CLIENTS)))
}

struct Figures {
    per_sec: f64,
    p50_us: f64,
    p99_us: f64,
    failed: u64,
}

/// `tasks` concurrent loops of decisions for `dur`; every decision's latency is recorded.
/// With `period`, each task makes one decision per period (an open loop at a fixed rate:
/// latency below saturation); without, as fast as it can (throughput).
async fn run(
    limits: Arc<Runtime>,
    tasks: usize,
    dur: Duration,
    period: Option<Duration>,
) -> Figures {
    let stop = Arc::new(AtomicBool::new(false));
    let failed = Arc::new(AtomicU64::new(0));
    let mut handles = Vec::new();
    for t in 0..tasks {
        let (limits, stop, failed) = (limits.clone(), stop.clone(), failed.clone());
        handles.push(tokio::spawn(async move {
            let req = RequestHeader::build("GET", b"/x", None).expect("request");
            let mut lat: Vec<u32> = Vec::with_capacity(1 << 16);
            let mut i = t as u32 * 7919;
            if let Some(p) = period {
                // spread the tasks over the period (the timer has 1 ms granularity)
                tokio::time::sleep(p * t as u32 / tasks as u32).await;
            }
            let mut tick = period.map(|p| {
                let mut iv = tokio::time::interval(p);
                iv.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                iv
            });
            while !stop.load(Ordering::Relaxed) {
                if let Some(iv) = tick.as_mut() {
                    iv.tick().await;
                }
                i = i.wrapping_add(1);
                let mut st = RequestLimits::default();
                let start = Instant::now();
                let now = gatehouse::clock::now_ns(start);
                let endpoint = limits.endpoints[0].limiter.as_deref();
                let asked = Request {
                    head: &req,
                    ip: ip(i),
                    now,
                };
                let r = limits
                    .limits
                    .check_request(endpoint, None, &asked, None, &mut st)
                    .await;
                lat.push(start.elapsed().as_nanos().min(u32::MAX as u128) as u32);
                if r.is_err() {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
                if lat.len().is_multiple_of(64) {
                    // let the other tasks of a local-store run share the threads
                    tokio::task::yield_now().await;
                }
            }
            lat
        }));
    }
    let start = Instant::now();
    tokio::time::sleep(dur).await;
    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    for h in handles {
        all.extend(h.await.expect("bench task"));
    }
    let secs = start.elapsed().as_secs_f64();
    all.sort_unstable();
    let pct = |p: f64| all[((all.len() - 1) as f64 * p) as usize] as f64 / 1000.0;
    Figures {
        per_sec: all.len() as f64 / secs,
        p50_us: pct(0.50),
        p99_us: pct(0.99),
        failed: failed.load(Ordering::Relaxed),
    }
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let dur = Duration::from_millis(if full { 5000 } else { 300 });
    let redis = common::RedisServer::start();
    let pki = common::tls::Pki::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, key) = pki.issue(&["127.0.0.1"]).write(dir.path(), "server");
    let ca = pki.write_ca(dir.path(), "ca.pem");
    let files = common::RedisTlsFiles {
        cert: &cert,
        key: &key,
        ca: &ca,
        client_certs: false,
    };
    let tls_redis = common::RedisServer::start_with(|_| Vec::new(), Some(&files));
    let cluster = full.then(common::RedisCluster::start);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(async {
        let one = format!("{{ url: \"{}\", timeout: 250ms }}", redis.url());
        let local = Arc::new(limits(&one, "local"));
        let fleet = Arc::new(limits(&one, "fleet"));
        let shared = Arc::new(limits(&one, "redis"));
        let tls = Arc::new(limits(
            &format!(
                "{{ url: \"{}\", timeout: 250ms, tls: {{ ca: \"{}\" }} }}",
                tls_redis.tls_url(""),
                ca.display()
            ),
            "redis",
        ));
        let on_cluster = cluster.as_ref().map(|c| {
            let seeds: Vec<String> = c.urls(false).iter().map(|u| format!("\"{u}\"")).collect();
            Arc::new(limits(
                &format!("{{ cluster: [{}], timeout: 250ms }}", seeds.join(", ")),
                "redis",
            ))
        });
        // connect and load the script
        for l in [Some(&shared), Some(&tls), on_cluster.as_ref()].into_iter().flatten() {
            run(l.clone(), 1, Duration::from_millis(500), None).await;
        }
        println!(
            "store   tasks  mode  decisions/s   p50 (us)  p99 (us)  failed   [{}s per row, 2 worker threads, {CLIENTS} client IPs]",
            dur.as_secs_f64()
        );
        // closed loops (as fast as possible), then open loops: tasks x one per 5 ms
        let p5 = Some(Duration::from_millis(5));
        let mut rows = vec![
            ("local", &local, 1, None),
            ("fleet", &fleet, 1, None),
            ("local", &local, 16, None),
            ("fleet", &fleet, 16, None),
            ("redis", &shared, 1, None),
            ("redis", &shared, 16, None),
            ("redis", &shared, 64, None),
            ("tls", &tls, 1, None),
            ("tls", &tls, 16, None),
            ("tls", &tls, 64, None),
        ];
        if let Some(c) = &on_cluster {
            rows.extend([
                ("cluster", c, 1, None),
                ("cluster", c, 16, None),
                ("cluster", c, 64, None),
            ]);
        }
        rows.extend([
            ("local", &local, 50, p5),
            ("fleet", &fleet, 50, p5),
            ("redis", &shared, 50, p5),
            ("tls", &tls, 50, p5),
        ]);
        if let Some(c) = &on_cluster {
            rows.push(("cluster", c, 50, p5));
        }
        for (name, l, tasks, period) in rows {
            let f = run(l.clone(), tasks, dur, period).await;
            let mode = if period.is_some() { "paced" } else { "max" };
            println!(
                "{name:<7} {tasks:>5}  {mode:<5} {:>11.0}  {:>9.1}  {:>8.1}  {:>6}",
                f.per_sec, f.p50_us, f.p99_us, f.failed
            );
            if !matches!(name, "local" | "fleet") {
                assert!(f.failed == 0 || !full, "Redis decisions failed: {}", f.failed);
            }
        }
    });
}
