//! Integration-test harness: runs the real gatehouse binary on free loopback ports, mock
//! upstreams that answer, echo, stall, fail or close, and a small HTTP/1.1 client that can also
//! send raw bytes. Readiness is found by polling, never by sleeping.

#![allow(dead_code)]

pub mod tls;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// The gatehouse binary of this checkout. Cargo puts it at `target/debug/gatehouse`, a path
/// that another checkout sharing the same CARGO_TARGET_DIR overwrites; so the harness copies
/// it once and checks that the copy was built from this very source tree.
pub fn bin() -> &'static std::path::Path {
    static BIN: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        let tmp = std::env::temp_dir();
        // Remove the links left by test processes that are gone.
        if let Ok(entries) = std::fs::read_dir(&tmp) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if let Some(pid) = name.strip_prefix("gatehouse-test-bin-") {
                    if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
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

/// A port that was free a moment ago on 127.0.0.1.
/// An address where connecting is refused and that nothing else can take while the guard
/// lives: a socket bound to it but never listening. (A port from `free_port` is released at
/// once, and a gatehouse or mock started by a parallel test may bind it.)
pub struct DeadAddr {
    pub addr: SocketAddr,
    _bound: tokio::net::TcpSocket,
}

pub fn dead_addr() -> DeadAddr {
    let bound = tokio::net::TcpSocket::new_v4().expect("socket");
    bound
        .bind("127.0.0.1:0".parse().unwrap())
        .expect("bind an ephemeral port");
    DeadAddr {
        addr: bound.local_addr().expect("local address"),
        _bound: bound,
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind an ephemeral port")
}

/// Polls `f` until it returns `Some`, or panics with `what` after `timeout`.
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let end = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        if Instant::now() > end {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        thread::sleep(Duration::from_millis(10));
    }
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

impl Gatehouse {
    /// Starts gatehouse with `yaml`, where `LISTEN` and `ADMIN` become free 127.0.0.1 ports.
    pub fn start(yaml: &str) -> Gatehouse {
        Self::try_start(yaml).unwrap_or_else(|e| panic!("{e}"))
    }

    pub fn try_start(yaml: &str) -> Result<Gatehouse, String> {
        Self::try_start_with(yaml, None)
    }

    /// Like `start`, the process starting with a soft open-file limit of `soft` (set by the
    /// shell's `ulimit`, which then `exec`s the binary: the child's pid is gatehouse's).
    pub fn start_with_open_files(yaml: &str, soft: u64) -> Gatehouse {
        Self::try_start_with(yaml, Some(soft)).unwrap_or_else(|e| panic!("{e}"))
    }

    fn try_start_with(yaml: &str, soft_open_files: Option<u64>) -> Result<Gatehouse, String> {
        let dir = tempfile::tempdir().expect("tempdir");
        let ports = (free_port(), free_port(), free_port());
        let config_path = dir.path().join("gatehouse.yaml");
        let log_path = dir.path().join("gatehouse.log");
        let text = Self::fill(yaml, ports, &dir);
        std::fs::write(&config_path, text).expect("write config");
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
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
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
        let end = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = g.child.try_wait() {
                return Err(format!("gatehouse exited with {status}:\n{}", g.log()));
            }
            if let Ok(r) = try_get(g.admin, "/ready", &[]) {
                let tls_up = !yaml.contains("TLSADDR") || TcpStream::connect(g.tls_addr).is_ok();
                if r.status == 200 && TcpStream::connect(g.addr).is_ok() && tls_up {
                    return Ok(g);
                }
            }
            if Instant::now() > end {
                return Err(format!("gatehouse not ready after 20s:\n{}", g.log()));
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

/// A response as read off the wire.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Reads one response from `r` (Content-Length, chunked, or until close).
pub fn read_response(r: &mut impl BufRead, head_request: bool) -> std::io::Result<Response> {
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "connection closed before a response",
        ));
    }
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line {line:?}")))?;
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        r.read_line(&mut h)?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    let resp = Response {
        status,
        headers,
        body: Vec::new(),
    };
    let mut body = Vec::new();
    let no_body = head_request || status == 204 || status == 304 || (100..200).contains(&status);
    if !no_body {
        if let Some(len) = resp.header("content-length") {
            let n: usize = len.parse().map_err(std::io::Error::other)?;
            body.resize(n, 0);
            r.read_exact(&mut body)?;
        } else if resp
            .header("transfer-encoding")
            .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
        {
            loop {
                let mut size = String::new();
                r.read_line(&mut size)?;
                let n = usize::from_str_radix(size.trim().split(';').next().unwrap_or(""), 16)
                    .map_err(std::io::Error::other)?;
                if n == 0 {
                    let mut end = String::new();
                    r.read_line(&mut end)?;
                    break;
                }
                let mut chunk = vec![0; n];
                r.read_exact(&mut chunk)?;
                body.extend_from_slice(&chunk);
                let mut crlf = [0u8; 2];
                r.read_exact(&mut crlf)?;
            }
        } else {
            r.read_to_end(&mut body)?;
        }
    }
    Ok(Response { body, ..resp })
}

fn build_request(method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut req = format!("{method} {path} HTTP/1.1\r\n");
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        req.push_str("Host: test.local\r\n");
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if !body.is_empty() {
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    let mut bytes = req.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

/// One request on a fresh connection.
pub fn try_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<Response> {
    let mut c = Conn::open(addr)?;
    c.request(method, path, headers, body)
}

pub fn try_get(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> std::io::Result<Response> {
    try_request(addr, "GET", path, headers, b"")
}

pub fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Response {
    try_get(addr, path, headers).unwrap_or_else(|e| panic!("GET {path} on {addr}: {e}"))
}

pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Response {
    try_request(addr, method, path, headers, body)
        .unwrap_or_else(|e| panic!("{method} {path} on {addr}: {e}"))
}

/// A client connection that can carry several requests (keep-alive) or raw bytes.
pub struct Conn {
    pub reader: BufReader<TcpStream>,
    pub stream: TcpStream,
}

impl Conn {
    pub fn open(addr: SocketAddr) -> std::io::Result<Conn> {
        let stream = TcpStream::connect(addr)?;
        stream.set_read_timeout(Some(Duration::from_secs(15)))?;
        stream.set_nodelay(true)?;
        Ok(Conn {
            reader: BufReader::new(stream.try_clone()?),
            stream,
        })
    }

    pub fn request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> std::io::Result<Response> {
        self.stream
            .write_all(&build_request(method, path, headers, body))?;
        read_response(&mut self.reader, method == "HEAD")
    }

    pub fn get(&mut self, path: &str) -> std::io::Result<Response> {
        self.request("GET", path, &[], b"")
    }

    pub fn send_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes)
    }

    pub fn read_response(&mut self) -> std::io::Result<Response> {
        read_response(&mut self.reader, false)
    }

    /// Whether the peer closed (EOF or reset) within `timeout`; a read that times out, or
    /// bytes that arrive, mean the connection is still open.
    pub fn is_closed(&mut self, timeout: Duration) -> bool {
        let _ = self.stream.set_read_timeout(Some(timeout));
        let mut b = [0u8; 1];
        match self.reader.read(&mut b) {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) => !matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
        }
    }
}

/// How a mock upstream answers.
#[derive(Debug, Clone)]
pub enum Behaviour {
    /// 200 with a body describing the request: first line, then headers, then the body.
    Echo,
    /// This status with a short body.
    Status(u16),
    /// Waits, then answers like Echo.
    Slow(Duration),
    /// Reads the request and closes the connection without answering.
    Close,
}

/// A request as the mock upstream received it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A threaded HTTP/1.1 upstream on a free port. Stops accepting when dropped.
pub struct MockUpstream {
    pub addr: SocketAddr,
    behaviour: Arc<Mutex<Behaviour>>,
    pub requests: Arc<Mutex<Vec<Recorded>>>,
    count: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl MockUpstream {
    pub fn start(b: Behaviour) -> MockUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind mock upstream");
        Self::serve(listener, b)
    }

    /// Binds a specific address (to bring a dead host back on the same port).
    pub fn start_on(addr: SocketAddr, b: Behaviour) -> MockUpstream {
        let listener = wait_for("the mock port to be free", Duration::from_secs(5), || {
            TcpListener::bind(addr).ok()
        });
        Self::serve(listener, b)
    }

    fn serve(listener: TcpListener, b: Behaviour) -> MockUpstream {
        let addr = listener.local_addr().expect("local addr");
        listener.set_nonblocking(true).expect("nonblocking");
        let m = MockUpstream {
            addr,
            behaviour: Arc::new(Mutex::new(b)),
            requests: Arc::new(Mutex::new(Vec::new())),
            count: Arc::new(AtomicUsize::new(0)),
            stop: Arc::new(AtomicBool::new(false)),
        };
        let (behaviour, requests, count, stop) = (
            m.behaviour.clone(),
            m.requests.clone(),
            m.count.clone(),
            m.stop.clone(),
        );
        thread::spawn(move || {
            while !stop.load(Ordering::Acquire) {
                match listener.accept() {
                    Ok((s, _)) => {
                        let (behaviour, requests, count, stop) = (
                            behaviour.clone(),
                            requests.clone(),
                            count.clone(),
                            stop.clone(),
                        );
                        thread::spawn(move || {
                            let _ = s.set_nonblocking(false);
                            handle_conn(s, behaviour, requests, count, stop)
                        });
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        thread::sleep(Duration::from_millis(2));
                    }
                    Err(_) => break,
                }
            }
        });
        m
    }

    pub fn set(&self, b: Behaviour) {
        *self.behaviour.lock().expect("lock") = b;
    }

    /// Requests received so far.
    pub fn count(&self) -> usize {
        self.count.load(Ordering::SeqCst)
    }

    pub fn last(&self) -> Option<Recorded> {
        self.requests.lock().expect("lock").last().cloned()
    }
}

impl Drop for MockUpstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        // The accept loop polls, so it notices within a few ms; wait until the port is free.
        let addr = self.addr;
        let _ = (0..500).find(|_| {
            thread::sleep(Duration::from_millis(2));
            TcpListener::bind(addr).is_ok()
        });
    }
}

fn handle_conn(
    s: TcpStream,
    behaviour: Arc<Mutex<Behaviour>>,
    requests: Arc<Mutex<Vec<Recorded>>>,
    count: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
) {
    let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
    let mut r = BufReader::new(match s.try_clone() {
        Ok(c) => c,
        Err(_) => return,
    });
    let mut w = s;
    loop {
        // Request line (poll so that a stopped mock closes idle keep-alive connections).
        let mut line = String::new();
        loop {
            match r.read_line(&mut line) {
                Ok(0) => return,
                Ok(_) => break,
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        || e.kind() == std::io::ErrorKind::TimedOut =>
                {
                    if stop.load(Ordering::Acquire) {
                        return;
                    }
                    continue;
                }
                Err(_) => return,
            }
        }
        let _ = w.set_read_timeout(Some(Duration::from_secs(10)));
        let mut parts = line.split_whitespace();
        let method = parts.next().unwrap_or("").to_string();
        let target = parts.next().unwrap_or("").to_string();
        let mut headers = Vec::new();
        loop {
            let mut h = String::new();
            if r.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                headers.push((k.trim().to_string(), v.trim().to_string()));
            }
        }
        let find = |name: &str| {
            headers
                .iter()
                .find(|(k, _): &&(String, String)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.clone())
        };
        let mut body = Vec::new();
        if let Some(n) = find("content-length").and_then(|v| v.parse::<usize>().ok()) {
            body.resize(n, 0);
            if r.read_exact(&mut body).is_err() {
                return;
            }
        } else if find("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
            loop {
                let mut size = String::new();
                if r.read_line(&mut size).unwrap_or(0) == 0 {
                    return;
                }
                let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
                    return;
                };
                if n == 0 {
                    let mut end = String::new();
                    let _ = r.read_line(&mut end);
                    break;
                }
                let mut chunk = vec![0; n + 2];
                if r.read_exact(&mut chunk).is_err() {
                    return;
                }
                body.extend_from_slice(&chunk[..n]);
            }
        }
        let rec = Recorded {
            method,
            target,
            headers,
            body,
        };
        requests.lock().expect("lock").push(rec.clone());
        count.fetch_add(1, Ordering::SeqCst);
        let b = behaviour.lock().expect("lock").clone();
        let (status, payload) = match b {
            Behaviour::Close => {
                let _ = w.shutdown(Shutdown::Both);
                return;
            }
            Behaviour::Status(code) => (code, format!("status {code}\n").into_bytes()),
            Behaviour::Slow(d) => {
                thread::sleep(d);
                (200, echo_body(&rec))
            }
            Behaviour::Echo => (200, echo_body(&rec)),
        };
        let head = format!(
            "HTTP/1.1 {status} X\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n",
            payload.len()
        );
        if w.write_all(head.as_bytes()).is_err() || w.write_all(&payload).is_err() {
            return;
        }
        let _ = w.set_read_timeout(Some(Duration::from_millis(200)));
    }
}

fn echo_body(r: &Recorded) -> Vec<u8> {
    let mut out = format!("{} {}\n", r.method, r.target);
    for (k, v) in &r.headers {
        out.push_str(&format!("{}: {}\n", k.to_ascii_lowercase(), v));
    }
    out.push('\n');
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(&r.body);
    bytes
}

/// The `version` and `server` lines every test config starts with (`Gatehouse::start`
/// fills in the placeholders); more `server:` keys may follow, indented by two spaces.
pub const SERVER: &str = r#"version: 1
server:
  listen: ["LISTEN"]
  admin: { listen: "ADMIN" }
  grace_period: 1s
  pid_file: TMPDIR/gatehouse.pid
  upgrade_sock: TMPDIR/upgrade.sock
"#;

/// A config with one backend pointing at `upstreams` and one catch-all endpoint.
pub fn simple_config(
    upstreams: &[SocketAddr],
    extra_backend: &str,
    extra_endpoint: &str,
) -> String {
    let hosts: Vec<String> = upstreams.iter().map(|a| format!("\"{a}\"")).collect();
    format!(
        r#"{SERVER}backends:
  app:
    discovery: {{ static: [{hosts}] }}
{extra_backend}
endpoints:
  - path: /{{*rest}}
    backend: app
{extra_endpoint}
"#,
        hosts = hosts.join(", ")
    )
}

// --- Redis for `store: redis` tests (issue 6) ---

/// A redis-server of its own on a free loopback port, no persistence; killed on drop. It
/// can be stopped and started again on the same port (a fleet's Redis going away).
pub struct RedisServer {
    pub port: u16,
    child: Option<Child>,
}

impl RedisServer {
    pub fn start() -> RedisServer {
        // a port free a moment ago may be taken by another test's process before
        // redis-server binds it: then it exits, and we try another port
        let mut last = String::new();
        for _ in 0..5 {
            let mut r = RedisServer {
                port: free_port(),
                child: None,
            };
            match r.spawn() {
                Ok(()) => return r,
                Err(e) => last = e,
            }
        }
        panic!("{last}");
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Starts it again on its port and waits until it answers PING.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "already running");
        self.spawn().unwrap_or_else(|e| panic!("{e}"));
    }

    /// Spawns redis-server on `self.port` and waits until this very process answers PING
    /// (a PONG from another test's server on a port taken in between does not count).
    fn spawn(&mut self) -> Result<(), String> {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server on PATH (make test-deps installs it)");
        self.child = Some(child);
        let end = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                self.child = None;
                return Err(format!(
                    "redis-server on port {} exited: {status}",
                    self.port
                ));
            }
            if self.command(&["PING"]).is_ok_and(|r| r == "+PONG") {
                // still ours after answering?
                if let Some(Ok(None)) = self.child.as_mut().map(|c| c.try_wait()) {
                    return Ok(());
                }
            }
            if Instant::now() > end {
                return Err(format!("redis-server on port {} not ready", self.port));
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Kills it and waits until its port refuses connections.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        wait_for("redis-server to be gone", Duration::from_secs(10), || {
            TcpStream::connect(("127.0.0.1", self.port))
                .is_err()
                .then_some(())
        });
    }

    /// Freezes (SIGSTOP) or thaws (SIGCONT) it: connections stay open, nothing answers.
    pub fn pause(&self, on: bool) {
        let pid = self.child.as_ref().expect("running").id().to_string();
        let sig = if on { "-STOP" } else { "-CONT" };
        let ok = Command::new("kill")
            .args([sig, &pid])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill {sig} {pid}");
    }

    /// Sends one command (RESP) and returns the first line of the reply, e.g. `+PONG`,
    /// `$3` + value, `:1`. Enough for PING, GET, FLUSHALL, DBSIZE, KEYS.
    pub fn command(&self, args: &[&str]) -> std::io::Result<String> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        let mut req = format!("*{}\r\n", args.len());
        for a in args {
            req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        s.write_all(req.as_bytes())?;
        let mut r = BufReader::new(s);
        let mut line = String::new();
        r.read_line(&mut line)?;
        let line = line.trim_end().to_string();
        if let Some(n) = line.strip_prefix('$') {
            // bulk string: return its value
            if n == "-1" {
                return Ok(String::new());
            }
            let mut v = String::new();
            r.read_line(&mut v)?;
            return Ok(v.trim_end().to_string());
        }
        Ok(line)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // a paused server dies from SIGKILL all the same
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
