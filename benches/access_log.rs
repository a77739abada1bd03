//! Cost of one access-log line (text and JSON) and of a new request ID, with the number of
//! heap allocations each makes (none: `cargo test` runs it once and checks that). Run:
//! `cargo bench --bench access_log`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a bench may panic on what it did not expect

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use gatehouse::access_log::{write_json, write_text, Entry};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

/// Counts the allocations of the process, to print them per operation.
struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        System.alloc(l)
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        System.dealloc(p, l)
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        System.realloc(p, l, n)
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn entry() -> Entry<'static> {
    Entry {
        ts: SystemTime::now(),
        client: Some("203.0.113.7".parse().unwrap()),
        method: "GET",
        path: "/api/v1/products/1234?fields=name,price",
        route: Some("/api/v1/products/{id}"),
        status: 200,
        duration: Duration::from_micros(1834),
        upstream: Some("10.0.3.17:8080".parse().unwrap()),
        upstream_time: Some(Duration::from_micros(1502)),
        bytes_sent: 5120,
        reason: None,
        request_id: Some("9f86d081884c7d659a2feaa0c55ad015"),
        tls: true,
        http_version: "1.1",
    }
}

/// Allocations per call of `f`, over many calls.
fn allocs_per_call(mut f: impl FnMut()) -> f64 {
    f();
    let n = 10_000;
    let before = ALLOCS.load(Ordering::Relaxed);
    for _ in 0..n {
        f();
    }
    (ALLOCS.load(Ordering::Relaxed) - before) as f64 / n as f64
}

fn bench(c: &mut Criterion) {
    let e = entry();
    let mut line = String::with_capacity(512);
    for (name, write) in [
        ("json", write_json as fn(&Entry<'_>, &mut String)),
        ("text", write_text),
    ] {
        let a = allocs_per_call(|| {
            line.clear();
            write(black_box(&e), &mut line);
        });
        println!(
            "access_log/{name}: {a} allocations per line, {} bytes",
            line.len()
        );
        // `cargo test` runs this bench once too: a line must not allocate.
        assert_eq!(a, 0.0, "formatting a {name} line allocates");
        c.bench_function(&format!("access_log/{name}"), |b| {
            b.iter(|| {
                line.clear();
                write(black_box(&e), &mut line);
                black_box(line.len())
            })
        });
    }
    let a = allocs_per_call(|| {
        black_box(gatehouse::request_id::generate());
    });
    println!("request_id/generate: {a} allocations per ID");
    assert_eq!(a, 0.0, "making a request ID allocates");
    c.bench_function("request_id/generate", |b| {
        b.iter(|| black_box(gatehouse::request_id::generate()))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
