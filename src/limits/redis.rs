//! The Redis store (`store: redis`): buckets shared by every instance of a fleet, and the
//! heartbeat through which `store: fleet` instances count each other.
//!
//! - Same semantics as the local store: the GCRA of `bucket.rs`, run by a Lua script inside
//!   Redis, so a decision (a block's client bucket, then its shared bucket) is one atomic
//!   round trip. The script is called by EVALSHA and loaded on NOSCRIPT (`redis::Script`).
//! - Time is Redis's own (`TIME` inside the script): instances with skewed clocks agree.
//! - State is the TAT in ns as a decimal string under `gatehouse:<limiter>:<set>[:<client>]`,
//!   expiring (PX) when the bucket is full again, which is when it equals an absent key.
//! - Lua numbers are doubles: the script splits the TAT into seconds and nanoseconds, and
//!   validation keeps every burst window under 2^53 ns (104 days), so it stays exact.
//! - One server, or the master a Sentinel names: `redis::aio::ConnectionManager` (one
//!   multiplexed connection, reconnecting by itself). A Redis Cluster: redis-rs's
//!   `cluster_async::ClusterConnection`, which follows `MOVED`/`ASK` and refreshes its slot
//!   map after a failover; the keys of one decision carry one hash tag (`route.rs`), so its
//!   script runs on one node. After a Sentinel failover the old master refuses writes
//!   (`READONLY`) or is gone: either puts the client down, and the probe asks the Sentinels
//!   for the master again.
//! - TLS is rustls with aws-lc-rs, as the HTTPS listeners' (Pingora's OpenSSL is for HTTPS
//!   upstreams only).
//! - The connection is created lazily (by the first decision or the background service), so
//!   a config naming Redis loads, checks and serves without one. Each decision has
//!   `redis.timeout` as its budget. After a timeout or a connection, TLS or AUTH error,
//!   decisions fail at once (no request waits for a reconnect) while a background probe
//!   PINGs until Redis answers again; they are counted under the kind of that failure.

use super::bucket::{Gcra, Outcome};
use super::local::Key;
use crate::config::limits::{RedisConfig, RedisServers, RedisTls};
use crate::metrics::metrics;
use arc_swap::ArcSwapOption;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster_async::ClusterConnection;
use redis::{IntoConnectionInfo, RedisFuture};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

pub const SCRIPT: &str = r#"
local E = 1000000000
local function split(v)
  local s = tonumber(string.sub(v, 1, -10)) or 0
  local ns = tonumber(string.sub(v, -9)) or 0
  return s, ns
end
local now_s, now_ns
if ARGV[1] ~= "" then
  now_s, now_ns = split(ARGV[1])
else
  local t = redis.call('TIME')
  now_s, now_ns = tonumber(t[1]), tonumber(t[2]) * 1000
end
local out = {}
for i, key in ipairs(KEYS) do
  local interval = tonumber(ARGV[2 * i])
  local burst = tonumber(ARGV[2 * i + 1])
  local debt = 0
  local v = redis.call('GET', key)
  if v then
    local s, ns = split(v)
    debt = (s - now_s) * E + (ns - now_ns)
    if debt < 0 then debt = 0 end
  end
  -- every sum and difference stays within 2^53, where doubles are exact integers
  local room = burst - interval
  if debt > room then
    out[#out + 1] = 0
    out[#out + 1] = debt - room
    return out
  end
  local used = debt + interval
  -- tat = now + used, as seconds and nanoseconds
  local used_s = math.floor(used / E)
  local used_ns = used - used_s * E
  if used_ns < 0 then used_s, used_ns = used_s - 1, used_ns + E end
  local tat_s, tat_ns = now_s + used_s, now_ns + used_ns
  if tat_ns >= E then tat_s, tat_ns = tat_s + 1, tat_ns - E end
  redis.call('SET', key, string.format('%d%09d', tat_s, tat_ns),
    'PX', math.ceil(used / 1000000))
  out[#out + 1] = 1
  out[#out + 1] = used
end
return out
"#;

/// Announces an instance in the sorted set of a `store: fleet` limit (its score: when the
/// announcement expires, Redis's time in ms), drops the expired ones, and counts the rest.
/// The set itself expires with the last announcement. KEYS[1]: the set; ARGV: instance id,
/// time to live in ms. Returns the number of live instances.
pub const HEARTBEAT_SCRIPT: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[2])
redis.call('ZADD', KEYS[1], now + ttl, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('PEXPIRE', KEYS[1], ttl)
return redis.call('ZCARD', KEYS[1])
"#;

/// Why a Redis call failed: the `kind` label of `gatehouse_redis_errors_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreError {
    /// No answer within `redis.timeout`.
    Timeout,
    /// Not connected (refused, dropped, reconnecting, or no runtime to connect from).
    Connection,
    /// Redis answered with an error or an unexpected reply.
    Script,
    /// Redis refused the credentials (`WRONGPASS`, `NOAUTH`).
    Auth,
    /// The TLS handshake failed (certificate, name, protocol).
    Tls,
}

impl StoreError {
    pub fn kind(self) -> &'static str {
        match self {
            StoreError::Timeout => "timeout",
            StoreError::Connection => "connection",
            StoreError::Script => "script",
            StoreError::Auth => "auth",
            StoreError::Tls => "tls",
        }
    }

    fn code(self) -> u8 {
        self as u8
    }

    fn from_code(c: u8) -> StoreError {
        [
            StoreError::Timeout,
            StoreError::Connection,
            StoreError::Script,
            StoreError::Auth,
            StoreError::Tls,
        ]
        .get(usize::from(c))
        .copied()
        .unwrap_or(StoreError::Connection)
    }

    fn of(e: &redis::RedisError) -> StoreError {
        if e.kind() == redis::ErrorKind::AuthenticationFailed
            || matches!(e.code(), Some("NOAUTH" | "WRONGPASS"))
        {
            StoreError::Auth
        } else if is_tls(e) {
            StoreError::Tls
        } else if e.is_timeout() {
            StoreError::Timeout
        } else if e.is_io_error()
            || e.is_connection_dropped()
            || e.is_connection_refusal()
            || e.is_unrecoverable_error()
            // a demoted master (Sentinel failover): ask for the master again
            || e.code() == Some("READONLY")
            || e.is_cluster_error()
        {
            StoreError::Connection
        } else {
            StoreError::Script
        }
    }
}

/// Whether a rustls error is in the chain of `e`.
fn is_tls(e: &redis::RedisError) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if err.downcast_ref::<rustls::Error>().is_some() {
            return true;
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            if io
                .get_ref()
                .is_some_and(|i| i.downcast_ref::<rustls::Error>().is_some())
            {
                return true;
            }
        }
        cur = err.source();
    }
    // errors the client library reports as text only
    let text = e.to_string().to_ascii_lowercase();
    text.contains("invalid peer certificate") || text.contains("handshake") || text.contains("tls")
}

/// How often the background probe PINGs a Redis that failed, and its own budget.
const PROBE_EVERY: Duration = Duration::from_millis(100);
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// Where connections come from.
enum Source {
    One(redis::Client),
    Cluster(redis::cluster::ClusterClient),
    /// Asked for the master's address at each (re)connection.
    Sentinel(tokio::sync::Mutex<redis::sentinel::SentinelClient>),
}

/// A live connection: one server (or the master of a Sentinel) or a cluster.
#[derive(Clone)]
enum Conn {
    One(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a redis::Cmd) -> RedisFuture<'a, redis::Value> {
        match self {
            Conn::One(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<redis::Value>> {
        match self {
            Conn::One(c) => c.req_packed_commands(cmd, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::One(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

/// One Redis (server, cluster or Sentinel-managed master), shared by every limit with
/// `store: redis` and the heartbeat of `store: fleet` (and kept across reloads while the
/// `redis` block is unchanged).
pub struct RedisClient {
    pub cfg: RedisConfig,
    source: Source,
    conn: ArcSwapOption<Conn>,
    /// One connection attempt at a time.
    connecting: tokio::sync::Mutex<()>,
    script: redis::Script,
    heartbeat: redis::Script,
    /// False from a timeout or connection error until the probe gets an answer.
    healthy: AtomicBool,
    /// The `StoreError` that put it down: what the decisions failing over meanwhile count.
    down_kind: AtomicU8,
    probing: AtomicBool,
}

fn certificates(tls: &RedisTls) -> redis::TlsCertificates {
    redis::TlsCertificates {
        client_tls: tls
            .client
            .as_ref()
            .map(|(cert, key)| redis::ClientTlsConfig {
                client_cert: cert.clone(),
                client_key: key.expose().as_bytes().to_vec(),
            }),
        root_cert: tls.ca.clone(),
    }
}

fn tls_mode(tls: &RedisTls) -> redis::TlsMode {
    if tls.verify {
        redis::TlsMode::Secure
    } else {
        redis::TlsMode::Insecure
    }
}

/// A server's connection info: the URL's, with the block's credentials and TLS settings.
fn node_info(cfg: &RedisConfig, url: &str) -> redis::RedisResult<redis::ConnectionInfo> {
    let mut info = url.into_connection_info()?;
    let mut settings = info.redis_settings().clone();
    if let Some(u) = &cfg.username {
        settings = settings.set_username(u);
    }
    if let Some(p) = &cfg.password {
        settings = settings.set_password(p.expose());
    }
    info = info.set_redis_settings(settings);
    if let Some(tls) = &cfg.tls {
        if let redis::ConnectionAddr::TcpTls { host, port, .. } = info.addr().clone() {
            info = info.set_addr(redis::ConnectionAddr::TcpTls {
                host,
                port,
                insecure: !tls.verify,
                tls_params: None,
            });
        }
    }
    Ok(info)
}

fn source(cfg: &RedisConfig) -> redis::RedisResult<Source> {
    // rustls picks its crypto from the process default: aws-lc-rs, the one compiled in
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    Ok(match &cfg.servers {
        RedisServers::One(url) => {
            let info = node_info(cfg, url.expose())?;
            Source::One(match &cfg.tls {
                Some(tls) if matches!(info.addr(), redis::ConnectionAddr::TcpTls { .. }) => {
                    redis::Client::build_with_tls(info, certificates(tls))?
                }
                _ => redis::Client::open(info)?,
            })
        }
        RedisServers::Cluster(urls) => {
            let infos = urls
                .iter()
                .map(|u| node_info(cfg, u.expose()))
                .collect::<redis::RedisResult<Vec<_>>>()?;
            let mut b = redis::cluster::ClusterClientBuilder::new(infos)
                .connection_timeout(CONNECT_TIMEOUT)
                .response_timeout(cfg.timeout.max(PROBE_TIMEOUT))
                .retries(2)
                .min_retry_wait(10)
                .max_retry_wait(100);
            if let Some(u) = &cfg.username {
                b = b.username(u);
            }
            if let Some(p) = &cfg.password {
                b = b.password(p.expose());
            }
            if let Some(tls) = &cfg.tls {
                b = b.tls(tls_mode(tls)).certs(certificates(tls));
            }
            Source::Cluster(b.build()?)
        }
        RedisServers::Sentinel { master, nodes } => {
            let mut addrs = Vec::with_capacity(nodes.len());
            let mut sentinel_auth = None;
            for n in nodes {
                let info = n.expose().into_connection_info()?;
                let s = info.redis_settings();
                if sentinel_auth.is_none() && s.password().is_some() {
                    sentinel_auth = Some((
                        s.username().map(str::to_string),
                        s.password().unwrap_or_default().to_string(),
                    ));
                }
                addrs.push(info.addr().clone());
            }
            let sentinel_tls = addrs
                .iter()
                .any(|a| matches!(a, redis::ConnectionAddr::TcpTls { .. }));
            let mut b = redis::sentinel::SentinelClientBuilder::new(
                addrs,
                master,
                redis::sentinel::SentinelServerType::Master,
            )?;
            if let Some(u) = &cfg.username {
                b = b.set_client_to_redis_username(u);
            }
            if let Some(p) = &cfg.password {
                b = b.set_client_to_redis_password(p.expose());
            }
            if let Some((u, p)) = sentinel_auth {
                if let Some(u) = u {
                    b = b.set_client_to_sentinel_username(u);
                }
                b = b.set_client_to_sentinel_password(p);
            }
            if let Some(tls) = &cfg.tls {
                b = b
                    .set_client_to_redis_tls_mode(tls_mode(tls))
                    .set_client_to_redis_certificates(certificates(tls));
                if sentinel_tls {
                    b = b
                        .set_client_to_sentinel_tls_mode(tls_mode(tls))
                        .set_client_to_sentinel_certificates(certificates(tls));
                }
            }
            Source::Sentinel(tokio::sync::Mutex::new(b.build()?))
        }
    })
}

/// A connection manager whose own response timeout covers the longest budget put on it (a
/// decision's `redis.timeout`, a probe's or a heartbeat's second), as the cluster client's:
/// redis-rs's default of 500 ms would cut a longer `redis.timeout` short. Each call is
/// bounded by its own budget on top of it.
fn manager(client: redis::Client, timeout: Duration) -> redis::RedisResult<ConnectionManager> {
    let cfg = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_response_timeout(Some(timeout.max(PROBE_TIMEOUT)))
        .set_number_of_retries(1)
        .set_min_delay(Duration::from_millis(50))
        .set_max_delay(Duration::from_millis(500));
    ConnectionManager::new_lazy_with_config(client, cfg)
}

impl RedisClient {
    /// Checks the URLs and builds the client; connects nothing.
    pub fn new(cfg: &RedisConfig) -> Result<Arc<RedisClient>, String> {
        let source = source(cfg).map_err(|e| cfg.scrub(&e.to_string()))?;
        Ok(Arc::new(RedisClient {
            cfg: cfg.clone(),
            source,
            conn: ArcSwapOption::empty(),
            connecting: tokio::sync::Mutex::new(()),
            script: redis::Script::new(SCRIPT),
            heartbeat: redis::Script::new(HEARTBEAT_SCRIPT),
            healthy: AtomicBool::new(true),
            down_kind: AtomicU8::new(StoreError::Connection.code()),
            probing: AtomicBool::new(false),
        }))
    }

    /// Whether the servers are a Redis Cluster (the keys of one call must share a slot).
    pub fn is_cluster(&self) -> bool {
        matches!(self.cfg.servers, RedisServers::Cluster(_))
    }

    /// The connection, made on first use from within a tokio runtime (one attempt at a
    /// time); the script is then loaded in the background.
    async fn connection(&self) -> Result<Conn, StoreError> {
        if let Some(c) = self.conn.load_full() {
            return Ok((*c).clone());
        }
        tokio::runtime::Handle::try_current().map_err(|_| StoreError::Connection)?;
        let _one = self.connecting.lock().await;
        if let Some(c) = self.conn.load_full() {
            return Ok((*c).clone());
        }
        let c = match &self.source {
            Source::One(client) => manager(client.clone(), self.cfg.timeout).map(Conn::One),
            Source::Cluster(client) => client.get_async_connection().await.map(Conn::Cluster),
            Source::Sentinel(s) => {
                let client = s.lock().await.async_get_client().await;
                client
                    .and_then(|c| manager(c, self.cfg.timeout))
                    .map(Conn::One)
            }
        };
        let c = c.map_err(|e| {
            let kind = StoreError::of(&e);
            log::debug!("redis {}: {}", self.cfg, self.cfg.scrub(&e.to_string()));
            if kind == StoreError::Script {
                StoreError::Connection
            } else {
                kind
            }
        })?;
        self.conn.store(Some(Arc::new(c.clone())));
        let mut warm = c.clone();
        let script = self.script.clone();
        tokio::spawn(async move {
            let _ = script.prepare_invoke().load_async(&mut warm).await;
        });
        Ok(c)
    }

    /// Connects now if nothing did yet (the background service calls it, so that the first
    /// decisions do not pay for the connection).
    pub async fn warm(&self) {
        if self.conn.load().is_none() {
            let _ = tokio::time::timeout(PROBE_TIMEOUT, self.connection()).await;
        }
    }

    /// Whether decisions currently go to Redis (false while the probe waits for it).
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// The store's state as the admin `/status` shows it: `idle` until the first connection
    /// (made in the background at start), `up` while decisions go to Redis, `down` while they fail
    /// fast and the background probe waits for Redis to answer again.
    pub fn state(&self) -> &'static str {
        if !self.is_healthy() {
            "down"
        } else if self.conn.load().is_none() {
            "idle"
        } else {
            "up"
        }
    }

    /// Takes one token from each bucket in order at Redis's time, stopping at the first
    /// rejection: one round trip. Returns the outcomes of the buckets checked.
    pub async fn take(
        self: &Arc<Self>,
        buckets: &[(&str, &Gcra)],
    ) -> Result<Vec<Outcome>, StoreError> {
        self.take_at(buckets, None).await
    }

    /// `take` at an injected `now` (ns since the Unix epoch) instead of Redis's clock: tests.
    pub async fn take_at(
        self: &Arc<Self>,
        buckets: &[(&str, &Gcra)],
        now: Option<u64>,
    ) -> Result<Vec<Outcome>, StoreError> {
        let r = self.call(buckets, now).await;
        if let Err(e) = r {
            metrics().redis_errors.with_label_values(&[e.kind()]).inc();
            // On a cluster a failure is one slot's (its master failing over): the other
            // slots' decisions go on, and the client finds the new master by itself.
            if e != StoreError::Script && !self.is_cluster() {
                self.mark_down(e);
            }
        }
        r
    }

    async fn call(
        &self,
        buckets: &[(&str, &Gcra)],
        now: Option<u64>,
    ) -> Result<Vec<Outcome>, StoreError> {
        if !self.is_healthy() {
            return Err(StoreError::from_code(
                self.down_kind.load(Ordering::Relaxed),
            ));
        }
        // no runtime to connect from (nor a timer to bound the call)
        tokio::runtime::Handle::try_current().map_err(|_| StoreError::Connection)?;
        let mut inv = self.script.prepare_invoke();
        let mut now_arg = String::new();
        if let Some(n) = now {
            let _ = write!(now_arg, "{n}");
        }
        inv.arg(now_arg);
        for (key, g) in buckets {
            inv.key(*key).arg(g.interval).arg(g.burst);
        }
        let start = Instant::now();
        let reply = tokio::time::timeout(self.cfg.timeout, async {
            let mut conn = self.connection().await?;
            inv.invoke_async::<Vec<i64>>(&mut conn)
                .await
                .map_err(|e| StoreError::of(&e))
        })
        .await;
        metrics()
            .redis_latency
            .observe(start.elapsed().as_secs_f64());
        let flat = match reply {
            Err(_) => return Err(StoreError::Timeout),
            Ok(Err(e)) => return Err(e),
            Ok(Ok(v)) => v,
        };
        outcomes(&flat, buckets).ok_or(StoreError::Script)
    }

    /// One heartbeat of a `store: fleet` limit: announces `instance` under `key` for `ttl`
    /// and returns the number of live instances. Not on the request path; a failure is
    /// counted in `gatehouse_redis_errors_total` and leaves the decisions' health alone.
    pub async fn beat(&self, key: &str, instance: &str, ttl: Duration) -> Result<u64, StoreError> {
        let mut inv = self.heartbeat.prepare_invoke();
        inv.key(key)
            .arg(instance)
            .arg(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1));
        let budget = self.cfg.timeout.max(PROBE_TIMEOUT);
        let r = tokio::time::timeout(budget, async {
            let mut conn = self.connection().await?;
            inv.invoke_async::<u64>(&mut conn)
                .await
                .map_err(|e| StoreError::of(&e))
        })
        .await
        .unwrap_or(Err(StoreError::Timeout));
        if let Err(e) = r {
            metrics().redis_errors.with_label_values(&[e.kind()]).inc();
            if matches!(self.source, Source::Sentinel(_)) && e != StoreError::Script {
                // the master may have moved: ask the Sentinels again next time
                self.conn.store(None);
            }
        }
        r
    }

    /// Withdraws `instance` from `key` (a clean stop: the others take over at once).
    pub async fn leave(&self, key: &str, instance: &str) {
        let mut cmd = redis::cmd("ZREM");
        cmd.arg(key).arg(instance);
        let _ = tokio::time::timeout(PROBE_TIMEOUT, async {
            let mut conn = self.connection().await?;
            cmd.query_async::<i64>(&mut conn)
                .await
                .map_err(|e| StoreError::of(&e))
        })
        .await;
    }

    /// Decisions fail fast from now on, until a background PING gets an answer.
    fn mark_down(self: &Arc<Self>, why: StoreError) {
        self.down_kind.store(why.code(), Ordering::Relaxed);
        self.healthy.store(false, Ordering::Relaxed);
        if self.probing.swap(true, Ordering::AcqRel) {
            return;
        }
        if tokio::runtime::Handle::try_current().is_err() {
            self.probing.store(false, Ordering::Release);
            return;
        }
        let weak: Weak<RedisClient> = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                // a client replaced by a reload stops its probe
                let Some(this) = weak.upgrade() else { return };
                if this.ping().await {
                    this.probing.store(false, Ordering::Release);
                    this.healthy.store(true, Ordering::Relaxed);
                    log::info!("redis {} answers again", this.cfg);
                    return;
                }
                drop(this);
                tokio::time::sleep(PROBE_EVERY).await;
            }
        });
        log::warn!(
            "redis {} failed: limits use on_store_failure ({})",
            self.cfg,
            why.kind()
        );
    }

    /// Whether Redis answers a PING (for a Sentinel's master: the master it names now).
    async fn ping(&self) -> bool {
        if matches!(self.source, Source::Sentinel(_)) {
            self.conn.store(None);
        }
        let ok = tokio::time::timeout(PROBE_TIMEOUT, async {
            let mut c = self.connection().await?;
            let cmd = redis::cmd("PING");
            cmd.query_async::<String>(&mut c)
                .await
                .map_err(|e| StoreError::of(&e))
        })
        .await;
        matches!(ok, Ok(Ok(_)))
    }
}

/// The script's flat reply as outcomes; `None` when it does not have the expected shape
/// (a pair per bucket up to and including the first rejection).
fn outcomes(flat: &[i64], buckets: &[(&str, &Gcra)]) -> Option<Vec<Outcome>> {
    if flat.is_empty() || !flat.len().is_multiple_of(2) || flat.len() / 2 > buckets.len() {
        return None;
    }
    let n = flat.len() / 2;
    let mut out = Vec::with_capacity(n);
    for (i, pair) in flat.chunks_exact(2).enumerate() {
        let value = u64::try_from(pair[1]).ok()?;
        let g = buckets[i].1;
        match pair[0] {
            1 => out.push(g.admitted_debt(value)),
            0 if i + 1 == n => out.push(Gcra::rejected(value)),
            _ => return None,
        }
    }
    if out.last().is_some_and(|o| o.allowed) && n != buckets.len() {
        return None;
    }
    Some(out)
}

/// The Redis key of a client's bucket: the set's prefix and the client key in hex, or, when
/// `client_tag` (a Redis Cluster block without a shared bucket), the client key as the hash
/// tag in front of the prefix, so that clients spread over the cluster's slots.
pub fn client_bucket_key(prefix: &str, key: Key, client_tag: bool) -> String {
    let mut s = String::with_capacity(prefix.len() + 48);
    if client_tag {
        let _ = write!(s, "gatehouse:{{{:016x}{:016x}}}:{prefix}", key[0], key[1]);
    } else {
        s.push_str(prefix);
        let _ = write!(s, "{:016x}{:016x}", key[0], key[1]);
    }
    s
}

/// The hash tag of a limiter on a Redis Cluster: 64 bits of the SHA-256 of its identity, in
/// hex (an identity may hold braces, which would end a tag).
pub fn hash_tag(ident: &str) -> String {
    use sha2::Digest;
    let d = sha2::Sha256::digest(ident.as_bytes());
    let mut s = String::with_capacity(16);
    for b in &d[..8] {
        let _ = write!(s, "{b:02x}");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g() -> Gcra {
        Gcra::new(10, 5, Duration::from_secs(1))
    }

    #[test]
    fn reply_shapes() {
        let g = g();
        let b = [("a", &g), ("b", &g)];
        let both = outcomes(&[1, 100, 1, 200], &b).unwrap();
        assert_eq!(both[0], g.admitted_debt(100));
        assert_eq!(both[1], g.admitted_debt(200));
        let first_rejected = outcomes(&[0, 7], &b).unwrap();
        assert_eq!(first_rejected, [Gcra::rejected(7)]);
        assert_eq!(outcomes(&[1, 100, 0, 9], &b).unwrap()[1], Gcra::rejected(9));
        // malformed: empty, odd, too long, admitted but stopped early, rejection not last
        for bad in [
            &[][..],
            &[1][..],
            &[1, 1, 1, 1, 1, 1][..],
            &[1, 100][..],
            &[0, 1, 1, 1][..],
            &[2, 1][..],
            &[1, -1, 1, 1][..],
        ] {
            assert_eq!(outcomes(bad, &b), None, "{bad:?}");
        }
    }

    #[test]
    fn keys_are_prefixed_and_hex() {
        assert_eq!(
            client_bucket_key("gatehouse:service:client:", [1, 0xff], false),
            "gatehouse:service:client:000000000000000100000000000000ff"
        );
        assert_eq!(
            client_bucket_key("service:client:", [1, 0xff], true),
            "gatehouse:{000000000000000100000000000000ff}:service:client:"
        );
        let t = hash_tag("endpoint * /p/{id}");
        assert_eq!(t.len(), 16);
        assert!(t.bytes().all(|b| b.is_ascii_hexdigit()));
    }
}
