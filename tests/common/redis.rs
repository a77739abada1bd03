//! A redis-server of its own for `store: redis` tests, started on a free loopback port and
//! retried on another when that port was taken; it can be stopped, restarted on the same port,
//! and paused.

use super::poll::wait_for;
use super::ports::{free_port, listeners, Listener};
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

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

    /// Spawns redis-server on `self.port` and waits until this very process listens there and
    /// answers PING (a PONG from another test's server on a port taken in between does not
    /// count: another process listening there is an error).
    fn spawn(&mut self) -> Result<(), String> {
        let mut child = Command::new("redis-server")
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server on PATH (make test-deps installs it)");
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let end = Instant::now() + Duration::from_secs(10);
        let failed = loop {
            if let Ok(Some(status)) = child.try_wait() {
                break format!("redis-server on port {} exited: {status}", self.port);
            }
            match listeners(child.id(), &[addr])[0] {
                Listener::Other => break format!("port {} is another process's", self.port),
                Listener::Us if self.command(&["PING"]).is_ok_and(|r| r == "+PONG") => {
                    self.child = Some(child);
                    return Ok(());
                }
                _ => {}
            }
            if Instant::now() > end {
                break format!("redis-server on port {} not ready", self.port);
            }
            thread::sleep(Duration::from_millis(10));
        };
        let _ = child.kill();
        let _ = child.wait();
        Err(failed)
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
