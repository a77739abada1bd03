//! Upstreams: backends, their hosts (discovery, health), how one is picked (balance) and the
//! backend's circuit breaker; `peer` builds the Pingora peer of an attempt; `service` runs
//! discovery refreshes and health checks.

pub mod backend;
pub mod balance;
pub mod breaker;
pub mod discovery;
pub mod health;
pub mod peer;
pub mod service;
