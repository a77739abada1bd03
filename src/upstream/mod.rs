//! Upstreams: backends, their hosts (discovery, health), how one is picked (balance) and the
//! backend's circuit breaker; `service` runs discovery refreshes and health checks.

pub mod backend;
pub mod balance;
pub mod breaker;
pub mod discovery;
pub mod health;
pub mod service;
