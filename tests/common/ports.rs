//! Loopback ports for tests: candidate ports, dead addresses that nothing else can take, and
//! which TCP ports a process is really listening on (read from /proc), so a harness can tell
//! its own server from another test's on the same port.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv6Addr, SocketAddr, TcpListener};

/// A port that was free a moment ago on 127.0.0.1. Nothing holds it: another test may bind it
/// before the caller does, so whoever uses it must check that it got the port and retry on
/// another one otherwise (as `Gatehouse::start` and `RedisServer::start` do).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind an ephemeral port")
}

/// An address where connecting is refused and that nothing else can take while the guard
/// lives: a socket bound to it but never listening.
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

/// `n` distinct ports that were free a moment ago on 127.0.0.1 (held together while they are
/// picked, so no two are the same). Released: see `free_port`.
pub fn free_ports(n: usize) -> Vec<u16> {
    let held: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port"))
        .collect();
    held.iter()
        .map(|l| l.local_addr().expect("local address").port())
        .collect()
}

/// Who listens on a TCP address, as far as one process can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    /// A socket of this process listens on it.
    Us,
    /// Another process listens on it (or on a wildcard address with its port), so binding
    /// it fails.
    Other,
    /// Nobody listens on it.
    Nobody,
}

/// Who listens on each of `addrs`, seen from process `pid` (its open sockets and the TCP
/// tables of its network namespace).
pub fn listeners(pid: u32, addrs: &[SocketAddr]) -> Vec<Listener> {
    let ours = socket_inodes(pid);
    let listening = listening_sockets(pid);
    addrs
        .iter()
        .map(|a| {
            let mut on_it = listening
                .iter()
                .filter(|(l, _)| {
                    l.port() == a.port() && (l.ip() == a.ip() || l.ip().is_unspecified())
                })
                .peekable();
            if on_it.peek().is_none() {
                Listener::Nobody
            } else if on_it.any(|(_, inode)| ours.contains(inode)) {
                Listener::Us
            } else {
                Listener::Other
            }
        })
        .collect()
}

/// The inodes of the sockets process `pid` has open.
fn socket_inodes(pid: u32) -> HashSet<u64> {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return HashSet::new();
    };
    fds.flatten()
        .filter_map(|fd| std::fs::read_link(fd.path()).ok())
        .filter_map(|target| {
            let t = target.to_string_lossy().into_owned();
            t.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok()
        })
        .collect()
}

/// Address and inode of every TCP socket in the LISTEN state in the network namespace of
/// `pid`. IPv4-mapped IPv6 addresses are given as IPv4.
fn listening_sockets(pid: u32) -> Vec<(SocketAddr, u64)> {
    let mut out = Vec::new();
    for table in ["tcp", "tcp6"] {
        let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/net/{table}")) else {
            continue;
        };
        // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode ...
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 10 || f[3] != "0A" {
                continue;
            }
            if let (Some(addr), Ok(inode)) = (parse_addr(f[1]), f[9].parse()) {
                out.push((addr, inode));
            }
        }
    }
    out
}

/// `0100007F:1F90` (IPv4) or 32 hex digits and a port (IPv6): the address as the kernel
/// prints it, 32-bit words in host byte order.
fn parse_addr(text: &str) -> Option<SocketAddr> {
    let (ip, port) = text.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let mut bytes = Vec::with_capacity(16);
    for i in (0..ip.len()).step_by(8) {
        let word = u32::from_str_radix(ip.get(i..i + 8)?, 16).ok()?;
        bytes.extend_from_slice(&word.to_ne_bytes());
    }
    let ip = match bytes.len() {
        4 => IpAddr::from(<[u8; 4]>::try_from(bytes).ok()?),
        16 => {
            let v6 = Ipv6Addr::from(<[u8; 16]>::try_from(bytes).ok()?);
            v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4)
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}
