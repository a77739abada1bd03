//! A redis-server of its own for `store: redis` tests, started on a free loopback port and
//! retried on another when that port was taken; it can be stopped, restarted on the same port,
//! and paused. Also with a TLS port beside its plain one (the test's own commands stay in
//! the clear), as a node of a Redis Cluster (`RedisCluster`: three masters, three replicas),
//! or as the master, replica and Sentinel of a Sentinel setup (`RedisSentinel`).

use super::poll::wait_for;
use super::ports::{free_port, free_ports, listeners, Listener};
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// A redis-server of its own on a free loopback port, no persistence; killed on drop. It
/// can be stopped and started again on the same port (a fleet's Redis going away).
pub struct RedisServer {
    pub port: u16,
    /// The TLS port, when started with TLS.
    pub tls_port: Option<u16>,
    /// More arguments of redis-server (after the port's).
    args: Vec<String>,
    child: Option<Child>,
    /// Its working directory (a replica's RDB lands there, not in the checkout).
    dir: tempfile::TempDir,
}

/// The files of a TLS redis-server: its certificate and key, and the CA of its clients.
pub struct RedisTlsFiles<'a> {
    pub cert: &'a Path,
    pub key: &'a Path,
    pub ca: &'a Path,
    /// Whether clients must show a certificate.
    pub client_certs: bool,
}

impl RedisServer {
    pub fn start() -> RedisServer {
        Self::start_with(|_| Vec::new(), None)
    }

    /// Started with more arguments, `args(port)` (e.g. ACL users, cluster mode), and a TLS
    /// port with `tls`.
    pub fn start_with(
        args: impl Fn(u16) -> Vec<String>,
        tls: Option<&RedisTlsFiles>,
    ) -> RedisServer {
        // a port free a moment ago may be taken by another test's process before
        // redis-server binds it: then it exits, and we try another port
        let mut last = String::new();
        for _ in 0..5 {
            let ports = free_ports(2);
            let mut extra = args(ports[0]);
            let tls_port = tls.map(|t| {
                extra.extend(
                    [
                        "--tls-port",
                        &ports[1].to_string(),
                        "--tls-cert-file",
                        &t.cert.display().to_string(),
                        "--tls-key-file",
                        &t.key.display().to_string(),
                        "--tls-ca-cert-file",
                        &t.ca.display().to_string(),
                        "--tls-auth-clients",
                        if t.client_certs { "yes" } else { "no" },
                    ]
                    .map(String::from),
                );
                ports[1]
            });
            let mut r = RedisServer {
                port: ports[0],
                tls_port,
                args: extra,
                child: None,
                dir: tempfile::tempdir().expect("tempdir"),
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

    /// `rediss://[userinfo@]127.0.0.1:<tls port>/0`.
    pub fn tls_url(&self, userinfo: &str) -> String {
        let at = if userinfo.is_empty() { "" } else { "@" };
        format!(
            "rediss://{userinfo}{at}127.0.0.1:{}/0",
            self.tls_port.expect("started with TLS")
        )
    }

    /// The server's pid (to kill it as a failover test does).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// The full reply of a command, as redis-cli prints it (multi-line replies whole).
    pub fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(["-p", &self.port.to_string()])
            .args(args)
            .output()
            .expect("redis-cli on PATH (make test-deps installs it)");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The `calls` of a command in `INFO commandstats` (0 when never called).
    pub fn calls(&self, command: &str) -> u64 {
        let info = self.cli(&["INFO", "commandstats"]);
        let prefix = format!("cmdstat_{}:calls=", command.to_ascii_lowercase());
        info.lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .and_then(|rest| rest.split(',').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
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
        // a config file (a Sentinel's) comes first
        let (conf, rest) = match self.args.first() {
            Some(a) if !a.starts_with("--") => (Some(a), &self.args[1..]),
            _ => (None, &self.args[..]),
        };
        let mut child = Command::new("redis-server")
            .args(conf)
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .args(rest)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server on PATH (make test-deps installs it)");
        let mut addrs = vec![SocketAddr::from(([127, 0, 0, 1], self.port))];
        if let Some(p) = self.tls_port {
            addrs.push(SocketAddr::from(([127, 0, 0, 1], p)));
        }
        let end = Instant::now() + Duration::from_secs(10);
        let failed = loop {
            if let Ok(Some(status)) = child.try_wait() {
                break format!("redis-server on port {} exited: {status}", self.port);
            }
            let who = listeners(child.id(), &addrs);
            if who.contains(&Listener::Other) {
                break format!("a port of {addrs:?} is another process's");
            }
            match who[0] {
                Listener::Us
                    if who.iter().all(|w| *w == Listener::Us)
                        && self.command(&["PING"]).is_ok_and(|r| r == "+PONG") =>
                {
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

/// A Redis Cluster of its own: three masters with a replica each, on free ports (cluster bus
/// ports too), failing a master over after one second without it.
pub struct RedisCluster {
    pub nodes: Vec<RedisServer>,
    _dir: tempfile::TempDir,
}

impl RedisCluster {
    pub fn start() -> RedisCluster {
        Self::start_with(None)
    }

    /// With `tls`, each node also has a TLS port, and the nodes talk TLS to each other.
    pub fn start_with(tls: Option<&RedisTlsFiles>) -> RedisCluster {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path().display().to_string();
        let nodes: Vec<RedisServer> = (0..6)
            .map(|_| {
                RedisServer::start_with(
                    |port| {
                        vec![
                            "--cluster-enabled".into(),
                            "yes".into(),
                            "--cluster-config-file".into(),
                            format!("nodes-{port}.conf"),
                            "--cluster-node-timeout".into(),
                            "1000".into(),
                            // replicas in sync at once (a replica that never synced cannot
                            // take over its master)
                            "--repl-diskless-sync-delay".into(),
                            "0".into(),
                            "--cluster-port".into(),
                            free_port().to_string(),
                            "--dir".into(),
                            d.clone(),
                        ]
                    },
                    tls,
                )
            })
            .collect();
        let addrs: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let out = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addrs)
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .output()
            .expect("redis-cli on PATH");
        assert!(
            out.status.success(),
            "cluster create: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let c = RedisCluster { nodes, _dir: dir };
        c.wait_ok();
        c
    }

    /// Waits until every node says the cluster is ok, knows three masters with slots, and
    /// every replica is in sync with its master.
    pub fn wait_ok(&self) {
        wait_for("the cluster to be ok", Duration::from_secs(30), || {
            self.nodes
                .iter()
                .all(|n| {
                    let role = n.cli(&["INFO", "replication"]);
                    n.cli(&["CLUSTER", "INFO"]).contains("cluster_state:ok")
                        && n.cli(&["CLUSTER", "NODES"])
                            .lines()
                            .filter(|l| l.contains("master") && l.split(' ').count() > 8)
                            .count()
                            == 3
                        && (role.contains("role:master") || role.contains("master_link_status:up"))
                })
                .then_some(())
        });
    }

    /// Seed URLs of the nodes (plain, or TLS with `tls`).
    pub fn urls(&self, tls: bool) -> Vec<String> {
        self.nodes
            .iter()
            .map(|n| if tls { n.tls_url("") } else { n.url() })
            .collect()
    }

    /// The slot of a key.
    pub fn slot(&self, key: &str) -> u16 {
        self.nodes[0]
            .cli(&["CLUSTER", "KEYSLOT", key])
            .trim()
            .parse()
            .expect("a slot")
    }

    /// The index (in `nodes`) of the master that serves `slot` now (none while it fails
    /// over).
    pub fn master_of(&self, slot: u16) -> Option<usize> {
        let live = self
            .nodes
            .iter()
            .find(|n| n.pid().is_some())
            .expect("a live node");
        for line in live.cli(&["CLUSTER", "NODES"]).lines() {
            let f: Vec<&str> = line.split(' ').collect();
            if f.len() < 9 || !f[2].contains("master") || f[2].contains("fail") {
                continue;
            }
            let serves = f[8..].iter().any(|r| match r.split_once('-') {
                Some((a, b)) => {
                    a.parse::<u16>().is_ok_and(|a| a <= slot)
                        && b.parse::<u16>().is_ok_and(|b| slot <= b)
                }
                None => r.parse::<u16>().is_ok_and(|s| s == slot),
            });
            if serves {
                let port: u16 = f[1]
                    .split('@')
                    .next()
                    .and_then(|a| a.rsplit(':').next())
                    .and_then(|p| p.parse().ok())
                    .expect("node address");
                return self.nodes.iter().position(|n| n.port == port);
            }
        }
        None
    }

    /// Every key the masters hold, as (slot, key).
    pub fn keys(&self) -> Vec<(u16, String)> {
        let mut out = Vec::new();
        for n in self.nodes.iter().filter(|n| n.pid().is_some()) {
            if !n.cli(&["ROLE"]).starts_with("master") {
                continue;
            }
            for k in n.cli(&["KEYS", "*"]).lines().filter(|k| !k.is_empty()) {
                out.push((self.slot(k), k.to_string()));
            }
        }
        out
    }

    /// The sum of a command's calls over the live nodes.
    pub fn calls(&self, command: &str) -> u64 {
        self.nodes
            .iter()
            .filter(|n| n.pid().is_some())
            .map(|n| n.calls(command))
            .sum()
    }
}

/// A master, its replica and one Sentinel (quorum 1) that fails the master over half a
/// second after it stops answering.
pub struct RedisSentinel {
    pub master: RedisServer,
    pub replica: RedisServer,
    pub sentinel: RedisServer,
    _dir: tempfile::TempDir,
}

pub const SENTINEL_MASTER: &str = "gatehouse-test";

impl RedisSentinel {
    pub fn start() -> RedisSentinel {
        let dir = tempfile::tempdir().expect("tempdir");
        let master = RedisServer::start();
        let mport = master.port;
        let replica = RedisServer::start_with(
            |_| vec!["--replicaof".into(), "127.0.0.1".into(), mport.to_string()],
            None,
        );
        let conf: PathBuf = dir.path().join("sentinel.conf");
        let sentinel = RedisServer::start_with(
            |port| {
                std::fs::write(
                    &conf,
                    format!(
                        "port {port}\nbind 127.0.0.1\ndir {}\n\
                         sentinel monitor {SENTINEL_MASTER} 127.0.0.1 {mport} 1\n\
                         sentinel down-after-milliseconds {SENTINEL_MASTER} 500\n\
                         sentinel failover-timeout {SENTINEL_MASTER} 2000\n",
                        dir.path().display()
                    ),
                )
                .expect("write sentinel.conf");
                vec![conf.display().to_string(), "--sentinel".into()]
            },
            None,
        );
        wait_for("the replica to be in sync", Duration::from_secs(20), || {
            replica
                .cli(&["INFO", "replication"])
                .contains("master_link_status:up")
                .then_some(())
        });
        RedisSentinel {
            master,
            replica,
            sentinel,
            _dir: dir,
        }
    }

    /// The port of the master the Sentinel names now.
    pub fn master_port(&self) -> u16 {
        let out = self
            .sentinel
            .cli(&["SENTINEL", "get-master-addr-by-name", SENTINEL_MASTER]);
        out.lines()
            .nth(1)
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or(0)
    }
}
