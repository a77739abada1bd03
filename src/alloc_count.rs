//! A counting global allocator for measurement builds (`--features alloc-count`): mimalloc
//! underneath, and while a window is open every allocation is counted with its size and the
//! call stack that made it. SIGUSR1 opens a window (and clears the last one), SIGUSR2 closes
//! it and writes the report to `$GATEHOUSE_ALLOC_REPORT` (default
//! `/tmp/gatehouse-alloc.txt`): the totals, then each distinct call stack with its count and
//! bytes, most frequent first. `benches/alloc_count.sh` drives it and divides by the number
//! of requests. The product build never contains this.

use std::alloc::{GlobalAlloc, Layout};
use std::cell::Cell;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

pub struct Counting;

static ON: AtomicBool = AtomicBool::new(false);
static COUNT: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);
/// Call stack (return addresses, innermost first) -> (allocations, bytes).
type Stacks = HashMap<Vec<usize>, (u64, u64)>;
static STACKS: Mutex<Option<Stacks>> = Mutex::new(None);
const DEPTH: usize = 40;

thread_local! {
    /// Set while this thread records a stack: the recording's own allocations are not counted.
    static BUSY: Cell<bool> = const { Cell::new(false) };
}

fn record(size: usize) {
    if !ON.load(Ordering::Relaxed) {
        return;
    }
    let _ = BUSY.try_with(|busy| {
        if busy.replace(true) {
            return;
        }
        COUNT.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(size as u64, Ordering::Relaxed);
        let mut ips = Vec::with_capacity(DEPTH);
        backtrace::trace(|f| {
            ips.push(f.ip() as usize);
            ips.len() < DEPTH
        });
        if let Ok(mut g) = STACKS.lock() {
            let e = g.get_or_insert_with(HashMap::new).entry(ips).or_default();
            e.0 += 1;
            e.1 += size as u64;
        }
        busy.set(false);
    });
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        record(layout.size());
        mimalloc::MiMalloc.alloc(layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        record(layout.size());
        mimalloc::MiMalloc.alloc_zeroed(layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        record(new_size);
        mimalloc::MiMalloc.realloc(ptr, layout, new_size)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        mimalloc::MiMalloc.dealloc(ptr, layout)
    }
}

/// Frames of the allocator, the recording and the standard containers, skipped to find the
/// code that asked for the memory.
fn plumbing(name: &str) -> bool {
    let n = name.trim_start_matches(['<', '&']);
    [
        "backtrace::",
        "gatehouse::alloc_count",
        "alloc::",
        "core::",
        "std::",
        "__rust",
        "__rdl",
        "__rg",
        "mimalloc",
        "hashbrown::",
        "smallvec::",
        "bytes::",
        "http::",
        "<alloc",
        "<core",
        "<std",
        "<T as ",
        "T as ",
    ]
    .iter()
    .any(|p| n.starts_with(p))
}

fn frames(ips: &[usize]) -> Vec<String> {
    let mut out = Vec::new();
    for &ip in ips {
        backtrace::resolve(ip as *mut std::ffi::c_void, |s| {
            let name = s
                .name()
                .map(|n| format!("{n:#}"))
                .unwrap_or_else(|| format!("{ip:#x}"));
            let at = match (s.filename(), s.lineno()) {
                (Some(f), Some(l)) => {
                    let f = f.to_string_lossy();
                    let short = f.rsplit_once("/src/").map(|(_, t)| t).unwrap_or(&f);
                    format!(" ({short}:{l})")
                }
                _ => String::new(),
            };
            out.push(format!("{name}{at}"));
        });
    }
    out
}

fn report() -> String {
    let stacks = STACKS
        .lock()
        .ok()
        .and_then(|mut g| g.take())
        .unwrap_or_default();
    let mut rows: Vec<(u64, u64, Vec<String>)> = stacks
        .into_iter()
        .map(|(ips, (n, b))| {
            let f = frames(&ips);
            let start = f.iter().position(|x| !plumbing(x)).unwrap_or(0);
            (n, b, f.into_iter().skip(start).take(8).collect())
        })
        .collect();
    // Stacks that differ only below the shown frames count as one call site.
    let mut merged: HashMap<Vec<String>, (u64, u64)> = HashMap::new();
    for (n, b, f) in rows.drain(..) {
        let e = merged.entry(f).or_default();
        e.0 += n;
        e.1 += b;
    }
    let mut rows: Vec<_> = merged.into_iter().collect();
    rows.sort_by_key(|r| std::cmp::Reverse(r.1 .0));
    let mut s = format!(
        "allocations {} bytes {}\n",
        COUNT.load(Ordering::Relaxed),
        BYTES.load(Ordering::Relaxed)
    );
    for (f, (n, b)) in rows {
        let _ = writeln!(s, "\n{n} {b}");
        for x in f {
            let _ = writeln!(s, "    {x}");
        }
    }
    s
}

/// Starts the thread that opens and closes windows on SIGUSR1 and SIGUSR2.
pub fn start() {
    let path = std::env::var("GATEHOUSE_ALLOC_REPORT")
        .unwrap_or_else(|_| "/tmp/gatehouse-alloc.txt".into());
    let spawned = std::thread::Builder::new()
        .name("alloc-count".into())
        .spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                use tokio::signal::unix::{signal, SignalKind};
                let (Ok(mut open), Ok(mut close)) = (
                    signal(SignalKind::user_defined1()),
                    signal(SignalKind::user_defined2()),
                ) else {
                    return;
                };
                loop {
                    tokio::select! {
                        _ = open.recv() => {
                            ON.store(false, Ordering::SeqCst);
                            if let Ok(mut g) = STACKS.lock() { *g = None; }
                            COUNT.store(0, Ordering::SeqCst);
                            BYTES.store(0, Ordering::SeqCst);
                            ON.store(true, Ordering::SeqCst);
                        }
                        _ = close.recv() => {
                            ON.store(false, Ordering::SeqCst);
                            let r = report();
                            let tmp = format!("{path}.tmp");
                            if std::fs::write(&tmp, r).is_ok() {
                                let _ = std::fs::rename(&tmp, &path);
                            }
                        }
                    }
                }
            });
        });
    if let Err(e) = spawned {
        eprintln!("alloc-count: no control thread: {e}");
    }
}
