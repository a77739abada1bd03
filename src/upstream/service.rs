//! The one background service of upstreams: each tick it walks the backends of the moment
//! (Pingora services cannot be added after start, and backends come and go with reloads:
//! `UpstreamService::backends` asks the live runtime for them) and starts what is due: a DNS refresh, a round of active health checks. Each runs
//! as its own task so that a slow host or resolver delays nothing else.

use super::backend::Backend;
use super::discovery;
use crate::config::{DnsConfig, HealthCheckConfig};
use async_trait::async_trait;
use log::{info, warn};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::lb::health_check::{HealthCheck, HttpHealthCheck};
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often due work is looked for: the finest `refresh`/`interval` that makes sense.
pub const TICK: Duration = Duration::from_millis(50);

/// The backends to look after now, and the resolver settings of their DNS discovery.
pub struct Backends {
    pub backends: Vec<Arc<Backend>>,
    pub dns: Option<DnsConfig>,
}

pub struct UpstreamService {
    /// Called once per tick: the backends of the current runtime.
    pub backends: Box<dyn Fn() -> Backends + Send + Sync>,
}

#[async_trait]
impl BackgroundService for UpstreamService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut resolver: Option<(Option<DnsConfig>, discovery::Resolver)> = None;
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tick.tick() => {}
            }
            let Backends { backends, dns } = (self.backends)();
            let now = Instant::now();
            for b in &backends {
                if discovery::refresh(&b.cfg.discovery).is_some() && take_discovery(b, now) {
                    let stale = resolver.as_ref().is_none_or(|(c, _)| *c != dns);
                    if stale {
                        match discovery::resolver(dns.as_ref()) {
                            Ok(r) => resolver = Some((dns.clone(), r)),
                            Err(e) => warn!("DNS discovery: {e}"),
                        }
                    }
                    match &resolver {
                        Some((_, r)) => {
                            tokio::spawn(refresh_hosts(b.clone(), r.clone()));
                        }
                        None => finish_discovery(b),
                    }
                }
                if let Some(hc) = &b.cfg.health_check {
                    if take_health(b, now) {
                        tokio::spawn(check_hosts(b.clone(), hc.clone()));
                    }
                }
            }
        }
    }
}

fn take_discovery(b: &Backend, now: Instant) -> bool {
    let mut s = b.lock_schedule();
    if s.discovery_running || now < s.next_discovery {
        return false;
    }
    s.discovery_running = true;
    true
}

fn finish_discovery(b: &Backend) {
    let mut s = b.lock_schedule();
    s.discovery_running = false;
    let every = discovery::refresh(&b.cfg.discovery).unwrap_or(Duration::from_secs(30));
    s.next_discovery = Instant::now() + every;
}

fn take_health(b: &Backend, now: Instant) -> bool {
    let mut s = b.lock_schedule();
    if s.health_running || now < s.next_health {
        return false;
    }
    s.health_running = true;
    true
}

async fn refresh_hosts(b: Arc<Backend>, r: discovery::Resolver) {
    match discovery::discover(&r, &b.cfg.discovery).await {
        Ok(mut found) => {
            found.sort();
            found.dedup_by_key(|(a, _)| *a);
            let current: Vec<(SocketAddr, u32)> =
                b.hosts().hosts.iter().map(|h| (h.addr, h.weight)).collect();
            if current != found {
                info!("backend {:?}: hosts now {}", b.name, show(&found));
                b.set_hosts(found);
            }
            finish_discovery(&b);
        }
        Err(e) => {
            warn!(
                "backend {:?}: discovery failed, keeping {} known host(s): {e}",
                b.name,
                b.hosts().len()
            );
            finish_discovery(&b);
        }
    }
}

fn show(hosts: &[(SocketAddr, u32)]) -> String {
    hosts
        .iter()
        .map(|(a, w)| format!("{a} (weight {w})"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The probe: `GET path` on the host; any 2xx within `timeout` passes.
fn checker(b: &Backend, hc: &HealthCheckConfig) -> Option<HttpHealthCheck> {
    // Host: the backend's `host_header`, else its name.
    let host = b
        .cfg
        .host_header
        .as_ref()
        .and_then(|h| h.to_str().ok())
        .unwrap_or(b.name.as_str());
    let mut check = HttpHealthCheck::new(host, false);
    let mut req = RequestHeader::build("GET", hc.path.as_bytes(), None).ok()?;
    req.insert_header("host", host).ok()?;
    req.insert_header("user-agent", "gatehouse-health-check")
        .ok()?;
    check.req = req;
    // HTTPS backends are probed over TLS, with the same SNI, verification and CA.
    if let Some(t) = &b.cfg.tls {
        super::peer::apply_tls(&mut check.peer_template, t);
    }
    // ... and in the backend's HTTP version.
    super::peer::apply_protocol(&mut check.peer_template, b.cfg.protocol);
    check.peer_template.options.connection_timeout = Some(hc.timeout);
    check.peer_template.options.read_timeout = Some(hc.timeout);
    check.peer_template.options.write_timeout = Some(hc.timeout);
    check.validator = Some(Box::new(|resp: &ResponseHeader| {
        if resp.status.is_success() {
            Ok(())
        } else {
            pingora::Error::e_explain(
                pingora::ErrorType::CustomCode("health check status", resp.status.as_u16()),
                "non-2xx answer",
            )
        }
    }));
    Some(check)
}

async fn check_hosts(b: Arc<Backend>, hc: HealthCheckConfig) {
    if let Some(check) = checker(&b, &hc) {
        let check = Arc::new(check);
        let mut tasks = tokio::task::JoinSet::new();
        for host in b.hosts().hosts.iter() {
            let (check, host, timeout) = (check.clone(), host.clone(), hc.timeout);
            tasks.spawn(async move {
                let ok = match pingora::lb::Backend::new(&host.addr.to_string()) {
                    Ok(target) => matches!(
                        tokio::time::timeout(timeout, check.check(&target)).await,
                        Ok(Ok(()))
                    ),
                    Err(_) => false,
                };
                (host, ok)
            });
        }
        while let Some(res) = tasks.join_next().await {
            let Ok((host, ok)) = res else { continue };
            if let Some(now_ok) = host.health.record_check(ok, &hc) {
                if now_ok {
                    info!("backend {:?}: host {} is healthy again", b.name, host.addr);
                } else {
                    warn!(
                        "backend {:?}: host {} is unhealthy ({} failed checks of {})",
                        b.name, host.addr, hc.unhealthy_after, hc.path
                    );
                }
            }
        }
    } else {
        warn!("backend {:?}: invalid health check path", b.name);
    }
    let mut s = b.lock_schedule();
    s.health_running = false;
    s.next_health = Instant::now() + hc.interval;
}
