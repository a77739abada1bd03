//! The compiled snapshot a request runs against: router, endpoints, backends.
//!
//! `compile(config, previous)` reuses the runtime objects of parts whose config did not
//! change (by stable identity: a backend's name), so their state survives a reload.

use crate::config::{Config, ConfigErrors};
use crate::routing::{Rewrite, Router};
use crate::upstream::backend::Backend;
use arc_swap::ArcSwap;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// The live runtime, swapped whole on reload.
pub type Shared = Arc<ArcSwap<Runtime>>;

pub struct Runtime {
    pub config: Config,
    pub router: Router,
    pub endpoints: Vec<Endpoint>,
    pub backends: BTreeMap<String, Arc<Backend>>,
    /// Client address resolution and the security chains (service-wide, per endpoint).
    pub filters: crate::filters::Filters,
    /// Rate limits and backend bounds (src/limits); unchanged ones keep their buckets.
    pub limits: crate::limits::Limits,
    /// 1 for the first config, +1 for each successful reload.
    pub generation: u64,
}

pub struct Endpoint {
    /// The path pattern as written: the `route` label of metrics.
    pub pattern: String,
    pub backend: Arc<Backend>,
    pub rewrite: Option<Rewrite>,
    pub timeout: Duration,
    /// Its `gatehouse_requests_total` counters, kept at hand (src/metrics.rs).
    pub requests: crate::metrics::RouteCounters,
}

impl Runtime {
    pub fn compile(config: Config, previous: Option<&Runtime>) -> Result<Runtime, ConfigErrors> {
        let router = Router::build(&config.endpoints)?;
        let mut backends = BTreeMap::new();
        for (name, cfg) in &config.backends {
            let prev = previous.and_then(|p| p.backends.get(name));
            let reused = prev.filter(|b| b.cfg == *cfg).cloned();
            // A changed backend still inherits host health (and discovered hosts).
            let b = reused.unwrap_or_else(|| {
                Arc::new(Backend::new_after(name, cfg.clone(), prev.map(|b| &**b)))
            });
            backends.insert(name.clone(), b);
        }
        let mut endpoints = Vec::with_capacity(config.endpoints.len());
        for (i, ep) in config.endpoints.iter().enumerate() {
            let backend = backends.get(&ep.backend).cloned().ok_or_else(|| {
                crate::config::ConfigError::new(
                    format!("endpoints[{i}].backend"),
                    format!("unknown backend {:?}", ep.backend),
                )
            })?;
            let rewrite = match &ep.rewrite {
                Some(t) => Some(Rewrite::parse(t).map_err(|m| {
                    crate::config::ConfigError::new(format!("endpoints[{i}].rewrite"), m)
                })?),
                None => None,
            };
            endpoints.push(Endpoint {
                requests: crate::metrics::RouteCounters::new(&ep.path),
                pattern: ep.path.clone(),
                backend,
                rewrite,
                timeout: ep.timeout,
            });
        }
        let filters = crate::filters::Filters::compile(&config, previous.map(|p| &p.filters))?;
        let limits = crate::limits::Limits::compile(&config, previous.map(|p| &p.limits));
        Ok(Runtime {
            filters,
            limits,
            config,
            router,
            endpoints,
            backends,
            generation: previous.map(|p| p.generation + 1).unwrap_or(1),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"
version: 1
server: { listen: ["127.0.0.1:0"] }
backends:
  a: { discovery: { static: ["127.0.0.1:9001"] } }
  b: { discovery: { static: ["127.0.0.1:9002"] } }
endpoints:
  - { path: /a, backend: a }
  - { path: /b, backend: b }
"#;

    #[test]
    fn unchanged_backends_keep_their_state() {
        let first = Runtime::compile(crate::config::parse(BASE).unwrap(), None).unwrap();
        let changed = BASE.replace("127.0.0.1:9002", "127.0.0.1:9003");
        let second =
            Runtime::compile(crate::config::parse(&changed).unwrap(), Some(&first)).unwrap();
        assert!(Arc::ptr_eq(&first.backends["a"], &second.backends["a"]));
        assert!(!Arc::ptr_eq(&first.backends["b"], &second.backends["b"]));
        assert_eq!(second.generation, 2);
        assert!(Arc::ptr_eq(
            &second.endpoints[0].backend,
            &second.backends["a"]
        ));
    }
}
