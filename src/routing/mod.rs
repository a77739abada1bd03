//! Routing: the matchit router with per-method dispatch; `normalize` (the path as matched
//! and sent upstream) and `rewrite` (templates of the upstream path).

mod normalize;
mod rewrite;

pub use normalize::normalize;
pub use rewrite::Rewrite;

use crate::config::{ConfigError, ConfigErrors, EndpointConfig};

/// Bit set of the standard methods; `ALL` when an endpoint does not list methods.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MethodSet(u16);

const METHOD_NAMES: [&str; 9] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECT",
];

impl MethodSet {
    pub const ALL: MethodSet = MethodSet(0x1ff);

    fn bit(m: &http::Method) -> u16 {
        METHOD_NAMES
            .iter()
            .position(|n| *n == m.as_str())
            .map(|i| 1u16 << i)
            .unwrap_or(0)
    }

    pub fn from_methods(ms: Option<&Vec<http::Method>>) -> MethodSet {
        match ms {
            None => MethodSet::ALL,
            Some(list) => MethodSet(list.iter().fold(0, |acc, m| acc | Self::bit(m))),
        }
    }

    pub fn contains(self, m: &http::Method) -> bool {
        self.0 & Self::bit(m) != 0
    }

    fn names(self) -> impl Iterator<Item = &'static str> {
        METHOD_NAMES
            .iter()
            .enumerate()
            .filter(move |(i, _)| self.0 & (1 << i) != 0)
            .map(|(_, n)| *n)
    }
}

/// All endpoints sharing one path pattern, dispatched by method.
#[derive(Debug)]
pub struct PathEntry {
    pub pattern: String,
    /// (methods, index into the endpoint list)
    routes: Vec<(MethodSet, usize)>,
    /// Value of the `Allow` header for a 405.
    pub allow: String,
}

pub struct Router {
    inner: matchit::Router<usize>,
    entries: Vec<PathEntry>,
}

pub enum Match<'r, 'p> {
    Found {
        endpoint: usize,
        params: matchit::Params<'r, 'p>,
    },
    MethodNotAllowed {
        allow: &'r str,
    },
    NotFound,
}

impl Router {
    /// Builds the router; conflicting paths or overlapping methods are config errors.
    pub fn build(endpoints: &[EndpointConfig]) -> Result<Router, ConfigErrors> {
        let mut errors = Vec::new();
        let mut entries: Vec<PathEntry> = Vec::new();
        let mut inner = matchit::Router::new();
        for (i, ep) in endpoints.iter().enumerate() {
            let set = MethodSet::from_methods(ep.methods.as_ref());
            if let Some(entry) = entries.iter_mut().find(|e| e.pattern == ep.path) {
                if let Some((_, other)) = entry.routes.iter().find(|(s, _)| s.0 & set.0 != 0) {
                    let overlap =
                        MethodSet(set.0 & entry.routes.iter().fold(0, |a, (s, _)| a | s.0));
                    errors.push(ConfigError::new(
                        format!("endpoints[{i}].methods"),
                        format!(
                            "{} {} already routed by endpoints[{other}]",
                            overlap.names().collect::<Vec<_>>().join(", "),
                            ep.path
                        ),
                    ));
                    continue;
                }
                entry.routes.push((set, i));
                continue;
            }
            if let Err(err) = inner.insert(ep.path.clone(), entries.len()) {
                errors.push(ConfigError::new(
                    format!("endpoints[{i}].path"),
                    format!("{:?} cannot be routed: {err}", ep.path),
                ));
                continue;
            }
            entries.push(PathEntry {
                pattern: ep.path.clone(),
                routes: vec![(set, i)],
                allow: String::new(),
            });
        }
        // `/p/{*rest}` also takes `/p/` and `/p` (an empty remainder; matchit's catch-all needs
        // at least one byte), unless an endpoint routes those paths itself. Otherwise a
        // filter on `/admin/{*rest}` would not cover `/admin/`, which a catch-all route
        // elsewhere would then forward unfiltered.
        // (A catch-all is always last in its pattern, which the insert above checked.)
        for (idx, entry) in entries.iter().enumerate() {
            if let Some(star) = entry.pattern.rfind("/{*") {
                for prefix in [&entry.pattern[..=star], &entry.pattern[..star]] {
                    // An endpoint routing this path itself makes the insert conflict: it wins.
                    if !prefix.is_empty() {
                        let _ = inner.insert(prefix, idx);
                    }
                }
            }
        }
        for entry in &mut entries {
            let all = MethodSet(entry.routes.iter().fold(0, |a, (s, _)| a | s.0));
            entry.allow = all.names().collect::<Vec<_>>().join(", ");
        }
        if errors.is_empty() {
            Ok(Router { inner, entries })
        } else {
            Err(ConfigErrors(errors))
        }
    }

    /// Matches a normalised path and a method.
    pub fn find<'r, 'p>(&'r self, path: &'p str, method: &http::Method) -> Match<'r, 'p> {
        match self.inner.at(path) {
            Ok(m) => {
                let entry = &self.entries[*m.value];
                match entry.routes.iter().find(|(s, _)| s.contains(method)) {
                    Some((_, ep)) => Match::Found {
                        endpoint: *ep,
                        params: m.params,
                    },
                    None => Match::MethodNotAllowed {
                        allow: &entry.allow,
                    },
                }
            }
            Err(_) => Match::NotFound,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn ep(path: &str, methods: Option<&[&str]>) -> EndpointConfig {
        EndpointConfig {
            path: path.into(),
            methods: methods.map(|l| l.iter().map(|m| m.parse().unwrap()).collect()),
            backend: "b".into(),
            rewrite: None,
            timeout: Duration::from_secs(1),
            security: Default::default(),
            rate_limit: None,
            max_concurrent: None,
        }
    }

    /// What an upstream that decodes percent-escapes (all but `%2F`, as gatehouse keeps it)
    /// and then removes dot segments and empty segments makes of a raw path: written
    /// independently of `normalize`, in two plain passes.
    fn reference(raw: &str) -> Option<String> {
        let b = raw.as_bytes();
        let mut dec = Vec::new();
        let mut i = 0;
        while i < b.len() {
            if b[i] == b'%' {
                let h = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
                let v = u8::from_str_radix(h, 16).ok()?;
                if v == b'/' {
                    dec.extend_from_slice(b"%2F");
                } else {
                    dec.push(v);
                }
                i += 3;
            } else {
                dec.push(b[i]);
                i += 1;
            }
        }
        // Decoded bytes need not be UTF-8 (`%AD`); the routes are ASCII, so a lossy view
        // routes the same.
        let dec = String::from_utf8_lossy(&dec);
        let mut out: Vec<&str> = Vec::new();
        for seg in dec.split('/').skip(1) {
            match seg {
                "" | "." => {}
                ".." => {
                    out.pop();
                }
                s => out.push(s),
            }
        }
        // A path ending in a slash or a dot segment names a directory (RFC 3986 5.2.4).
        let dir = matches!(dec.rsplit('/').next(), Some("" | "." | ".."));
        let mut p = format!("/{}", out.join("/"));
        if dir && p.len() > 1 {
            p.push('/');
        }
        Some(p)
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(4096))]
        /// Whatever the encoding tricks, a path lands on the route that an upstream's own
        /// reading of it names (or is refused), and the fast path never skips needed work.
        #[test]
        fn routes_as_the_upstream_reads_the_path(
            parts in proptest::collection::vec(proptest::sample::select(vec![
                "/", "/", "/", "/", ".", "..", "..", "admin", "public", "x", "%2e", "%2E", "%2e%2E", "%2f", "%2F", "%25", "%",
                "%2", "admin", "%61dmin", "%41dmin", "public", "users", "%75sers", "x", ";",
                "\\", "%3B", "%5C",
            ]), 0..12),
        ) {
            let raw = format!("/{}", parts.concat());
            let eps = vec![
                ep("/public/{*rest}", None),
                ep("/admin/{id}", None),
                ep("/admin/users", None),
                ep("/", None),
            ];
            let r = Router::build(&eps).unwrap();
            let Ok(n) = normalize(&raw) else {
                // Refused (400): only a malformed escape may be.
                proptest::prop_assert!(reference(&raw).is_none(), "{} refused", raw);
                return Ok(());
            };
            let want = reference(&raw);
            proptest::prop_assert!(want.is_some(), "{} accepted", raw);
            let want = want.unwrap();
            proptest::prop_assert_eq!(
                hit(&r, &n),
                hit(&r, &want),
                "{} -> {} vs {}", raw, n, want
            );
            proptest::prop_assert_eq!(normalize(&n).unwrap(), n.clone(), "idempotent: {}", raw);
        }
    }

    /// The endpoint a GET of `path` lands on.
    fn hit(r: &Router, path: &str) -> Option<usize> {
        match r.find(path, &http::Method::GET) {
            Match::Found { endpoint, .. } => Some(endpoint),
            _ => None,
        }
    }

    #[test]
    fn most_specific_route_wins() {
        let eps = vec![
            ep("/products/{id}", None),
            ep("/products/new", None),
            ep("/products/{id}/{*rest}", None),
            ep("/{*all}", None),
        ];
        let r = Router::build(&eps).unwrap();
        assert_eq!(hit(&r, "/products/new"), Some(1));
        assert_eq!(hit(&r, "/products/42"), Some(0));
        assert_eq!(hit(&r, "/products/42/a/b"), Some(2));
        assert_eq!(hit(&r, "/other/thing"), Some(3));
    }

    #[test]
    fn a_catch_all_also_takes_its_empty_remainder() {
        let eps = vec![
            ep("/admin/{*rest}", None),
            ep("/{*all}", None),
            ep("/docs/{*rest}", None),
            ep("/docs", None),
        ];
        let r = Router::build(&eps).unwrap();
        // `/admin/` and `/admin` are the admin endpoint's (and its filters'), not the
        // catch-all's.
        assert_eq!(hit(&r, "/admin/"), Some(0));
        assert_eq!(hit(&r, "/admin"), Some(0));
        assert_eq!(hit(&r, "/admin/x"), Some(0));
        assert_eq!(hit(&r, "/administrator"), Some(1));
        assert_eq!(hit(&r, "/"), Some(1));
        // An endpoint that routes the bare prefix itself keeps it.
        assert_eq!(hit(&r, "/docs"), Some(3));
        assert_eq!(hit(&r, "/docs/"), Some(2));
    }

    #[test]
    fn methods_and_allow() {
        let eps = vec![ep("/x", Some(&["GET", "HEAD"])), ep("/x", Some(&["POST"]))];
        let r = Router::build(&eps).unwrap();
        assert!(matches!(
            r.find("/x", &http::Method::POST),
            Match::Found { endpoint: 1, .. }
        ));
        match r.find("/x", &http::Method::DELETE) {
            Match::MethodNotAllowed { allow } => assert_eq!(allow, "GET, HEAD, POST"),
            _ => panic!("expected 405"),
        }
        assert!(matches!(r.find("/y", &http::Method::GET), Match::NotFound));
    }

    #[test]
    fn overlapping_methods_are_errors() {
        let eps = vec![ep("/x", Some(&["GET"])), ep("/x", Some(&["GET", "POST"]))];
        let err = Router::build(&eps).err().unwrap();
        assert_eq!(err.0[0].path, "endpoints[1].methods");
        assert!(err.0[0].message.contains("GET"), "{}", err);
    }

    #[test]
    fn rewrite_templates() {
        let eps = vec![ep("/products/{cat_id}/{*rest}", None)];
        let r = Router::build(&eps).unwrap();
        let Match::Found { params, .. } = r.find("/products/7/a/b", &http::Method::GET) else {
            panic!()
        };
        let rw = Rewrite::compile(
            "/products/{cat_id}/{*rest}",
            "/catalog/category/{cat_id}/{rest}",
        )
        .unwrap();
        let mut out = String::new();
        rw.render(&params, &mut out);
        assert_eq!(out, "/catalog/category/7/a/b");
        let check = |template| Rewrite::compile("/p/{id}", template);
        assert!(check("/q/{nope}").unwrap_err().contains("nope"));
        assert!(check("/q/{id}").is_ok());
        assert!(check("/q/{id").is_err());
        assert!(check("q/{id}").unwrap_err().contains("must start with '/'"));
    }
}
