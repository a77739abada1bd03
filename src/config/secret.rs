//! Server URLs that may carry credentials (`redis://user:password@host/0`). The URL is kept
//! whole for connecting, and every way of printing it (Display, Debug, errors, logs) shows
//! it with the password replaced by `***`, so a password never reaches a log, the output of
//! `gatehouse check`, or a metric label.

use std::fmt;

/// A URL whose `Display` and `Debug` redact its credentials; `expose()` is for the client
/// library alone.
#[derive(Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(transparent)]
pub struct SecretUrl(String);

impl SecretUrl {
    pub fn new(url: impl Into<String>) -> SecretUrl {
        SecretUrl(url.into())
    }

    /// The URL as written, password included: pass it to the client library, never print it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Removes the URL's secrets from `text` (e.g. an error message of the client library
    /// that quotes the URL or a piece of it).
    pub fn scrub(&self, text: &str) -> String {
        let mut out = text.replace(&self.0, &redact(&self.0));
        for s in secrets(&self.0) {
            out = out.replace(s, "***");
        }
        out
    }
}

impl schemars::JsonSchema for SecretUrl {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> std::borrow::Cow<'static, str> {
        "SecretUrl".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({ "type": "string" })
    }
}

impl fmt::Display for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&redact(&self.0))
    }
}

impl fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", redact(&self.0))
    }
}

/// The spans of `url` that are secret: the password of the userinfo (the whole userinfo
/// when it has no `:`, since some clients read a lone userinfo as a password), and the
/// values of `password`/`pass` query parameters.
fn secrets(url: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let after_scheme = url.find("://").map(|i| i + 3).unwrap_or(0);
    let rest = &url[after_scheme..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    if let Some(at) = authority.rfind('@') {
        let userinfo = &authority[..at];
        let secret = match userinfo.find(':') {
            Some(colon) => &userinfo[colon + 1..],
            None => userinfo,
        };
        if !secret.is_empty() {
            out.push(secret);
        }
    }
    if let Some(q) = url.find('?') {
        let query = url[q + 1..].split('#').next().unwrap_or("");
        for pair in query.split('&') {
            if let Some((k, v)) = pair.split_once('=') {
                if (k.eq_ignore_ascii_case("password") || k.eq_ignore_ascii_case("pass"))
                    && !v.is_empty()
                {
                    out.push(v);
                }
            }
        }
    }
    out
}

/// `url` with each secret span replaced by `***`.
pub fn redact(url: &str) -> String {
    let mut spans: Vec<(usize, usize)> = secrets(url)
        .into_iter()
        .map(|s| {
            let start = s.as_ptr() as usize - url.as_ptr() as usize;
            (start, start + s.len())
        })
        .collect();
    spans.sort_unstable();
    let mut out = String::with_capacity(url.len());
    let mut at = 0;
    for (start, end) in spans {
        if start < at {
            continue;
        }
        out.push_str(&url[at..start]);
        out.push_str("***");
        at = end;
    }
    out.push_str(&url[at..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted() {
        let cases = [
            ("redis://app:s3cret@h:6379/0", "redis://app:***@h:6379/0"),
            ("rediss://:s3cret@h:6380", "rediss://:***@h:6380"),
            ("redis://s3cret@h/0", "redis://***@h/0"),
            ("redis://h:6379/0", "redis://h:6379/0"),
            ("redis://u:p@ss:w0rd@h/1", "redis://u:***@h/1"),
            (
                "redis+unix:///run/redis.sock?db=1&pass=s3cret",
                "redis+unix:///run/redis.sock?db=1&pass=***",
            ),
            (
                "redis://h/0?password=s3cret#x",
                "redis://h/0?password=***#x",
            ),
            ("not a url", "not a url"),
        ];
        for (url, want) in cases {
            assert_eq!(redact(url), want, "{url}");
            let s = SecretUrl::new(url);
            assert_eq!(s.to_string(), want);
            assert_eq!(format!("{s:?}"), format!("{want:?}"));
            assert_eq!(s.expose(), url);
        }
    }

    #[test]
    fn scrub_removes_the_password_from_any_text() {
        let s = SecretUrl::new("redis://app:hunter2@h:bad/0");
        let msg = "invalid port in redis://app:hunter2@h:bad/0 (hunter2)";
        let got = s.scrub(msg);
        assert!(!got.contains("hunter2"), "{got}");
        assert!(got.contains("redis://app:***@h:bad/0"), "{got}");
    }
}
