//! Service discovery by DNS (hickory-resolver): A/AAAA records of a name on a given port, or
//! SRV records (lowest priority only, their weights kept, targets resolved to A/AAAA).
//! The caller keeps the last good set when a lookup fails or finds nothing.

use crate::config::{Discovery, DnsConfig};
use hickory_resolver::config::{LookupIpStrategy, NameServerConfig, ResolverConfig};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::proto::xfer::Protocol;
use hickory_resolver::TokioResolver;
use std::net::SocketAddr;
use std::time::Duration;

/// A DNS client, cheap to clone (shared inside).
pub type Resolver = TokioResolver;

/// Builds the resolver: the configured nameservers (UDP, then TCP when truncated), or the
/// system's (resolv.conf). No cache: every refresh asks again.
pub fn resolver(cfg: Option<&DnsConfig>) -> Result<Resolver, String> {
    let provider = TokioConnectionProvider::default();
    let mut builder = match cfg {
        Some(c) if !c.nameservers.is_empty() => {
            let mut rc = ResolverConfig::new();
            for ns in &c.nameservers {
                rc.add_name_server(NameServerConfig::new(*ns, Protocol::Udp));
                rc.add_name_server(NameServerConfig::new(*ns, Protocol::Tcp));
            }
            TokioResolver::builder_with_config(rc, provider)
        }
        _ => TokioResolver::builder(provider)
            .map_err(|e| format!("cannot read the system resolver configuration: {e}"))?,
    };
    let o = builder.options_mut();
    o.timeout = cfg.map(|c| c.timeout).unwrap_or(Duration::from_secs(1));
    o.attempts = 1;
    o.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
    o.cache_size = 0;
    o.positive_max_ttl = Some(Duration::ZERO);
    o.negative_max_ttl = Some(Duration::ZERO);
    Ok(builder.build())
}

/// One SRV record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Srv {
    pub priority: u16,
    pub weight: u16,
    pub port: u16,
    pub target: String,
}

/// The records of the lowest priority (RFC 2782: higher priorities are fallbacks).
pub fn lowest_priority(mut records: Vec<Srv>) -> Vec<Srv> {
    let Some(min) = records.iter().map(|r| r.priority).min() else {
        return records;
    };
    records.retain(|r| r.priority == min);
    records.sort_by(|a, b| (&a.target, a.port).cmp(&(&b.target, b.port)));
    records
}

/// Looks the hosts of `d` up: `(address, weight)`. An error or an empty answer is `Err`, so
/// the caller keeps the last good set.
pub async fn discover(r: &Resolver, d: &Discovery) -> Result<Vec<(SocketAddr, u32)>, String> {
    let hosts = match d {
        Discovery::Static(list) => list.iter().map(|a| (*a, 1)).collect(),
        Discovery::Dns { name, port, .. } => r
            .lookup_ip(fqdn(name))
            .await
            .map_err(|e| format!("{name}: {e}"))?
            .iter()
            .map(|ip| (SocketAddr::new(ip, *port), 1))
            .collect(),
        Discovery::DnsSrv { name, .. } => {
            let answer = r
                .srv_lookup(fqdn(name))
                .await
                .map_err(|e| format!("{name}: {e}"))?;
            let records: Vec<Srv> = answer
                .iter()
                .map(|s| Srv {
                    priority: s.priority(),
                    weight: s.weight(),
                    port: s.port(),
                    target: s.target().to_ascii(),
                })
                .collect();
            let mut hosts = Vec::new();
            for s in lowest_priority(records) {
                // Resolve each target (the additional section is not relied upon).
                match r.lookup_ip(s.target.as_str()).await {
                    Ok(ips) => hosts.extend(
                        ips.iter()
                            .map(|ip| (SocketAddr::new(ip, s.port), s.weight as u32)),
                    ),
                    Err(e) => log::warn!("SRV {name}: target {}: {e}", s.target),
                }
            }
            hosts
        }
    };
    if hosts.is_empty() {
        return Err(format!("{}: no hosts in the answer", name_of(d)));
    }
    Ok(hosts)
}

/// Names in the config are absolute: no search-domain expansion.
fn fqdn(name: &str) -> String {
    if name.ends_with('.') {
        name.to_string()
    } else {
        format!("{name}.")
    }
}

fn name_of(d: &Discovery) -> &str {
    match d {
        Discovery::Static(_) => "static",
        Discovery::Dns { name, .. } | Discovery::DnsSrv { name, .. } => name,
    }
}

/// How often `d` is looked up again (`None` for static hosts).
pub fn refresh(d: &Discovery) -> Option<Duration> {
    match d {
        Discovery::Static(_) => None,
        Discovery::Dns { refresh, .. } | Discovery::DnsSrv { refresh, .. } => Some(*refresh),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn srv(priority: u16, weight: u16, target: &str) -> Srv {
        Srv {
            priority,
            weight,
            port: 80,
            target: target.into(),
        }
    }

    #[test]
    fn srv_keeps_the_lowest_priority() {
        let got = lowest_priority(vec![srv(20, 5, "c."), srv(10, 0, "b."), srv(10, 3, "a.")]);
        assert_eq!(got, vec![srv(10, 3, "a."), srv(10, 0, "b.")]);
        assert!(lowest_priority(vec![]).is_empty());
    }

    #[test]
    fn names_are_absolute() {
        assert_eq!(fqdn("catalog.internal"), "catalog.internal.");
        assert_eq!(fqdn("catalog.internal."), "catalog.internal.");
    }
}
