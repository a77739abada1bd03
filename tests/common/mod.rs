//! Integration-test harness: runs the real gatehouse binary on loopback ports it is seen to
//! own, mock upstreams that answer, echo, stall, fail or close, HTTP/1.1, HTTPS and h2
//! clients, a private CA, and a Redis of its own. Readiness is found by polling, never by
//! sleeping. One file per concern; everything a test uses is re-exported here (TLS under
//! `tls`).

#![allow(dead_code)]

mod client;
mod configs;
mod dns;
mod http2;
mod mock;
mod poll;
mod ports;
mod process;
mod redis;
pub mod tls;
mod ws;

// Each test binary uses a part of the harness.
#[allow(unused_imports)]
pub use self::{
    client::{get, read_response, request, try_get, try_request, Conn, Response},
    configs::{simple_config, SERVER},
    dns::{DnsMode, FakeDns},
    mock::{Behaviour, MockUpstream, Recorded},
    poll::wait_for,
    ports::{dead_addr, free_port, free_ports, listeners, DeadAddr, Listener},
    process::{bin, metric_value, Gatehouse},
    redis::{RedisCluster, RedisSentinel, RedisServer, RedisTlsFiles, SENTINEL_MASTER},
};
