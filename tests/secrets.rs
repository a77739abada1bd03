//! A Redis password never leaves the config: not in `gatehouse check`'s errors, nor in the
//! log lines of a Redis outage or a failed reload, nor in the metrics.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test may panic on what it did not expect

mod common;

use common::{dead_addr, get, simple_config, wait_for, Behaviour, Gatehouse, MockUpstream};
use std::process::Command;
use std::time::Duration;

const PASSWORD: &str = "hunter2-Zq8x";

#[test]
fn check_does_not_print_the_password_of_a_malformed_url() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.yaml");
    let up: std::net::SocketAddr = "127.0.0.1:9".parse().unwrap();
    let yaml = format!(
        "{}redis: {{ url: \"redis://app:{PASSWORD}@127.0.0.1:notaport/0\" }}\nrate_limit: {{ max_rate: 5, store: redis }}\n",
        simple_config(&[up], "", "")
    );
    std::fs::write(&path, yaml).unwrap();
    let out = Command::new(common::bin())
        .args(["check", "-c"])
        .arg(&path)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("redis.url"), "{text}");
    assert!(text.contains("redis://app:***@"), "{text}");
    assert!(!text.contains(PASSWORD), "{text}");
}

#[test]
fn an_outage_and_a_bad_reload_log_no_password() {
    let up = MockUpstream::start(Behaviour::Echo);
    let redis = dead_addr();
    let url = format!("redis://app:{PASSWORD}@{}/0", redis.addr);
    let cfg = format!(
        "{}redis: {{ url: \"{url}\", timeout: 50ms }}\nrate_limit: {{ max_rate: 1000, store: redis, on_store_failure: allow }}\n",
        simple_config(&[up.addr], "", "")
    );
    let g = Gatehouse::start(&cfg);
    // Redis refuses: the decision follows on_store_failure and the outage is logged.
    wait_for("the outage to be logged", Duration::from_secs(10), || {
        assert_eq!(get(g.addr, "/x", &[]).status, 200);
        g.log()
            .contains("failed: limits use on_store_failure")
            .then_some(())
    });
    let metrics = g.metrics();
    assert!(
        metrics.contains("gatehouse_redis_errors_total"),
        "{metrics}"
    );
    // A reload with a malformed URL is refused and logged.
    let bad = cfg.replace(&redis.addr.to_string(), "127.0.0.1:notaport");
    assert!(!g.reload(&bad), "a malformed URL is refused");
    let log = g.log();
    assert!(log.contains("redis://app:***@"), "{log}");
    assert!(!log.contains(PASSWORD), "{log}");
    assert!(!metrics.contains(PASSWORD));
    assert!(!g.metrics().contains(PASSWORD));
}
