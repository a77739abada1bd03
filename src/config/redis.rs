//! The top-level `redis` block: the Redis that `store: redis` rate limits share. Its URL may
//! hold a password, so it is kept as a `SecretUrl` and printed redacted.

use super::file::Dur;
use super::ConfigError;
use serde::Deserialize;
use std::time::Duration;

/// The top-level `redis:` block, used by limits with `store: redis`.
#[derive(Debug, Clone, Deserialize, PartialEq, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RedisFile {
    /// redis://[user:password@]host:port/db or redis+unix:///path; printed with its password
    /// redacted.
    pub url: super::secret::SecretUrl,
    /// Budget of one decision, round trip included; past it, on_store_failure decides (default
    /// 20ms).
    #[serde(default)]
    pub timeout: Option<Dur>,
}

/// Default budget of one Redis decision.
pub const DEFAULT_REDIS_TIMEOUT: Duration = Duration::from_millis(20);

/// A validated `redis` block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisConfig {
    /// Printed with its password redacted.
    pub url: super::secret::SecretUrl,
    /// Budget of one decision (round trip included); past it, `on_store_failure` decides.
    pub timeout: Duration,
}

/// The `redis` block: a URL the client understands (checked offline: nothing connects
/// before a request needs it) and a positive timeout.
pub(super) fn redis_block(errors: &mut Vec<ConfigError>, r: &RedisFile) -> Option<RedisConfig> {
    let mut ok = true;
    let url = r.url.clone();
    if let Err(err) = ::redis::Client::open(url.expose()) {
        errors.push(ConfigError::new(
            "redis.url",
            format!(
                "\"{url}\" is not a Redis URL: {}",
                url.scrub(&err.to_string())
            ),
        ));
        ok = false;
    }
    let timeout = match r.timeout {
        Some(Dur(d)) if d.is_zero() => {
            errors.push(ConfigError::new("redis.timeout", "must be > 0"));
            ok = false;
            DEFAULT_REDIS_TIMEOUT
        }
        Some(Dur(d)) => d,
        None => DEFAULT_REDIS_TIMEOUT,
    };
    ok.then_some(RedisConfig { url, timeout })
}
