//! The admin listener's `/status` and its page, read in a headless Chromium; the shipped
//! Grafana dashboard and Prometheus alerts use only metrics that `/metrics` serves.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test may panic on what it did not expect

mod common;

use common::{dead_addr, get, wait_for, Behaviour, Gatehouse, MockUpstream, SERVER};
use serde_json::Value;
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// One healthy backend (`app`), one whose only host refuses connections behind a breaker
/// that opens after two failures (`broken`), and a Redis that is not there, used by the
/// rate limit of `/limited`.
fn config(app: SocketAddr, dead: SocketAddr, redis: SocketAddr) -> String {
    format!(
        r#"{SERVER}redis: {{ url: "redis://:s3cret@{redis}/0", timeout: 200ms }}
backends:
  app:
    discovery: {{ static: ["{app}"] }}
  broken:
    discovery: {{ static: ["{dead}"] }}
    retries: 0
    circuit_breaker: {{ max_errors: 1, interval: 1m, timeout: 1m }}
endpoints:
  - {{ path: /broken, backend: broken }}
  - path: /limited
    backend: app
    rate_limit: {{ max_rate: 100, store: redis, on_store_failure: allow }}
  - {{ path: "/{{*rest}}", backend: app }}
"#
    )
}

fn status(g: &Gatehouse) -> Value {
    let r = get(g.admin, "/status", &[]);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    serde_json::from_slice(&r.body).expect("/status is JSON")
}

fn backend<'a>(s: &'a Value, name: &str) -> &'a Value {
    s["backends"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["name"] == name)
        .unwrap_or_else(|| panic!("no backend {name} in {s:#}"))
}

/// Two refused connects to `broken`; the breaker opens as the second request ends, which
/// may be just after its answer reached the client.
fn open_the_breaker(g: &Gatehouse) {
    for _ in 0..2 {
        assert_eq!(get(g.addr, "/broken", &[]).status, 502);
    }
    wait_for("the breaker to open", Duration::from_secs(5), || {
        (backend(&status(g), "broken")["breaker"] == "open").then_some(())
    });
}

#[test]
fn status_shows_backends_breakers_in_flight_reloads_and_redis() {
    let app = MockUpstream::start(Behaviour::Echo);
    let dead = dead_addr();
    let redis = dead_addr();
    let yaml = config(app.addr, dead.addr, redis.addr);
    let g = Gatehouse::start(&yaml);

    let s = status(&g);
    assert_eq!(s["config_generation"], 1);
    assert_eq!(s["last_reload"], Value::Null);
    assert!(s["started_at"].as_str().unwrap().ends_with('Z'), "{s:#}");
    let a = backend(&s, "app");
    assert_eq!(a["breaker"], Value::Null, "no breaker configured");
    assert_eq!(a["in_flight"], 0);
    assert_eq!(a["hosts"][0]["address"], app.addr.to_string());
    assert_eq!(a["hosts"][0]["health"], "healthy");
    assert_eq!(backend(&s, "broken")["breaker"], "closed");
    let url = s["redis"]["url"].as_str().unwrap();
    assert!(!url.contains("s3cret"), "password shown: {url}");
    assert!(
        url.contains(&redis.addr.to_string()),
        "the server is named: {url}"
    );
    // The connection is made in the background at start: idle until it is, then up.
    let state = s["redis"]["state"].as_str().unwrap_or_default().to_string();
    assert!(state == "idle" || state == "up", "redis state {state}");

    // Two refused connects open the breaker.
    open_the_breaker(&g);
    assert_eq!(get(g.addr, "/broken", &[]).status, 503);

    // A decision Redis cannot take marks the store down.
    assert_eq!(get(g.addr, "/limited", &[]).status, 200);
    assert_eq!(status(&g)["redis"]["state"], "down");
    let idle = || (backend(&status(&g), "app")["in_flight"] == 0).then_some(());
    // The count drops as the request's context is dropped, just after its answer.
    wait_for("no request in flight", Duration::from_secs(5), idle);

    // A request held by a slow upstream is in flight until it ends.
    app.set(Behaviour::Slow(Duration::from_secs(2)));
    let addr = g.addr;
    let slow = std::thread::spawn(move || get(addr, "/slow", &[]).status);
    wait_for(
        "the request to be in flight",
        Duration::from_secs(5),
        || (backend(&status(&g), "app")["in_flight"] == 1).then_some(()),
    );
    assert_eq!(slow.join().unwrap(), 200);
    wait_for("no request in flight", Duration::from_secs(5), idle);

    // Reloads: a broken file is reported with its error, then a good one with its generation.
    assert!(!g.reload(&yaml.replace("retries: 0", "retries: many")));
    let s = status(&g);
    assert_eq!(s["last_reload"]["result"], "error");
    let err = s["last_reload"]["error"].as_str().unwrap();
    assert!(err.contains("backends.broken.retries"), "{err}");
    assert_eq!(s["config_generation"], 1);
    assert!(g.reload(&yaml.replace("retries: 0", "retries: 1")));
    let s = status(&g);
    assert_eq!(s["last_reload"]["result"], "ok");
    assert_eq!(s["last_reload"]["generation"], 2);
    assert_eq!(s["last_reload"]["error"], Value::Null);
    assert_eq!(s["config_generation"], 2);
}

/// Where Chromium is: Debian's package installs `chromium` (`make test-deps`).
fn chromium() -> &'static str {
    for name in ["chromium", "chromium-browser"] {
        let found = Command::new(name)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if found {
            return name;
        }
    }
    panic!(
        "Chromium is needed for this test: `make test-deps` installs it (apt-get install chromium)"
    );
}

/// The DOM of `url` once its scripts have run, as headless Chromium renders it.
fn dump_dom(url: &str) -> String {
    let profile = tempfile::tempdir().unwrap();
    let out = tempfile::NamedTempFile::new().unwrap();
    let mut child = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--virtual-time-budget=10000",
            "--dump-dom",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(url)
        .stdout(out.reopen().unwrap())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromium");
    let end = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > end {
            let _ = child.kill();
            panic!("chromium did not finish within 60s");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "chromium failed: {status}");
    std::fs::read_to_string(out.path()).unwrap()
}

#[test]
fn the_status_page_shows_hosts_and_breakers_in_a_browser() {
    let app = MockUpstream::start(Behaviour::Echo);
    let dead = dead_addr();
    let redis = dead_addr();
    let g = Gatehouse::start(&config(app.addr, dead.addr, redis.addr));
    open_the_breaker(&g);

    let r = get(g.admin, "/", &[]);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"));
    let html = r.text();
    for external in ["src=", "http://", "https://", "@import", "url("] {
        assert!(!html.contains(external), "the page loads {external:?}");
    }

    let dom = dump_dom(&format!("http://{}/", g.admin));
    // The script filled the table in: each backend's row, its breaker and its host.
    let row = |name: &str| {
        let start = dom
            .find(&format!("<tr data-backend=\"{name}\">"))
            .unwrap_or_else(|| panic!("no row for {name} in:\n{dom}"));
        let end = dom[start..].find("</tr>").unwrap() + start;
        dom[start..end].to_string()
    };
    let broken = row("broken");
    assert!(broken.contains("<td class=\"open\">open</td>"), "{broken}");
    assert!(
        broken.contains(&format!("<td>{}</td>", dead.addr)),
        "{broken}"
    );
    let healthy = row("app");
    assert!(
        healthy.contains(&format!("<td>{}</td>", app.addr)),
        "{healthy}"
    );
    assert!(
        healthy.contains("<td class=\"healthy\">healthy</td>"),
        "{healthy}"
    );
    assert!(
        dom.contains("<div id=\"summary\" class=\"muted\">version "),
        "the summary did not fill in:\n{dom}"
    );
    assert!(dom.contains("config generation 1"), "{dom}");
}

/// Every `gatehouse_*` name in the PromQL of a file's `expr` values.
fn metric_names(exprs: &[String]) -> BTreeSet<String> {
    let re = regex::Regex::new(r"\bgatehouse_[a-z0-9_]+").unwrap();
    exprs
        .iter()
        .flat_map(|e| re.find_iter(e).map(|m| m.as_str().to_string()))
        .collect()
}

fn json_exprs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                match (k.as_str(), v) {
                    ("expr", Value::String(s)) => out.push(s.clone()),
                    _ => json_exprs(v, out),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|v| json_exprs(v, out)),
        _ => {}
    }
}

#[test]
fn dashboard_and_alerts_use_only_served_metrics() {
    let text = std::fs::read_to_string("contrib/grafana/gatehouse.json").unwrap();
    let dashboard: Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    let mut dash_exprs = Vec::new();
    json_exprs(&dashboard, &mut dash_exprs);
    let dash = metric_names(&dash_exprs);

    let text = std::fs::read_to_string("contrib/prometheus/alerts.yaml").unwrap();
    let rules: serde_yaml::Value = serde_yaml::from_str(&text).expect("the alerts are YAML");
    let mut alert_exprs = Vec::new();
    for group in rules["groups"].as_sequence().unwrap() {
        for rule in group["rules"].as_sequence().unwrap() {
            assert!(rule["alert"].as_str().is_some(), "{rule:?}");
            alert_exprs.push(rule["expr"].as_str().unwrap().to_string());
        }
    }
    let alerts = metric_names(&alert_exprs);

    // What each one is for.
    for m in [
        "gatehouse_requests_total",
        "gatehouse_rejections_total",
        "gatehouse_upstream_latency_seconds_bucket",
        "gatehouse_breaker_state",
        "gatehouse_reloads_total",
        "gatehouse_redis_errors_total",
    ] {
        assert!(dash.contains(m), "the dashboard does not show {m}");
    }
    for m in [
        "gatehouse_breaker_state",
        "gatehouse_reloads_total",
        "gatehouse_redis_errors_total",
        "gatehouse_requests_total",
    ] {
        assert!(alerts.contains(m), "no alert on {m}");
    }
    assert!(alert_exprs.iter().any(|e| e.contains("status=~\"5..\"")));

    // Make every series exist: a proxied request, a 404, a refused upstream behind a
    // breaker, a Redis decision that fails, a good and a bad reload.
    let app = MockUpstream::start(Behaviour::Echo);
    let dead = dead_addr();
    let redis = dead_addr();
    let yaml = config(app.addr, dead.addr, redis.addr);
    let g = Gatehouse::start(&yaml);
    assert_eq!(get(g.addr, "/x", &[]).status, 200);
    assert_eq!(get(g.addr, "/broken", &[]).status, 502);
    assert_eq!(get(g.addr, "/limited", &[]).status, 200);
    assert!(g.reload(&yaml));
    assert!(!g.reload("version: 1\n"));
    let served: BTreeSet<String> = g
        .metrics()
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_string)
        .collect();
    for m in dash.union(&alerts) {
        assert!(served.contains(m), "{m} is not in /metrics: {served:?}");
    }
}
