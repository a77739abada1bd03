//! Connection bursts with default settings: what succeeds straight to an upstream whose
//! accept queue overflows (a backlog of 100, about 1 ms of work per new connection, so the
//! kernel drops SYNs and clients retransmit them after 1 s and 3 s) also succeeds through
//! gatehouse, for WebSocket sessions (the Python `websockets` library on both ends) and
//! plain requests, and a second burst finds the backend's only host still in. And the
//! request budget does not cut a WebSocket tunnel: `timeouts.tunnel_idle` does.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test may panic on what it did not expect

mod common;

use common::{simple_config, Gatehouse};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, ChildStdin, Command, Stdio};

const SCRIPT: &str = "tests/support/burst.py";

/// A burst.py server; stops when its stdin closes (on drop).
struct Upstream {
    addr: SocketAddr,
    child: Child,
    _stdin: ChildStdin,
}

impl Upstream {
    fn start(kind: &str) -> Upstream {
        let mut child = Command::new("python3")
            .args([SCRIPT, kind])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3");
        let stdin = child.stdin.take().unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port: u16 = line.trim().parse().unwrap_or_else(|_| {
            panic!("{kind} printed {line:?} (is the websockets package installed?)")
        });
        Upstream {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            child,
            _stdin: stdin,
        }
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `n` concurrent clients of `kind` against `addr`; returns how many succeeded and the
/// client's report.
fn burst(kind: &str, addr: SocketAddr, n: usize) -> (usize, String) {
    let out = Command::new("python3")
        .args([SCRIPT, kind, &addr.to_string(), &n.to_string()])
        .output()
        .expect("python3");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    let ok = text
        .split("\"ok\": ")
        .nth(1)
        .and_then(|r| r.split(',').next())
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("{kind}: no report in {text:?}"));
    (ok, text)
}

fn through_gatehouse_as_straight(server: &str, client: &str, n: usize) {
    let up = Upstream::start(server);
    let (ok, report) = burst(client, up.addr, n);
    assert_eq!(ok, n, "straight to the upstream: {report}");
    let g = Gatehouse::start(&simple_config(&[up.addr], "", ""));
    for round in ["first", "second"] {
        let (ok, report) = burst(client, g.addr, n);
        assert_eq!(
            ok,
            n,
            "{round} burst through gatehouse: {report}\n{}",
            g.log()
        );
    }
    assert!(!g.log().contains("ejected"), "{}", g.log());
}

#[test]
fn a_websocket_burst_succeeds_as_it_does_straight() {
    through_gatehouse_as_straight("ws-server", "ws-client", 200);
}

#[test]
fn a_burst_of_plain_requests_succeeds_as_it_does_straight() {
    through_gatehouse_as_straight("http-server", "http-client", 300);
}

/// Opens a WebSocket through `g` and checks one echo.
fn ws_open(g: &Gatehouse) -> tungstenite::WebSocket<std::net::TcpStream> {
    let stream = std::net::TcpStream::connect(g.addr).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let (mut ws, resp) = tungstenite::client(format!("ws://{}/ws", g.addr), stream)
        .unwrap_or_else(|e| panic!("handshake: {e}\n{}", g.log()));
    assert_eq!(resp.status(), 101);
    ws.send(tungstenite::Message::text("one")).unwrap();
    assert_eq!(ws.read().unwrap(), tungstenite::Message::text("one"));
    ws
}

#[test]
fn the_budget_does_not_cut_a_tunnel_its_idle_timeout_does() {
    use std::time::Duration;
    let up = Upstream::start("ws-server");
    let budget = Duration::from_millis(200);
    let cfg = simple_config(&[up.addr], "    timeouts: { tunnel_idle: 1500ms }", "").replace(
        "  grace_period: 1s\n",
        "  grace_period: 1s\n  timeout: 200ms\n",
    );
    let g = Gatehouse::start(&cfg);
    // Quiet for three budgets: the tunnel is still there (the idle time is what is tested).
    let mut ws = ws_open(&g);
    std::thread::sleep(budget * 3);
    ws.send(tungstenite::Message::text("two")).unwrap();
    assert_eq!(ws.read().unwrap(), tungstenite::Message::text("two"));
    // Quiet for longer than tunnel_idle: gatehouse closes it.
    let started = std::time::Instant::now();
    let ended = match ws.read() {
        Ok(m) => panic!("unexpected message {m:?}"),
        Err(e) => e,
    };
    let after = started.elapsed();
    assert!(
        after >= Duration::from_millis(1200) && after < Duration::from_secs(9),
        "closed after {after:?}: {ended}"
    );
}
