//! Path normalisation and route matching: never a panic; a normalised path starts with '/',
//! has no empty, "." or ".." segment, and normalising it again changes nothing.
#![no_main]

use gatehouse::routing::{normalize, Match, Router};
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

fn router() -> &'static Router {
    static R: OnceLock<Router> = OnceLock::new();
    R.get_or_init(|| {
        let cfg = gatehouse::config::parse(
            r#"
version: 1
server: { listen: ["127.0.0.1:1"] }
backends: { b: { discovery: { static: ["127.0.0.1:2"] } } }
endpoints:
  - { path: "/public/{*rest}", backend: b }
  - { path: "/admin/{id}", backend: b, methods: [GET] }
  - { path: "/admin/users", backend: b }
  - { path: "/", backend: b }
"#,
        )
        .expect("valid");
        Router::build(&cfg.endpoints).expect("routes")
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(path) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(n) = normalize(path) else {
        return;
    };
    assert!(n.starts_with('/'));
    let inner = n.trim_end_matches('/');
    for seg in inner.split('/').skip(1) {
        assert!(!seg.is_empty() && seg != "." && seg != "..", "{path:?} -> {n:?}");
    }
    let again = normalize(&n).expect("a normalised path normalises");
    assert_eq!(again, n, "normalisation is idempotent");
    if let Match::Found { endpoint, .. } = router().find(&n, &http::Method::GET) {
        // The admin routes are only reachable by a path that really starts with /admin/.
        if endpoint == 1 || endpoint == 2 {
            assert!(n.starts_with("/admin/"), "{path:?} -> {n:?}");
        }
    }
});
