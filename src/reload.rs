//! Hot reload on SIGHUP: read, validate and compile the whole file off the request path,
//! then swap the runtime atomically. Any error keeps the running runtime. The list files a
//! config names are also watched (`refresh_lists`): a change compiles the running config
//! again with the new lists, without reading the config file.

use crate::config::{self, ConfigErrors};
use crate::metrics::metrics;
use crate::runtime::{Runtime, Shared};
use async_trait::async_trait;
use log::{error, info, warn};
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

/// Set once the SIGHUP handler is installed: `/ready` answers 200 from then on.
pub static READY: AtomicBool = AtomicBool::new(false);

/// The outcome of the last reload (the admin `/status` shows it).
#[derive(Debug, Clone, PartialEq)]
pub struct LastReload {
    pub at: SystemTime,
    /// `Ok(generation)` swapped in, or every error of the file (the running config stayed).
    pub result: Result<u64, String>,
}

static LAST: Mutex<Option<LastReload>> = Mutex::new(None);

/// The last reload since the start, if any.
pub fn last() -> Option<LastReload> {
    LAST.lock().unwrap_or_else(|p| p.into_inner()).clone()
}

fn record(result: Result<u64, String>) {
    let last = LastReload {
        at: SystemTime::now(),
        result,
    };
    *LAST.lock().unwrap_or_else(|p| p.into_inner()) = Some(last);
}

/// Loads the file and swaps it in; returns the new generation.
pub fn reload(path: &std::path::Path, shared: &Shared) -> Result<u64, ConfigErrors> {
    let started = std::time::Instant::now();
    let cfg = config::load(path)?;
    let old = shared.load_full();
    let restart_only = restart_only_changes(&old.config, &cfg);
    let rt = Runtime::compile(cfg, Some(&old))?;
    let generation = rt.generation;
    shared.store(Arc::new(rt));
    for what in restart_only {
        warn!("reload: {what} changed; this takes effect only after a restart or upgrade (-u)");
    }
    info!(
        "reload: generation {generation} from {} swapped in after {:.1}ms",
        path.display(),
        started.elapsed().as_secs_f64() * 1000.0
    );
    Ok(generation)
}

/// How often the list files (`cidrs_file`, `trusted_proxies_file`) are checked for a change.
pub const LIST_POLL: std::time::Duration = std::time::Duration::from_secs(1);

/// When a list file of the running config changed (a new inode, modification time or size:
/// written in place or replaced by a rename), compiles the running config again from its own
/// text, which reads the lists anew, and swaps it in. A bad list keeps the running runtime;
/// `failed` holds the stamps of that attempt, so the same files are not tried again until
/// they change once more. Returns the new generation when a runtime was swapped in.
pub fn refresh_lists(
    shared: &Shared,
    failed: &mut Option<Vec<Option<config::FileStamp>>>,
) -> Option<Result<u64, ConfigErrors>> {
    let old = shared.load_full();
    if old.config.lists.is_empty() || !old.config.lists_changed() {
        return None;
    }
    let now: Vec<_> = old
        .config
        .lists
        .iter()
        .map(|(p, _)| config::FileStamp::of(p))
        .collect();
    if failed.as_ref() == Some(&now) {
        return None;
    }
    let compiled =
        config::parse(&old.config.source.0).and_then(|cfg| Runtime::compile(cfg, Some(&old)));
    match compiled {
        Ok(rt) => {
            *failed = None;
            let generation = rt.generation;
            shared.store(Arc::new(rt));
            info!("lists: a list file changed; generation {generation} swapped in");
            Some(Ok(generation))
        }
        Err(e) => {
            *failed = Some(now);
            Some(Err(e))
        }
    }
}

/// The keys read once at start whose value `new` changes: a reload keeps the running values
/// of these until a restart or an upgrade, and says so.
fn restart_only_changes(old: &config::Config, new: &config::Config) -> Vec<&'static str> {
    let (o, n) = (&old.server, &new.server);
    let tls_listeners = |c: &config::Config| {
        c.server
            .tls
            .as_ref()
            .map(|t| (t.listen.clone(), t.min_version, t.groups.clone(), t.http2))
    };
    let idle =
        |c: &config::Config| -> usize { c.backends.values().map(|b| b.max_idle_connections).sum() };
    [
        ("server.listen", o.listen != n.listen),
        ("server.threads", o.threads != n.threads),
        ("server.work_stealing", o.work_stealing != n.work_stealing),
        ("server.admin", o.admin != n.admin),
        ("server.grace_period", o.grace_period != n.grace_period),
        (
            "server.tls (listen, min_version, groups, http2)",
            tls_listeners(old) != tls_listeners(new),
        ),
        ("server.pid_file", o.pid_file != n.pid_file),
        ("server.upgrade_sock", o.upgrade_sock != n.upgrade_sock),
        (
            "server.max_open_files",
            o.max_open_files != n.max_open_files,
        ),
        ("server.h2", o.h2 != n.h2),
        (
            "server.listener_buffer",
            o.listener_buffer != n.listener_buffer,
        ),
        ("demo", old.demo != new.demo),
        ("tracing", old.tracing != new.tracing),
        (
            "backends.*.max_idle_connections (pool size)",
            idle(old) != idle(new),
        ),
    ]
    .into_iter()
    .filter_map(|(key, changed)| changed.then_some(key))
    .collect()
}

pub struct ReloadService {
    pub path: PathBuf,
    pub shared: Shared,
}

#[async_trait]
impl BackgroundService for ReloadService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        use tokio::signal::unix::{signal, SignalKind};
        let mut hup = match signal(SignalKind::hangup()) {
            Ok(s) => s,
            Err(e) => {
                error!("cannot install the SIGHUP handler, hot reload is off: {e}");
                return;
            }
        };
        READY.store(true, Ordering::Release);
        info!("reload: send SIGHUP to re-read {}", self.path.display());
        let mut poll = tokio::time::interval(LIST_POLL);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failed = None;
        loop {
            tokio::select! {
                _ = shutdown.changed() => break,
                _ = poll.tick() => match refresh_lists(&self.shared, &mut failed) {
                    None => {}
                    // The counters move last, once the generation, the log line and the
                    // status are there: whoever waits on a counter sees all of them.
                    Some(Ok(g)) => {
                        metrics().config_generation.set(g as i64);
                        metrics().list_reloads.with_label_values(&["ok"]).inc();
                    }
                    Some(Err(errs)) => {
                        error!("list reload failed, keeping the running lists:\n{errs}");
                        metrics().list_reloads.with_label_values(&["error"]).inc();
                    }
                },
                got = hup.recv() => {
                    if got.is_none() { break; }
                    match reload(&self.path, &self.shared) {
                        Ok(g) => {
                            metrics().config_generation.set(g as i64);
                            record(Ok(g));
                            metrics().reloads.with_label_values(&["ok"]).inc();
                        }
                        Err(errs) => {
                            error!("reload failed, keeping the running config:\n{errs}");
                            record(Err(errs.to_string()));
                            metrics().reloads.with_label_values(&["error"]).inc();
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_only_changes_are_named() {
        let base = "version: 1\nserver: { listen: [\"127.0.0.1:1\"], work_stealing: false }\n";
        let old = config::parse(base).unwrap();
        assert!(restart_only_changes(&old, &old).is_empty());
        let new = config::parse(&base.replace("false", "true")).unwrap();
        assert_eq!(
            restart_only_changes(&old, &new),
            vec!["server.work_stealing"]
        );
        let new = config::parse(&base.replace("}", ", threads: 3 }")).unwrap();
        assert_eq!(restart_only_changes(&old, &new), vec!["server.threads"]);
        let new =
            config::parse(&base.replace("}", ", h2: { max_concurrent_streams: 9 } }")).unwrap();
        assert_eq!(restart_only_changes(&old, &new), vec!["server.h2"]);
        let new = config::parse(&base.replace("}", ", listener_buffer: 4KB }")).unwrap();
        assert_eq!(
            restart_only_changes(&old, &new),
            vec!["server.listener_buffer"]
        );
    }
}
