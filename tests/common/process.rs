//! The gatehouse process under test: the binary of this checkout, started on loopback ports
//! it is seen to own (picked, bound by gatehouse, retried on other ports when another test
//! took one first), its log and metrics, signals and reloads. Killed on drop.

use super::client::{get, try_get};
use super::poll::wait_for;
use super::ports::{free_ports, listeners, Listener};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// How many sets of ports `Gatehouse::try_start` tries before it gives up.
const START_ATTEMPTS: usize = 6;

/// How long one start may take to be ready.
const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// The gatehouse binary of this checkout. Cargo puts it at `target/debug/gatehouse`, a path
/// that another checkout sharing the same CARGO_TARGET_DIR overwrites; so the harness copies
/// it once and checks that the copy was built from this very source tree.
pub fn bin() -> &'static Path {
    static BIN: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        let tmp = std::env::temp_dir();
        // Remove the links left by test processes that are gone.
        if let Ok(entries) = std::fs::read_dir(&tmp) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if let Some(pid) = name.strip_prefix("gatehouse-test-bin-") {
                    if !Path::new(&format!("/proc/{pid}")).exists() {
                        let _ = std::fs::remove_dir_all(e.path());
                    }
                }
            }
        }
        let dir = tmp.join(format!("gatehouse-test-bin-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let copy = dir.join("gatehouse");
        let _ = std::fs::remove_file(&copy);
        // A hard link keeps this inode even when cargo replaces the file; copy across devices.
        if std::fs::hard_link(env!("CARGO_BIN_EXE_gatehouse"), &copy).is_err() {
            std::fs::copy(env!("CARGO_BIN_EXE_gatehouse"), &copy).expect("copy the binary");
        }
        let out = Command::new(&copy)
            .arg("--manifest-dir")
            .output()
            .expect("run the binary");
        let built_from = String::from_utf8_lossy(&out.stdout).trim().to_string();
        assert_eq!(
            built_from,
            env!("CARGO_MANIFEST_DIR"),
            "{} was built from another checkout: give each checkout its own CARGO_TARGET_DIR",
            env!("CARGO_BIN_EXE_gatehouse")
        );
        copy
    })
}

/// A running gatehouse process; killed on drop.
pub struct Gatehouse {
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    /// The address `TLSADDR` in the YAML became (an HTTPS listener).
    pub tls_addr: SocketAddr,
    pub config_path: PathBuf,
    pub log_path: PathBuf,
    pub child: Child,
    pub dir: tempfile::TempDir,
    ports: (u16, u16, u16),
}

/// How one attempt to start ended.
enum Started {
    Ready(Gatehouse),
    /// Another process had one of the ports: worth another try on other ports.
    PortTaken(String),
    /// Anything else (a config error, a crash, no readiness): final.
    Failed(String),
}

impl Gatehouse {
    /// Starts gatehouse with `yaml`, where `LISTEN`, `ADMIN` and `TLSADDR` become loopback
    /// ports and `TMPDIR` a directory of its own; panics if it does not come up.
    pub fn start(yaml: &str) -> Gatehouse {
        Self::try_start(yaml).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Like `start`, returning why gatehouse did not come up (its log included). Ports are
    /// picked free, and gatehouse binds them itself a moment later: when another test took
    /// one in between, it starts again on other ports, a bounded number of times.
    pub fn try_start(yaml: &str) -> Result<Gatehouse, String> {
        let p = free_ports(3);
        Self::try_start_on(yaml, (p[0], p[1], p[2]))
    }

    /// Like `try_start`, trying the ports (`LISTEN`, `ADMIN`, `TLSADDR`) given first.
    pub fn try_start_on(yaml: &str, first: (u16, u16, u16)) -> Result<Gatehouse, String> {
        Self::try_start_with(yaml, first, None)
    }

    /// Like `start`, the process starting with a soft open-file limit of `soft` (set by the
    /// shell's `ulimit`, which then `exec`s the binary: the child's pid is gatehouse's).
    pub fn start_with_open_files(yaml: &str, soft: u64) -> Gatehouse {
        let p = free_ports(3);
        Self::try_start_with(yaml, (p[0], p[1], p[2]), Some(soft)).unwrap_or_else(|e| panic!("{e}"))
    }

    fn try_start_with(
        yaml: &str,
        first: (u16, u16, u16),
        soft_open_files: Option<u64>,
    ) -> Result<Gatehouse, String> {
        let mut last = String::new();
        for attempt in 0..START_ATTEMPTS {
            let ports = if attempt == 0 {
                first
            } else {
                let p = free_ports(3);
                (p[0], p[1], p[2])
            };
            match Self::start_once(yaml, ports, soft_open_files) {
                Started::Ready(g) => return Ok(g),
                Started::Failed(e) => return Err(e),
                Started::PortTaken(e) => {
                    eprintln!("gatehouse on {ports:?}: a port was taken, trying others");
                    last = e;
                }
            }
        }
        Err(format!(
            "gatehouse found a port taken {START_ATTEMPTS} times; the last time:\n{last}"
        ))
    }

    fn start_once(yaml: &str, ports: (u16, u16, u16), soft_open_files: Option<u64>) -> Started {
        let dir = tempfile::tempdir().expect("tempdir");
        let config_path = dir.path().join("gatehouse.yaml");
        let log_path = dir.path().join("gatehouse.log");
        std::fs::write(&config_path, Self::fill(yaml, ports, &dir)).expect("write config");
        let log = std::fs::File::create(&log_path).expect("log file");
        let mut cmd = match soft_open_files {
            None => Command::new(bin()),
            Some(n) => {
                let mut c = Command::new("sh");
                c.arg("-c")
                    .arg(format!("ulimit -Sn {n} && exec \"$0\" \"$@\""))
                    .arg(bin());
                c
            }
        };
        let child = cmd
            .arg("-c")
            .arg(&config_path)
            .env("RUST_LOG", log_filter())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn gatehouse");
        let mut g = Gatehouse {
            addr: SocketAddr::from(([127, 0, 0, 1], ports.0)),
            admin: SocketAddr::from(([127, 0, 0, 1], ports.1)),
            tls_addr: SocketAddr::from(([127, 0, 0, 1], ports.2)),
            config_path,
            log_path,
            child,
            dir,
            ports,
        };
        let mut own = vec![g.addr, g.admin];
        if yaml.contains("TLSADDR") {
            own.push(g.tls_addr);
        }
        let end = Instant::now() + READY_TIMEOUT;
        loop {
            let exited = g.child.try_wait().ok().flatten();
            let log = g.log();
            if port_in_use(&log) {
                return Started::PortTaken(log);
            }
            if let Some(status) = exited {
                return Started::Failed(format!("gatehouse exited with {status}:\n{log}"));
            }
            let who = listeners(g.child.id(), &own);
            if let Some(i) = who.iter().position(|w| *w == Listener::Other) {
                return Started::PortTaken(format!("{} is another process's\n{log}", own[i]));
            }
            // Only once the ports are its own can an answer be taken to be gatehouse's.
            if who.iter().all(|w| *w == Listener::Us)
                && try_get(g.admin, "/ready", &[]).is_ok_and(|r| r.status == 200)
            {
                return Started::Ready(g);
            }
            if Instant::now() > end {
                return Started::Failed(format!(
                    "gatehouse not ready after {READY_TIMEOUT:?} (listeners {who:?}):\n{log}"
                ));
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    fn fill(yaml: &str, ports: (u16, u16, u16), dir: &tempfile::TempDir) -> String {
        yaml.replace("TLSADDR", &format!("127.0.0.1:{}", ports.2))
            .replace("LISTEN", &format!("127.0.0.1:{}", ports.0))
            .replace("ADMIN", &format!("127.0.0.1:{}", ports.1))
            .replace("TMPDIR", &dir.path().display().to_string())
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// The log, once at least `n` of its lines contain `needle`. The access-log line is
    /// written after the response has gone out, so a client can see its answer before the
    /// line exists: tests that count lines wait for them.
    pub fn wait_log_lines(&self, needle: &str, n: usize) -> String {
        let what = format!("{n} log lines containing {needle:?}");
        wait_for(&what, Duration::from_secs(10), || {
            let log = self.log();
            (log.lines().filter(|l| l.contains(needle)).count() >= n).then_some(log)
        })
    }

    pub fn metrics(&self) -> String {
        get(self.admin, "/metrics", &[]).text()
    }

    /// The value of a metric line starting with `prefix` (name and labels), or 0.
    pub fn metric(&self, prefix: &str) -> f64 {
        metric_value(&self.metrics(), prefix)
    }

    pub fn generation(&self) -> u64 {
        self.metric("gatehouse_config_generation") as u64
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("run kill")
            .success();
        assert!(ok, "kill -{sig} failed");
    }

    /// Writes a new config (same placeholders) and sends SIGHUP; waits until the reload
    /// counter moves and returns whether it succeeded.
    pub fn reload(&self, yaml: &str) -> bool {
        let before_ok = self.metric("gatehouse_reloads_total{result=\"ok\"}");
        let before_err = self.metric("gatehouse_reloads_total{result=\"error\"}");
        std::fs::write(&self.config_path, Self::fill(yaml, self.ports, &self.dir))
            .expect("write config");
        self.signal("HUP");
        wait_for("the reload to be counted", Duration::from_secs(10), || {
            let ok = self.metric("gatehouse_reloads_total{result=\"ok\"}");
            let err = self.metric("gatehouse_reloads_total{result=\"error\"}");
            if ok > before_ok {
                Some(true)
            } else if err > before_err {
                Some(false)
            } else {
                None
            }
        })
    }

    /// Waits for the process to exit (after a signal) and returns its exit status.
    pub fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let child = &mut self.child;
        wait_for("gatehouse to exit", timeout, || {
            child.try_wait().ok().flatten()
        })
    }
}

impl Drop for Gatehouse {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if thread::panicking() {
            eprintln!("--- gatehouse log ---\n{}", self.log());
        }
    }
}

/// The log filter for gatehouse: RUST_LOG of the test run (`info` if unset), keeping the
/// warning about a listen address in use, by which a start notices a taken port at once.
fn log_filter() -> String {
    match std::env::var("RUST_LOG") {
        Ok(f) => format!("{f},pingora_core::listeners::l4=warn"),
        Err(_) => "info".into(),
    }
}

/// Whether the log says a listen address was in use (Pingora retries such a bind for a
/// while, logging each failure, then gives up).
fn port_in_use(log: &str) -> bool {
    log.contains("is in use, will try again")
        || log.contains("still in use")
        || log.contains("Address already in use")
}

pub fn metric_value(text: &str, prefix: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| {
            l.starts_with(prefix) && l[prefix.len()..].starts_with([' ', '{'].as_ref())
                || l.split_once(' ').map(|(k, _)| k) == Some(prefix)
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}
