//! Wires the Pingora server: the proxy service on `server.listen`, the admin and demo
//! listeners, and the SIGHUP reload service.

use crate::config::Config;
use crate::proxy::Gatehouse;
use crate::reload::ReloadService;
use crate::runtime::{Runtime, Shared};
use arc_swap::ArcSwap;
use pingora::listeners::{L4BufferSettings, ListenerConfig};
use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::Server;
use pingora::services::background::background_service;
use pingora::services::listening::Service;
use std::path::PathBuf;
use std::sync::Arc;

/// Process-level options from the command line (Pingora's own flags included).
#[derive(Debug, Clone, Default)]
pub struct Options {
    pub config_path: PathBuf,
    pub daemon: bool,
    pub upgrade: bool,
    pub test: bool,
}

/// Pingora's settings derived from our config (restart-only values).
pub fn server_conf(cfg: &Config, opts: &Options) -> ServerConf {
    let s = &cfg.server;
    let pool: usize = cfg
        .backends
        .values()
        .map(|b| b.max_idle_connections)
        .sum::<usize>()
        .max(128);
    ServerConf {
        threads: s.threads,
        work_stealing: s.work_stealing,
        daemon: opts.daemon,
        pid_file: s.pid_file.clone(),
        upgrade_sock: s.upgrade_sock.clone(),
        grace_period_seconds: Some(s.grace_period.as_secs_f64().ceil() as u64),
        graceful_shutdown_timeout_seconds: Some(1),
        upstream_keepalive_pool_size: pool,
        // Pingora's cap on attempts per request, read once at start. Each backend's own
        // `retries` is enforced in `fail_to_connect`, so the cap is the largest value any
        // config may set: a reload that raises a backend's `retries` then takes effect.
        max_retries: crate::config::MAX_RETRIES as usize + 1,
        ..ServerConf::default()
    }
}

/// The buffers of each accepted client connection: `server.listener_buffer` bytes for reads
/// (0 = reads go straight to the socket), Pingora's default for writes (one segment, so a
/// response header and a small body leave in one write).
pub fn listener_buffer(cfg: &Config) -> L4BufferSettings {
    L4BufferSettings {
        read: Some(cfg.server.listener_buffer),
        write: None,
    }
}

/// The HTTP/2 server settings of `server.h2`, on top of Pingora's bounded defaults (its
/// limit on a request's decoded header list is kept).
pub fn h2_options(
    s: &crate::config::H2Settings,
) -> pingora::protocols::http::v2::server::H2Options {
    let mut o = pingora::protocols::http::v2::server::default_h2_options();
    o.max_concurrent_streams(s.max_concurrent_streams)
        .initial_window_size(s.stream_window)
        .initial_connection_window_size(s.connection_window);
    o
}

/// Builds the Pingora server for `cfg` and runs it; never returns.
pub fn run(cfg: Config, opts: Options) -> ! {
    match crate::open_files::apply(cfg.server.max_open_files) {
        Ok(limits) => crate::open_files::log(limits),
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1);
        }
    }
    let conf = server_conf(&cfg, &opts);
    let opt = Opt {
        upgrade: opts.upgrade,
        daemon: opts.daemon,
        nocapture: false,
        test: opts.test,
        conf: None,
    };
    let rt = match Runtime::compile(cfg, None) {
        Ok(rt) => rt,
        Err(errs) => {
            // As `main` reports a file that does not validate: what only compiling finds
            // (a route conflict, an unreadable GeoIP database) is as much the file's error.
            eprintln!("{}: invalid config:", opts.config_path.display());
            for e in &errs.0 {
                eprintln!("  {e}");
            }
            std::process::exit(1);
        }
    };
    crate::metrics::metrics().config_generation.set(1);
    crate::status::mark_started();
    let shared: Shared = Arc::new(ArcSwap::from_pointee(rt));
    let cfg = shared.load_full().config.clone();

    let mut server = Server::new_with_opt_and_conf(opt, conf);
    server.bootstrap();

    // The proxy application, wrapped so that a new connection first has its PROXY header
    // read and, on an HTTPS listener, its TLS handshake run, and each HTTP/1 client stream
    // carries the header read deadline (`server.header_read_timeout`, src/proxy/conn.rs);
    // its HTTP/1 waits (between requests, for the rest of a header) hold no per-request
    // state (src/idle.rs).
    let mut http = pingora::proxy::http_proxy(
        &server.configuration,
        Gatehouse::new(shared.clone(), &server.configuration),
    );
    http.h2_options = Some(h2_options(&cfg.server.h2));
    let tls = cfg.server.tls.as_ref().map(|tls| {
        crate::edge_tls::TlsEdge::new(tls, shared.clone()).unwrap_or_else(|e| {
            eprintln!("server.tls: cannot set up the HTTPS listeners: {e}");
            std::process::exit(1);
        })
    });
    let app = crate::proxy::conn::Edge {
        inner: Arc::new(crate::idle::Lean {
            inner: Arc::new(http),
        }),
        shared: shared.clone(),
        tls,
    };
    let mut proxy = Service::new("gatehouse proxy".to_string(), app);
    let buffer = listener_buffer(&cfg);
    // The HTTPS listeners are TCP listeners to Pingora: `conn::Edge` runs their PROXY
    // protocol and TLS handshake.
    let tls_listen = cfg.server.tls.iter().flat_map(|t| t.listen.iter());
    for addr in cfg.server.listen.iter().chain(tls_listen) {
        proxy.add_listener(ListenerConfig::tcp(addr.to_string()).l4_buffer(buffer));
    }
    server.add_service(proxy);

    if let Some(admin) = cfg.server.admin {
        let admin_app = crate::admin::Admin {
            shared: shared.clone(),
        };
        let mut svc = Service::new("admin".to_string(), admin_app);
        svc.add_tcp(&admin.to_string());
        server.add_service(svc);
    }
    if let Some(demo) = cfg.demo {
        let mut svc = Service::new("demo upstream".to_string(), crate::demo::Demo);
        svc.add_tcp(&demo.to_string());
        server.add_service(svc);
    }
    if let Some(tracing) = cfg.tracing.clone() {
        crate::telemetry::expect();
        server.add_service(background_service(
            "tracing",
            crate::telemetry::TracingService { cfg: tracing },
        ));
    }
    server.add_service(background_service(
        "upstreams",
        crate::upstream::service::UpstreamService {
            backends: upstream_backends(shared.clone()),
        },
    ));
    server.add_service(background_service(
        "redis",
        crate::limits::service::RedisService::new(shared.clone()),
    ));
    server.add_service(background_service(
        "reload",
        ReloadService {
            path: opts.config_path.clone(),
            shared,
        },
    ));
    server.run(pingora::server::RunArgs {
        shutdown_signal: Box::new(crate::signals::Signals),
    });
    std::process::exit(0)
}

/// The backends of the live runtime, for the upstreams' background service.
fn upstream_backends(
    shared: Shared,
) -> Box<dyn Fn() -> crate::upstream::service::Backends + Send + Sync> {
    Box::new(move || {
        let rt = shared.load();
        crate::upstream::service::Backends {
            backends: rt.backends.values().map(|b| b.upstream.clone()).collect(),
            dns: rt.config.dns.clone(),
        }
    })
}
