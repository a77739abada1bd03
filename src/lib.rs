//! gatehouse: an edge proxy on Pingora. The library holds everything; `main.rs` wires the
//! Pingora server. Tests and benches build parts of the proxy in-process from here.

#![forbid(unsafe_code)]

pub mod access_log;
pub mod admin;
pub mod clock;
pub mod config;
pub mod demo;
pub mod edge_tls;
pub mod filters;
pub mod grpc;
pub mod idle;
pub mod limits;
pub mod metrics;
pub mod open_files;
pub mod proxy;
pub mod proxy_protocol;
pub mod reject;
pub mod reload;
pub mod request_id;
pub mod routing;
pub mod runtime;
pub mod server;
pub mod signals;
pub mod status;
pub mod telemetry;
pub mod tls;
pub mod upstream;
