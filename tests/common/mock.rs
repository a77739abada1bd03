//! Mock HTTP/1.1 upstreams: each on a port of its own (bound at 0 and held until dropped),
//! answering with an echo of the request, a status, after a delay, or by closing; every
//! request is recorded.

use super::poll::wait_for;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

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
