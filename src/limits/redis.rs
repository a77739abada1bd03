//! The Redis store (`store: redis`): buckets shared by every instance of a fleet.
//!
//! - Same semantics as the local store: the GCRA of `bucket.rs`, run by a Lua script inside
//!   Redis, so a decision (a block's client bucket, then its shared bucket) is one atomic
//!   round trip. The script is called by EVALSHA and loaded on NOSCRIPT (`redis::Script`).
//! - Time is Redis's own (`TIME` inside the script): instances with skewed clocks agree.
//! - State is the TAT in ns as a decimal string under `gatehouse:<limiter>:<set>[:<client>]`,
//!   expiring (PX) when the bucket is full again, which is when it equals an absent key.
//! - Lua numbers are doubles: the script splits the TAT into seconds and nanoseconds, and
//!   validation keeps every burst window under 2^53 ns (104 days), so it stays exact.
//! - The client is `redis::aio::ConnectionManager` (one multiplexed connection, reconnecting
//!   by itself), created lazily on the first decision, so a config naming Redis loads, checks
//!   and serves without one. Each decision has `redis.timeout` as its budget. After a timeout
//!   or a connection error, decisions fail at once (no request waits for a reconnect) while a
//!   background probe PINGs until Redis answers again.

use super::bucket::{Gcra, Outcome};
use super::local::Key;
use crate::config::limits::RedisConfig;
use crate::metrics::metrics;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, Instant};

/// The GCRA of `bucket.rs` over several buckets, in order, stopping at the first rejection
/// (a rejected request changes nothing in that bucket; earlier admissions stand, as in the
/// local store).
///
/// KEYS: bucket keys. ARGV[1]: `now` in ns for tests, or "" for Redis's `TIME`; then
/// `interval, burst` (ns) per key. Returns a flat array, per bucket checked: `1, debt` when
/// admitted (`tat - now` after it), `0, wait` when rejected.
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

/// Why a Redis decision failed: the `kind` label of `gatehouse_redis_errors_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreError {
    /// No answer within `redis.timeout`.
    Timeout,
    /// Not connected (refused, dropped, reconnecting, or no runtime to connect from).
    Connection,
    /// Redis answered with an error or an unexpected reply.
    Script,
}

impl StoreError {
    pub fn kind(self) -> &'static str {
        match self {
            StoreError::Timeout => "timeout",
            StoreError::Connection => "connection",
            StoreError::Script => "script",
        }
    }

    fn of(e: &redis::RedisError) -> StoreError {
        if e.is_timeout() {
            StoreError::Timeout
        } else if e.is_io_error()
            || e.is_connection_dropped()
            || e.is_connection_refusal()
            || e.is_unrecoverable_error()
        {
            StoreError::Connection
        } else {
            StoreError::Script
        }
    }
}

/// How often the background probe PINGs a Redis that failed, and its own budget.
const PROBE_EVERY: Duration = Duration::from_millis(100);
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// One Redis, shared by every limit with `store: redis` (and kept across reloads while the
/// `redis` block is unchanged).
pub struct RedisClient {
    pub cfg: RedisConfig,
    client: redis::Client,
    /// Created on the first decision (it needs the tokio runtime of a request).
    conn: OnceLock<Option<ConnectionManager>>,
    script: redis::Script,
    /// False from a timeout or connection error until the probe gets an answer.
    healthy: AtomicBool,
    probing: AtomicBool,
}

impl RedisClient {
    /// Parses the URL; connects nothing.
    pub fn new(cfg: &RedisConfig) -> Result<Arc<RedisClient>, String> {
        let client =
            redis::Client::open(cfg.url.expose()).map_err(|e| cfg.url.scrub(&e.to_string()))?;
        Ok(Arc::new(RedisClient {
            cfg: cfg.clone(),
            client,
            conn: OnceLock::new(),
            script: redis::Script::new(SCRIPT),
            healthy: AtomicBool::new(true),
            probing: AtomicBool::new(false),
        }))
    }

    /// The connection manager, created (lazily connecting) on first use from within a tokio
    /// runtime; the connection and the script are then warmed up in the background.
    fn conn(&self) -> Option<ConnectionManager> {
        if let Some(c) = self.conn.get() {
            return c.clone();
        }
        tokio::runtime::Handle::try_current().ok()?;
        self.conn
            .get_or_init(|| {
                let cfg = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(Duration::from_secs(1)))
                    .set_number_of_retries(1)
                    .set_min_delay(Duration::from_millis(50))
                    .set_max_delay(Duration::from_millis(500));
                let m = ConnectionManager::new_lazy_with_config(self.client.clone(), cfg).ok()?;
                let mut warm = m.clone();
                let script = self.script.clone();
                tokio::spawn(async move {
                    let _ = script.prepare_invoke().load_async(&mut warm).await;
                });
                Some(m)
            })
            .clone()
    }

    /// Whether decisions currently go to Redis (false while the probe waits for it).
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// The store's state as the admin `/status` shows it: `idle` before the first decision
    /// (nothing has connected yet), `up` while decisions go to Redis, `down` while they fail
    /// fast and the background probe waits for Redis to answer again.
    pub fn state(&self) -> &'static str {
        if !self.is_healthy() {
            "down"
        } else if self.conn.get().is_none() {
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
            if e != StoreError::Script {
                self.mark_down();
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
            return Err(StoreError::Connection);
        }
        let mut conn = self.conn().ok_or(StoreError::Connection)?;
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
        let reply =
            tokio::time::timeout(self.cfg.timeout, inv.invoke_async::<Vec<i64>>(&mut conn)).await;
        metrics()
            .redis_latency
            .observe(start.elapsed().as_secs_f64());
        let flat = match reply {
            Err(_) => return Err(StoreError::Timeout),
            Ok(Err(e)) => return Err(StoreError::of(&e)),
            Ok(Ok(v)) => v,
        };
        outcomes(&flat, buckets).ok_or(StoreError::Script)
    }

    /// Decisions fail fast from now on, until a background PING gets an answer.
    fn mark_down(self: &Arc<Self>) {
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
                    log::info!("redis {} answers again", this.cfg.url);
                    return;
                }
                drop(this);
                tokio::time::sleep(PROBE_EVERY).await;
            }
        });
        log::warn!("redis {} failed: limits use on_store_failure", self.cfg.url);
    }

    async fn ping(&self) -> bool {
        let Some(mut c) = self.conn() else {
            return false;
        };
        let cmd = redis::cmd("PING");
        let ping = cmd.query_async::<String>(&mut c);
        matches!(tokio::time::timeout(PROBE_TIMEOUT, ping).await, Ok(Ok(_)))
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

/// The Redis key of a client's bucket: the set's prefix and the client key in hex.
pub fn client_bucket_key(prefix: &str, key: Key) -> String {
    let mut s = String::with_capacity(prefix.len() + 32);
    s.push_str(prefix);
    let _ = write!(s, "{:016x}{:016x}", key[0], key[1]);
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
            client_bucket_key("gatehouse:service:client:", [1, 0xff]),
            "gatehouse:service:client:000000000000000100000000000000ff"
        );
    }
}
