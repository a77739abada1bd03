//! The compiled snapshot a request runs against: the router, one `Endpoint` per configured
//! endpoint, the backends, and what belongs to no endpoint (client address resolution, the
//! service-wide filters and limits).
//!
//! `compile(config, previous)` builds each piece in its own module (routing, filters,
//! limits, upstream) and assembles them here. It reuses the runtime objects of parts whose
//! config did not change, by stable identity (a backend's name, an endpoint's methods and
//! path, a bot detector's config), so their state survives a reload.

use crate::config::{Config, ConfigError, ConfigErrors};
use crate::filters::bot::BotDetector;
use crate::filters::{Chain, Filters};
use crate::limits::{BackendLimiter, EndpointGate, Limits, RouteLimiter};
use crate::routing::{Rewrite, Router};
use crate::upstream;
use arc_swap::ArcSwap;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// The live runtime, swapped whole on reload.
pub type Shared = Arc<ArcSwap<Runtime>>;

pub struct Runtime {
    pub config: Config,
    pub router: Router,
    /// In the order of `config.endpoints`: the router's matches index it.
    pub endpoints: Vec<Endpoint>,
    pub backends: BTreeMap<String, Backend>,
    /// Client address resolution, the GeoIP database and the service-wide filters.
    pub filters: Filters,
    /// The service-wide rate limit and the Redis of `store: redis` limits.
    pub limits: Limits,
    /// 1 for the first config, +1 for each successful reload.
    pub generation: u64,
}

/// One backend: its hosts (discovery, health, balancing, circuit breaker) and its limits.
pub struct Backend {
    pub upstream: Arc<upstream::backend::Backend>,
    /// `max_concurrent` and the backend's bucket, when it has either.
    pub limiter: Option<Arc<BackendLimiter>>,
}

/// Everything a request routed to one endpoint runs through.
pub struct Endpoint {
    /// The path pattern as written: the `route` label of metrics.
    pub pattern: String,
    pub rewrite: Option<Rewrite>,
    /// The time budget of a request, from its arrival to the upstream's answer.
    pub timeout: Duration,
    /// The endpoint's own filters, checked after the service-wide ones.
    pub filters: Chain,
    /// The endpoint's own rate limit, checked after the service-wide one.
    pub limiter: Option<Arc<RouteLimiter>>,
    /// `max_concurrent`: its in-flight count, checked before the endpoint's rate limit.
    pub gate: Option<Arc<EndpointGate>>,
    /// The backend's hosts and limits: those of its entry in `Runtime::backends`, at hand
    /// without a lookup by name.
    pub backend: Arc<upstream::backend::Backend>,
    pub backend_limiter: Option<Arc<BackendLimiter>>,
    /// Its `gatehouse_requests_total` counters, kept at hand (src/metrics.rs).
    pub requests: crate::metrics::RouteCounters,
}

impl Runtime {
    /// The `store: fleet` shares of every limit, for the heartbeat.
    pub fn fleet_shares(&self) -> Vec<Arc<crate::limits::fleet::FleetShare>> {
        self.limits.fleet_shares(
            self.endpoints.iter().filter_map(|e| e.limiter.as_ref()),
            self.backends.values().filter_map(|b| b.limiter.as_ref()),
        )
    }

    pub fn compile(config: Config, previous: Option<&Runtime>) -> Result<Runtime, ConfigErrors> {
        let router = Router::build(&config.endpoints)?;
        let old_bots = previous.map(Runtime::bot_detectors).unwrap_or_default();
        let mut errs = Vec::new();
        let filters =
            Filters::compile(&config, previous.map(|p| &p.filters), &old_bots, &mut errs)?;
        let limits = Limits::compile(&config, previous.map(|p| &p.limits));
        let backends = backends(&config, previous, &limits);
        let old_limiters = crate::limits::by_ident(
            previous
                .iter()
                .flat_map(|p| p.endpoints.iter().filter_map(|e| e.limiter.as_ref())),
        );
        // In-flight counts survive a reload while the endpoint and its bound are unchanged.
        let old_gates: std::collections::HashMap<String, &Arc<EndpointGate>> = previous
            .iter()
            .flat_map(|p| p.config.endpoints.iter().zip(&p.endpoints))
            .filter_map(|(c, e)| Some((crate::limits::endpoint_ident(c), e.gate.as_ref()?)))
            .collect();
        let mut endpoints = Vec::with_capacity(config.endpoints.len());
        for (i, ep) in config.endpoints.iter().enumerate() {
            let Some(backend) = backends.get(&ep.backend) else {
                let msg = format!("unknown backend {:?}", ep.backend);
                errs.push(ConfigError::new(format!("endpoints[{i}].backend"), msg));
                continue;
            };
            let rewrite = match &ep.rewrite {
                None => None,
                Some(t) => match Rewrite::compile(&ep.path, t) {
                    Ok(r) => Some(r),
                    Err(msg) => {
                        errs.push(ConfigError::new(format!("endpoints[{i}].rewrite"), msg));
                        continue;
                    }
                },
            };
            let path = format!("endpoints[{i}].security");
            endpoints.push(Endpoint {
                requests: crate::metrics::RouteCounters::new(&ep.path),
                pattern: ep.path.clone(),
                rewrite,
                timeout: ep.timeout,
                filters: filters.chain(&path, &ep.security, &old_bots, &mut errs),
                limiter: limits.endpoint(ep, &old_limiters),
                gate: ep.max_concurrent.map(|max| {
                    old_gates
                        .get(&crate::limits::endpoint_ident(ep))
                        .filter(|g| g.max == max)
                        .map(|g| Arc::clone(g))
                        .unwrap_or_else(|| Arc::new(EndpointGate::new(max)))
                }),
                backend: Arc::clone(&backend.upstream),
                backend_limiter: backend.limiter.clone(),
            });
        }
        if !errs.is_empty() {
            return Err(ConfigErrors(errs));
        }
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

    /// Every bot detector of this runtime (service-wide and per endpoint), for reuse.
    fn bot_detectors(&self) -> Vec<&Arc<BotDetector>> {
        let own = self.endpoints.iter().map(|e| &e.filters);
        std::iter::once(&self.filters.service)
            .chain(own)
            .filter_map(|c| c.bot_detector.as_ref())
            .collect()
    }
}

/// The backends of `config`. An unchanged backend keeps its hosts (health, breaker) and a
/// changed one still inherits host health and discovered hosts; an unchanged limit keeps its
/// buckets and in-flight count.
fn backends(
    config: &Config,
    previous: Option<&Runtime>,
    limits: &Limits,
) -> BTreeMap<String, Backend> {
    let mut backends = BTreeMap::new();
    for (name, cfg) in &config.backends {
        let prev = previous.and_then(|p| p.backends.get(name));
        let prev_hosts = prev.map(|b| &b.upstream);
        let upstream = prev_hosts
            .filter(|b| b.cfg == *cfg)
            .cloned()
            .unwrap_or_else(|| {
                let inherit = prev_hosts.map(|b| &**b);
                Arc::new(upstream::backend::Backend::new_after(
                    name,
                    cfg.clone(),
                    inherit,
                ))
            });
        let limiter = limits.backend(name, config, prev.and_then(|b| b.limiter.as_ref()));
        backends.insert(name.clone(), Backend { upstream, limiter });
    }
    backends
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
        let hosts = |rt: &Runtime, name: &str| Arc::clone(&rt.backends[name].upstream);
        assert!(Arc::ptr_eq(&hosts(&first, "a"), &hosts(&second, "a")));
        assert!(!Arc::ptr_eq(&hosts(&first, "b"), &hosts(&second, "b")));
        assert_eq!(second.generation, 2);
        assert!(Arc::ptr_eq(
            &second.endpoints[0].backend,
            &second.backends["a"].upstream
        ));
    }
}
