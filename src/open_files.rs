//! The process's open-file limit (RLIMIT_NOFILE), set once at start.
//!
//! Every client connection, upstream connection and listener is an open file, so the soft
//! limit caps how many connections the proxy can hold. Many systems start processes with a
//! soft limit of 1024 and a much higher hard limit; at start the soft limit is raised to the
//! hard limit, or set to `server.max_open_files` when the config gives one (the hard limit is
//! raised with it when that is above, which needs the privilege to do so).

use rlimit::Resource;

/// Below this many open files the limit in use is logged as a warning: with one file for the
/// client and one for its upstream, it is room for fewer than ~8,000 proxied requests at once.
pub const LOW_OPEN_FILES: u64 = 16_384;

/// Upper bound used when the hard limit is unlimited (Linux refuses a soft limit above
/// `fs.nr_open`; this is its usual default).
const UNLIMITED_FALLBACK: u64 = 1 << 20;

/// The open-file limits after `apply`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenFiles {
    pub soft: u64,
    pub hard: u64,
}

/// Sets the soft open-file limit to `wanted`, or to the hard limit when `None`. A `wanted`
/// above the hard limit raises both, which fails without the privilege to raise hard limits.
pub fn apply(wanted: Option<u64>) -> Result<OpenFiles, String> {
    let (soft, hard) = Resource::NOFILE
        .get()
        .map_err(|e| format!("cannot read the open-file limit: {e}"))?;
    let target = match wanted {
        Some(n) => n,
        None if hard == rlimit::INFINITY => nr_open().unwrap_or(UNLIMITED_FALLBACK),
        None => hard,
    };
    if target != soft {
        let new_hard = if hard == rlimit::INFINITY {
            hard
        } else {
            hard.max(target)
        };
        Resource::NOFILE
            .set(target, new_hard)
            .map_err(|e| match wanted {
                Some(n) if n > hard => format!(
                    "server.max_open_files: {n} is above the hard open-file limit {hard}, which \
                     this process may not raise ({e}); raise the hard limit (ulimit -Hn, systemd \
                     LimitNOFILE=) or lower the key"
                ),
                Some(n) => format!("server.max_open_files: cannot set the limit to {n}: {e}"),
                None => format!("cannot raise the open-file limit from {soft} to {target}: {e}"),
            })?;
    }
    let (soft, hard) = Resource::NOFILE
        .get()
        .map_err(|e| format!("cannot read the open-file limit: {e}"))?;
    Ok(OpenFiles { soft, hard })
}

/// `fs.nr_open`: the most open files the kernel allows one process.
fn nr_open() -> Option<u64> {
    std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Logs the limit in use; a warning when it is low.
pub fn log(limits: OpenFiles) {
    if limits.soft < LOW_OPEN_FILES {
        log::warn!(
            "open-file limit {} (hard {}) is low: each client connection and each upstream \
             connection takes one; raise the hard limit (ulimit -Hn, systemd LimitNOFILE=) or \
             server.max_open_files",
            limits.soft,
            limits.hard
        );
    } else {
        log::info!("open-file limit {} (hard {})", limits.soft, limits.hard);
    }
}
