//! Request filters through the real proxy: client address resolution, ip_filter, geofence
//! (with the GeoIP fixtures), bot_detector; service-wide and per endpoint.
//!
//! The test client connects from 127.0.0.1 only, so foreign and IPv6 clients are made by
//! trusting 127.0.0.1 as a proxy and sending X-Forwarded-For.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test may panic on what it did not expect

mod common;

use common::{get, Behaviour, Conn, Gatehouse, MockUpstream, SERVER};

const PROBLEM: &str = "urn:gatehouse:problem:";

fn fixture(name: &str) -> String {
    format!("{}/geoip-fixtures/{name}", env!("CARGO_MANIFEST_DIR"))
}

fn config(up: &MockUpstream, top: &str, endpoints: &str) -> String {
    format!(
        r#"{SERVER}{top}
backends:
  app:
    discovery: {{ static: ["{up}"] }}
endpoints:
{endpoints}
  - path: /{{*rest}}
    backend: app
"#,
        up = up.addr
    )
}

fn status_from(g: &Gatehouse, path: &str, xff: &str) -> u16 {
    get(
        g.addr,
        path,
        &[("X-Forwarded-For", xff), ("User-Agent", "test")],
    )
    .status
}

fn assert_rejected(r: &common::Response, reason: &str) {
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/problem+json"));
    assert!(
        r.text()
            .contains(&format!("\"type\":\"{PROBLEM}{reason}\"")),
        "{}",
        r.text()
    );
}

#[test]
fn ip_filter_with_trusted_forwarding_ipv4_and_ipv6() {
    let up = MockUpstream::start(Behaviour::Echo);
    let g = Gatehouse::start(&config(
        &up,
        r#"client_ip: { trusted_proxies: ["127.0.0.1/32"] }
security:
  ip_filter: { mode: deny, cidrs: ["203.0.113.0/24", "2001:db8::/32", "198.51.100.9"] }"#,
        "",
    ));
    // The trusted peer itself is not listed.
    assert_eq!(get(g.addr, "/x", &[]).status, 200);
    let r = get(g.addr, "/x", &[("X-Forwarded-For", "203.0.113.5")]);
    assert_rejected(&r, "ip_filter");
    assert_eq!(status_from(&g, "/x", "198.51.100.9"), 403);
    assert_eq!(status_from(&g, "/x", "198.51.100.10"), 200);
    assert_eq!(status_from(&g, "/x", "2001:db8::1"), 403);
    assert_eq!(status_from(&g, "/x", "[2001:db8:1::7]:443"), 403);
    assert_eq!(status_from(&g, "/x", "2001:db9::1"), 200);
    assert_eq!(status_from(&g, "/x", "::ffff:203.0.113.5"), 403);
    // Right to left: the rightmost untrusted address is the client, whatever is on its left.
    assert_eq!(status_from(&g, "/x", "203.0.113.5, 198.51.100.1"), 200);
    assert_eq!(status_from(&g, "/x", "198.51.100.1, 203.0.113.5"), 403);
    // X-Real-IP is the second configured header.
    let r = get(g.addr, "/x", &[("X-Real-IP", "203.0.113.77")]);
    assert_eq!(r.status, 403);
    // Service-wide filters run before routing: no 404 leaks for a rejected client.
    assert_eq!(status_from(&g, "/nowhere/at/all", "203.0.113.5"), 403);

    // A rejection keeps the connection alive.
    let mut c = Conn::open(g.addr).unwrap();
    let r = c
        .request("GET", "/x", &[("X-Forwarded-For", "203.0.113.5")], b"")
        .unwrap();
    assert_eq!(r.status, 403);
    assert_eq!(c.get("/x").unwrap().status, 200);

    common::wait_for(
        "rejection metric",
        std::time::Duration::from_secs(5),
        || {
            let n = g.metric("gatehouse_rejections_total{reason=\"ip_filter\"}");
            (n >= 9.0).then_some(())
        },
    );
    assert_eq!(
        g.metric("gatehouse_rejections_total{reason=\"ip_filter\"}"),
        9.0
    );
    // The access log names the resolved client and the reason.
    common::wait_for("access log", std::time::Duration::from_secs(5), || {
        g.log()
            .lines()
            .any(|l| l.contains("203.0.113.5 \"GET /x") && l.contains("reason=ip_filter"))
            .then_some(())
    });
}

#[test]
fn forwarding_headers_from_untrusted_peers_change_nothing() {
    let up = MockUpstream::start(Behaviour::Echo);
    // No trusted proxies: the peer (127.0.0.1) is the client, always.
    let g = Gatehouse::start(&config(
        &up,
        r#"security:
  ip_filter: { mode: allow, cidrs: ["127.0.0.0/8", "::1"] }"#,
        "",
    ));
    assert_eq!(status_from(&g, "/x", "203.0.113.5"), 200);
    assert_eq!(
        get(g.addr, "/x", &[("X-Real-IP", "2001:db8::1")]).status,
        200
    );
    // Trusting someone else than 127.0.0.1 changes nothing either.
    let g2 = Gatehouse::start(&config(
        &up,
        r#"client_ip: { trusted_proxies: ["10.0.0.0/8"] }
security:
  ip_filter: { mode: deny, cidrs: ["203.0.113.0/24"] }"#,
        "",
    ));
    assert_eq!(status_from(&g2, "/x", "203.0.113.5"), 200);
    // The upstream gets the client's chain with the peer appended.
    let rec = up.last().unwrap();
    assert_eq!(
        rec.header("x-forwarded-for"),
        Some("203.0.113.5, 127.0.0.1")
    );
}

/// Every X-Forwarded-For line the client sent reaches the upstream, in order, as one list
/// with the peer appended: an upstream that trusts gatehouse and walks it right to left finds
/// the client gatehouse found, not an address forged on an earlier line.
#[test]
fn upstream_gets_every_forwarded_line_with_the_peer_appended() {
    let up = MockUpstream::start(Behaviour::Echo);
    let g = Gatehouse::start(&config(
        &up,
        r#"client_ip: { trusted_proxies: ["127.0.0.1/32"] }
security:
  ip_filter: { mode: deny, cidrs: ["6.6.6.6"] }"#,
        "",
    ));
    let xff = |rec: &common::Recorded| -> Vec<String> {
        rec.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case("x-forwarded-for"))
            .map(|(_, v)| v.clone())
            .collect()
    };
    // A forged line, then the line the trusted proxy added: the client is 81.2.69.142.
    let r = get(
        g.addr,
        "/x",
        &[
            ("X-Forwarded-For", "6.6.6.6"),
            ("X-Forwarded-For", "81.2.69.142"),
        ],
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        xff(&up.last().unwrap()),
        vec!["6.6.6.6, 81.2.69.142, 127.0.0.1"]
    );
    // Empty lines add nothing; a single line keeps its text.
    let r = get(
        g.addr,
        "/x",
        &[
            ("X-Forwarded-For", "198.51.100.1,81.2.69.142"),
            ("X-Forwarded-For", ""),
        ],
    );
    assert_eq!(r.status, 200);
    assert_eq!(
        xff(&up.last().unwrap()),
        vec!["198.51.100.1,81.2.69.142, 127.0.0.1"]
    );
    assert_eq!(get(g.addr, "/x", &[]).status, 200);
    assert_eq!(xff(&up.last().unwrap()), vec!["127.0.0.1"]);
}

#[test]
fn endpoint_ip_filter_adds_to_the_service_wide_one() {
    let up = MockUpstream::start(Behaviour::Echo);
    let g = Gatehouse::start(&config(
        &up,
        r#"client_ip: { trusted_proxies: ["127.0.0.1"] }
security:
  ip_filter: { mode: deny, cidrs: ["203.0.113.0/24", "10.66.0.0/16"] }"#,
        r#"  - path: /admin/{*rest}
    backend: app
    security:
      ip_filter: { mode: allow, cidrs: ["10.0.0.0/8", "fd00::/8"] }"#,
    ));
    assert_eq!(status_from(&g, "/admin/x", "10.1.2.3"), 200);
    assert_eq!(status_from(&g, "/admin/x", "fd12::5"), 200);
    let r = get(g.addr, "/admin/x", &[("X-Forwarded-For", "81.2.69.142")]);
    assert_rejected(&r, "ip_filter");
    assert_eq!(status_from(&g, "/open", "81.2.69.142"), 200);
    // The service-wide deny still applies to the endpoint and everything else: 10.66.0.1
    // is in the endpoint's allow list but denied service-wide.
    assert_eq!(status_from(&g, "/open", "203.0.113.1"), 403);
    let r = get(g.addr, "/admin/x", &[("X-Forwarded-For", "10.66.0.1")]);
    assert_rejected(&r, "ip_filter");
    assert_eq!(status_from(&g, "/open", "10.66.0.1"), 403);
    // Path tricks do not reach the guarded route unguarded.
    assert_eq!(status_from(&g, "/open/../admin/x", "81.2.69.142"), 403);
    // Nor does the bare prefix, which the catch-all would otherwise forward unfiltered.
    assert_eq!(status_from(&g, "/admin/", "81.2.69.142"), 403);
    assert_eq!(status_from(&g, "/admin", "81.2.69.142"), 403);
    assert_eq!(status_from(&g, "/open/../admin", "81.2.69.142"), 403);
    assert_eq!(status_from(&g, "/admin/", "10.1.2.3"), 200);
}

#[test]
fn geofence_countries_regions_unknown_and_forwarded_headers() {
    let up = MockUpstream::start(Behaviour::Echo);
    let top = format!(
        r#"client_ip: {{ trusted_proxies: ["127.0.0.1/32"] }}
geoip: {{ database: "{}", forward: true }}
security:
  geofence: {{ deny_countries: [KP], unknown: allow }}"#,
        fixture("cities.mmdb")
    );
    let g = Gatehouse::start(&config(
        &up,
        &top,
        r#"  - path: /eu/{*rest}
    backend: app
    security:
      geofence: { allow_countries: [DE, GB, SE], deny_cities: [Leeds], unknown: deny }
  - path: /ca/{*rest}
    backend: app
    security:
      geofence: { allow_regions: [US-CA] }"#,
    ));
    // KP is denied everywhere, before routing.
    let r = get(g.addr, "/x", &[("X-Forwarded-For", "175.45.176.1")]);
    assert_rejected(&r, "geofence");
    assert_eq!(status_from(&g, "/nowhere", "175.45.177.9"), 403);

    // GB over IPv4, with the forwarded location.
    let r = get(
        g.addr,
        "/eu/a",
        &[
            ("X-Forwarded-For", "81.2.69.142"),
            ("X-Geo-Country", "forged"),
        ],
    );
    assert_eq!(r.status, 200);
    let rec = up.last().unwrap();
    assert_eq!(rec.header("x-geo-country"), Some("GB"));
    assert_eq!(rec.header("x-geo-region"), Some("GB-ENG"));
    assert_eq!(rec.header("x-geo-city"), Some("London"));

    // DE over IPv6.
    assert_eq!(status_from(&g, "/eu/a", "2a02:ff0::7"), 200);
    let rec = up.last().unwrap();
    assert_eq!(rec.header("x-geo-country"), Some("DE"));
    assert_eq!(rec.header("x-geo-region"), Some("DE-HE"));
    assert_eq!(rec.header("x-geo-city"), Some("Frankfurt am Main"));

    // US is not in the EU allow list; unknown addresses are denied there.
    assert_eq!(status_from(&g, "/eu/a", "216.160.83.56"), 403);
    assert_eq!(status_from(&g, "/eu/a", "10.9.8.7"), 403);
    assert_eq!(get(g.addr, "/eu/a", &[]).status, 403);

    // Unknown addresses pass elsewhere (unknown: allow), with no geo headers, and
    // client-sent copies are stripped.
    let r = get(
        g.addr,
        "/other",
        &[
            ("X-Forwarded-For", "10.9.8.7"),
            ("X-Geo-Country", "US"),
            ("X-Geo-Region", "US-CA"),
            ("X-Geo-City", "Nowhere"),
        ],
    );
    assert_eq!(r.status, 200);
    let rec = up.last().unwrap();
    assert_eq!(rec.header("x-geo-country"), None);
    assert_eq!(rec.header("x-geo-region"), None);
    assert_eq!(rec.header("x-geo-city"), None);

    // Regions: US-CA (IPv6 fixture) passes, US-WA does not.
    assert_eq!(status_from(&g, "/ca/x", "2001:480::1"), 200);
    assert_eq!(up.last().unwrap().header("x-geo-region"), Some("US-CA"));
    assert_eq!(status_from(&g, "/ca/x", "216.160.83.56"), 403);
    // Japan (IPv6) passes the service-wide fence.
    assert_eq!(status_from(&g, "/x", "2001:218::1"), 200);
    assert_eq!(up.last().unwrap().header("x-geo-country"), Some("JP"));

    // Six geofence rejections above, counted and logged by reason.
    let metric = "gatehouse_rejections_total{reason=\"geofence\"}";
    common::wait_for("geofence metric", std::time::Duration::from_secs(5), || {
        (g.metric(metric) >= 6.0).then_some(())
    });
    assert_eq!(g.metric(metric), 6.0);
    common::wait_for("access log", std::time::Duration::from_secs(5), || {
        g.log()
            .lines()
            .any(|l| l.contains("175.45.176.1 \"GET /x") && l.contains("reason=geofence"))
            .then_some(())
    });
}

#[test]
fn geofence_with_a_country_database() {
    let up = MockUpstream::start(Behaviour::Echo);
    let top = format!(
        r#"client_ip: {{ trusted_proxies: ["127.0.0.1/32"] }}
geoip: {{ database: "{}" }}
security:
  geofence: {{ allow_countries: [GB, SE, DE], unknown: deny }}"#,
        fixture("countries.mmdb")
    );
    let g = Gatehouse::start(&config(&up, &top, ""));
    assert_eq!(status_from(&g, "/x", "89.160.20.128"), 200);
    // forward is off: no geo headers upstream.
    assert_eq!(up.last().unwrap().header("x-geo-country"), None);
    // ... and copies sent by the client are removed all the same.
    let r = get(
        g.addr,
        "/x",
        &[
            ("X-Forwarded-For", "89.160.20.128"),
            ("X-Geo-Country", "US"),
            ("X-Geo-Region", "US-CA"),
            ("X-Geo-City", "Nowhere"),
        ],
    );
    assert_eq!(r.status, 200);
    let rec = up.last().unwrap();
    for h in ["x-geo-country", "x-geo-region", "x-geo-city"] {
        assert_eq!(rec.header(h), None, "{h} reached the upstream");
    }
    assert_eq!(status_from(&g, "/x", "2a02:ff0::1"), 200);
    assert_eq!(status_from(&g, "/x", "175.16.199.1"), 403);
    assert_eq!(status_from(&g, "/x", "1.130.0.1"), 403);
    assert_eq!(status_from(&g, "/x", "192.168.1.1"), 403);
}

#[test]
fn bot_detector_service_wide_and_per_endpoint() {
    let up = MockUpstream::start(Behaviour::Echo);
    let g = Gatehouse::start(&config(
        &up,
        r#"security:
  bot_detector:
    allow: ["curl/8 healthcheck"]
    deny: ["BadBot/2.0"]
    patterns: ["(?i)scrapy", "curl/"]
    empty_user_agent_is_bot: true
    cache_size: 100"#,
        r#"  - path: /api/{*rest}
    backend: app
    security: { bot_detector: { patterns: ["(?i)python-requests"] } }"#,
    ));
    let ua = |path: &str, ua: &str| get(g.addr, path, &[("User-Agent", ua)]).status;
    let browser = "Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0";
    assert_eq!(ua("/x", browser), 200);
    assert_eq!(ua("/x", browser), 200, "cached verdict");
    let r = get(
        g.addr,
        "/x",
        &[("User-Agent", "Scrapy/2.11 (+https://scrapy.org)")],
    );
    assert_rejected(&r, "bot_detector");
    assert_eq!(ua("/x", "curl/8.5.0"), 403);
    assert_eq!(ua("/x", "curl/8 healthcheck"), 200);
    assert_eq!(ua("/x", "BadBot/2.0"), 403);
    assert_eq!(ua("/x", "BadBot/2.1"), 200);
    assert_eq!(get(g.addr, "/x", &[]).status, 403, "no User-Agent");
    // The endpoint's patterns add to the service-wide ones, only on that endpoint.
    assert_eq!(ua("/api/v1", "python-requests/2.31"), 403);
    assert_eq!(ua("/other", "python-requests/2.31"), 200);
    assert_eq!(ua("/api/v1", "curl/8.5.0"), 403);
    assert_eq!(ua("/api/v1", browser), 200);
    common::wait_for("metrics", std::time::Duration::from_secs(5), || {
        (g.metric("gatehouse_rejections_total{reason=\"bot_detector\"}") >= 6.0).then_some(())
    });
    assert_eq!(
        g.metric("gatehouse_rejections_total{reason=\"bot_detector\"}"),
        6.0
    );
}

#[test]
fn reload_swaps_filters_and_keeps_the_geoip_database_when_unchanged() {
    let up = MockUpstream::start(Behaviour::Echo);
    let top = |deny: &str| {
        format!(
            r#"client_ip: {{ trusted_proxies: ["127.0.0.1/32"] }}
geoip: {{ database: "{}" }}
security:
  geofence: {{ deny_countries: [{deny}] }}"#,
            fixture("countries.mmdb")
        )
    };
    let g = Gatehouse::start(&config(&up, &top("KP"), ""));
    assert_eq!(status_from(&g, "/x", "81.2.69.142"), 200);
    assert!(g.reload(&config(&up, &top("GB"), "")));
    assert_eq!(status_from(&g, "/x", "81.2.69.142"), 403);
    assert_eq!(status_from(&g, "/x", "175.45.176.1"), 200);
    // A reload naming a missing database changes nothing.
    let broken = config(&up, &top("KP"), "").replace("countries.mmdb", "missing.mmdb");
    assert!(!g.reload(&broken));
    assert_eq!(status_from(&g, "/x", "81.2.69.142"), 403);
}

/// The GeoIP database is re-read on reload when its file changed (path, size or mtime), and
/// only then: a file whose size and mtime are unchanged is not read again (here proven by
/// garbage that would fail verification), a replaced file is.
#[test]
fn geoip_database_is_re_read_on_reload_only_when_its_file_changed() {
    use std::time::Duration;
    let up = MockUpstream::start(Behaviour::Echo);
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("geo.mmdb");
    std::fs::copy(fixture("countries.mmdb"), &db).unwrap();
    let cfg = config(
        &up,
        &format!(
            r#"client_ip: {{ trusted_proxies: ["127.0.0.1/32"] }}
geoip: {{ database: "{}", forward: true }}"#,
            db.display()
        ),
        "",
    );
    let g = Gatehouse::start(&cfg);
    let geo = |h: &str| {
        assert_eq!(status_from(&g, "/x", "81.2.69.142"), 200);
        up.last().unwrap().header(h).map(String::from)
    };
    assert_eq!(geo("x-geo-country").as_deref(), Some("GB"));
    assert_eq!(geo("x-geo-city"), None, "a Country database has no city");

    // Same size and mtime, different bytes: not re-read, so the reload succeeds.
    let overwrite = |bytes: &[u8], mtime: Option<std::time::SystemTime>| {
        std::fs::write(&db, bytes).unwrap();
        if let Some(t) = mtime {
            let f = std::fs::File::options().write(true).open(&db).unwrap();
            f.set_modified(t).unwrap();
        }
    };
    let meta = std::fs::metadata(&db).unwrap();
    overwrite(
        &vec![b'x'; meta.len() as usize],
        Some(meta.modified().unwrap()),
    );
    assert!(
        g.reload(&cfg),
        "an unchanged stamp must not re-read the file"
    );
    assert_eq!(geo("x-geo-country").as_deref(), Some("GB"));

    // Replaced by the City database: re-read by the next reload of the same config.
    std::fs::copy(fixture("cities.mmdb"), &db).unwrap();
    assert!(g.reload(&cfg));
    assert_eq!(geo("x-geo-city").as_deref(), Some("London"));

    // Changed (new mtime) into garbage: the reload fails and the loaded database stays.
    let len = std::fs::metadata(&db).unwrap().len() as usize;
    let later = std::time::SystemTime::now() + Duration::from_secs(5);
    overwrite(&vec![b'x'; len], Some(later));
    assert!(!g.reload(&cfg));
    assert_eq!(geo("x-geo-city").as_deref(), Some("London"));
}

#[test]
fn rate_limits_key_on_the_resolved_client_address() {
    let up = MockUpstream::start(Behaviour::Echo);
    let g = Gatehouse::start(&config(
        &up,
        r#"client_ip: { trusted_proxies: ["127.0.0.1/32"] }
rate_limit: { client_max_rate: 1, every: 1h }"#,
        "",
    ));
    // Two clients behind the same trusted proxy get a bucket each.
    assert_eq!(status_from(&g, "/x", "81.2.69.142"), 200);
    assert_eq!(status_from(&g, "/x", "81.2.69.142"), 429);
    assert_eq!(status_from(&g, "/x", "2a02:ff0::7"), 200);
    assert_eq!(status_from(&g, "/x", "2a02:ff0::8"), 429, "same IPv6 /64");
    assert_eq!(status_from(&g, "/x", "198.51.100.1, 216.160.83.56"), 200);
}

#[test]
fn dry_run_filters_let_the_request_pass_and_count_what_they_would_refuse() {
    let up = MockUpstream::start(Behaviour::Echo);
    let g = Gatehouse::start(&config(
        &up,
        r#"security:
  ip_filter: { mode: deny, cidrs: [127.0.0.0/8], dry_run: true }
  bot_detector: { patterns: ["(?i)curl"], dry_run: true }"#,
        r#"  - path: /strict
    backend: app
    security: { bot_detector: { patterns: ["(?i)curl"] } }"#,
    ));
    let curl = [("User-Agent", "curl/8.0")];
    let r = get(g.addr, "/x", &curl);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        get(g.addr, "/y", &[("User-Agent", "Mozilla/5.0")]).status,
        200
    );
    // a filter without dry_run still refuses, after the dry-run ones were noted
    assert_rejected(&get(g.addr, "/strict", &curl), "bot_detector");
    common::wait_for("the counters", std::time::Duration::from_secs(10), || {
        (g.metric("gatehouse_would_reject_total{reason=\"ip_filter\"}") == 3.0
            && g.metric("gatehouse_would_reject_total{reason=\"bot_detector\"}") == 2.0)
            .then_some(())
    });
    // (one path per request, so each line is found by its path whatever the order)
    g.wait_log_lines("\"GET /x", 1);
    g.wait_log_lines("\"GET /y", 1);
    let log = g.wait_log_lines("\"GET /strict", 1);
    let line = |target: &str| {
        log.lines()
            .find(|l| l.contains(target))
            .unwrap_or_else(|| panic!("no {target} in {log}"))
            .to_string()
    };
    assert!(
        line("\"GET /x").ends_with(" would_reject=ip_filter,bot_detector")
            && line("\"GET /x").contains(" reason=- "),
        "{log}"
    );
    assert!(
        line("\"GET /y").ends_with(" would_reject=ip_filter") && line("\"GET /y").contains(" 200 "),
        "{log}"
    );
    assert!(
        line("\"GET /strict").ends_with(" would_reject=ip_filter,bot_detector")
            && line("\"GET /strict").contains(" reason=bot_detector "),
        "{log}"
    );
}

/// Replaces `path` by a new file (written aside, then renamed over it), as a feed does.
fn replace(path: &std::path::Path, text: &str) {
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[test]
fn list_files_are_read_again_when_they_change() {
    let up = MockUpstream::start(Behaviour::Echo);
    let dir = tempfile::tempdir().unwrap();
    let deny = dir.path().join("deny.txt");
    let proxies = dir.path().join("proxies.txt");
    std::fs::write(&deny, "# feed\n198.51.100.0/24  # a trailing comment\n\n").unwrap();
    std::fs::write(&proxies, "127.0.0.1\n").unwrap();
    let g = Gatehouse::start(&config(
        &up,
        &format!(
            r#"client_ip: {{ trusted_proxies_file: "{}" }}
security:
  ip_filter: {{ mode: deny, cidrs: [192.0.2.1], cidrs_file: "{}" }}"#,
            proxies.display(),
            deny.display()
        ),
        "",
    ));
    let wait_status = |xff: &str, want: u16| {
        common::wait_for(
            &format!("{xff} to get {want}"),
            std::time::Duration::from_secs(10),
            || (status_from(&g, "/x", xff) == want).then_some(()),
        )
    };
    // the inline list and the file's add up; the trusted proxy comes from its file
    assert_eq!(status_from(&g, "/x", "192.0.2.1"), 403);
    assert_eq!(status_from(&g, "/x", "198.51.100.7"), 403);
    assert_eq!(status_from(&g, "/x", "203.0.113.9"), 200);
    // a feed replaces the file by a rename: the new list applies without a reload
    replace(&deny, "198.51.100.0/24\n203.0.113.0/24\n");
    wait_status("203.0.113.9", 403);
    assert_eq!(g.metric("gatehouse_reloads_total{result=\"ok\"}"), 0.0);
    // a file written in place is seen too
    std::fs::write(&deny, "203.0.113.0/24\n").unwrap();
    wait_status("198.51.100.7", 200);
    // a bad line is an error naming the file and line, and the running list stays
    replace(&deny, "203.0.113.0/24\n198.51.100.0/24\nnope\n");
    common::wait_for(
        "the failed list reload",
        std::time::Duration::from_secs(10),
        || (g.metric("gatehouse_list_reloads_total{result=\"error\"}") == 1.0).then_some(()),
    );
    let want = format!("{}:3:", deny.display());
    g.wait_log_lines(&want, 1);
    assert_eq!(status_from(&g, "/x", "198.51.100.7"), 200);
    assert_eq!(status_from(&g, "/x", "203.0.113.9"), 403);
    // the trusted proxies file: without 127.0.0.1, X-Forwarded-For is ignored
    replace(&proxies, "# none\n");
    replace(&deny, "127.0.0.1\n");
    wait_status("198.51.100.7", 403);
    assert_eq!(
        status_from(&g, "/x", "192.0.2.200"),
        403,
        "the peer is denied"
    );
}

#[test]
fn geofence_by_asn_and_anonymous_network_and_the_asn_header() {
    let up = MockUpstream::start(Behaviour::Echo);
    let geoip = format!(
        r#"client_ip: {{ trusted_proxies: ["127.0.0.1/32"] }}
geoip: {{ database: "{}", asn_database: "{}", anonymous_database: "{}", forward: true }}"#,
        fixture("cities.mmdb"),
        fixture("asn.mmdb"),
        fixture("anonymous.mmdb")
    );
    let g = Gatehouse::start(&config(
        &up,
        &format!("{geoip}\nsecurity:\n  geofence: {{ deny_asns: [1221], deny_anonymous: [tor] }}"),
        r#"  - path: /strict
    backend: app
    security: { geofence: { allow_asns: [209, 3320, 20712], deny_anonymous: [vpn], unknown: deny } }
  - path: /any
    backend: app
    security: { geofence: { deny_anonymous: [any] } }"#,
    ));
    let from = |path: &str, xff: &str| {
        let r = get(
            g.addr,
            path,
            &[("X-Forwarded-For", xff), ("X-Geo-ASN", "64496")],
        );
        (
            r.status,
            up.last()
                .and_then(|u| u.header("x-geo-asn").map(String::from)),
        )
    };
    // service-wide: AS1221 and Tor exits are refused
    assert_rejected(
        &get(g.addr, "/x", &[("X-Forwarded-For", "1.128.0.1")]),
        "geofence",
    );
    assert_eq!(status_from(&g, "/x", "89.160.20.5"), 403);
    // a VPN in AS20712 passes here, and the upstream learns the ASN (the client's is dropped)
    assert_eq!(from("/x", "81.2.69.142"), (200, Some("20712".into())));
    assert_eq!(up.last().unwrap().header("x-geo-country"), Some("GB"));
    let before = up.count();
    assert_eq!(from("/x", "10.0.0.1").0, 200);
    assert_eq!(up.count(), before + 1);
    assert_eq!(up.last().unwrap().header("x-geo-asn"), None, "unknown ASN");
    // allow_asns: listed systems only (an unknown one by `unknown`), and no VPN
    assert_eq!(from("/strict", "216.160.83.1"), (200, Some("209".into())));
    assert_eq!(from("/strict", "2a02:ff0::1"), (200, Some("3320".into())));
    assert_eq!(
        status_from(&g, "/strict", "81.2.69.142"),
        403,
        "AS20712 is allowed, but this address is a VPN"
    );
    assert_eq!(status_from(&g, "/strict", "10.0.0.1"), 403, "unknown ASN");
    // any: every kind the anonymous database lists
    for anonymous in ["2a02:ff0::1", "216.160.83.1", "175.16.199.5", "81.2.69.142"] {
        assert_eq!(status_from(&g, "/any", anonymous), 403, "{anonymous}");
    }
    assert_eq!(status_from(&g, "/any", "10.0.0.1"), 200);
}

#[test]
fn network_databases_must_have_their_layout_and_rules_their_database() {
    let up = MockUpstream::start(Behaviour::Echo);
    let err = Gatehouse::try_start(&config(
        &up,
        &format!("geoip: {{ asn_database: \"{}\" }}", fixture("cities.mmdb")),
        "",
    ))
    .err()
    .expect("refused");
    assert!(err.contains("geoip.asn_database"), "{err}");
    assert!(err.contains("GeoLite2-City database"), "{err}");
    let err = Gatehouse::try_start(&config(
        &up,
        &format!(
            "geoip: {{ database: \"{}\" }}\nsecurity: {{ geofence: {{ deny_asns: [1], deny_anonymous: [vpn, bogus] }} }}",
            fixture("cities.mmdb")
        ),
        "",
    ))
    .err()
    .expect("refused");
    assert!(err.contains("need geoip.asn_database"), "{err}");
    assert!(err.contains("needs geoip.anonymous_database"), "{err}");
    assert!(
        err.contains("security.geofence.deny_anonymous[1]: unknown kind \"bogus\""),
        "{err}"
    );
}

#[test]
fn verified_bots_pass_only_from_their_own_networks() {
    use common::{DnsMode, FakeDns};
    use std::net::IpAddr;
    let up = MockUpstream::start(Behaviour::Echo);
    let dns = FakeDns::start();
    let ip = |s: &str| -> IpAddr { s.parse().unwrap() };
    // verified: its reverse name is in the domain and resolves back to it
    dns.set_ptr(ip("192.0.2.10"), &["crawl-10.googlebot.com."]);
    dns.set_ips("crawl-10.googlebot.com.", &[ip("192.0.2.10")]);
    dns.set_ptr(ip("2001:db8::10"), &["crawl-v6.google.com."]);
    dns.set_ips("crawl-v6.google.com.", &[ip("2001:db8::10")]);
    // a name outside the domains, a name that does not resolve back, no reverse name at all
    dns.set_ptr(ip("192.0.2.11"), &["crawl.googlebot.com.evil.example."]);
    dns.set_ips("crawl.googlebot.com.evil.example.", &[ip("192.0.2.11")]);
    dns.set_ptr(ip("192.0.2.12"), &["liar.googlebot.com."]);
    dns.set_ips("liar.googlebot.com.", &[ip("192.0.2.99")]);
    let verify = |on_failure: &str| {
        format!(
            r#"{{ patterns: ["(?i)bot"], on_dns_failure: {on_failure}, verify_timeout: 300ms, verify: [
        {{ name: googlebot, user_agent: "(?i)googlebot", domains: [googlebot.com, google.com] }},
        {{ name: bingbot, user_agent: "(?i)bingbot", cidrs: [198.51.100.0/24] }} ] }}"#
        )
    };
    let g = Gatehouse::start(&config(
        &up,
        &format!(
            "client_ip: {{ trusted_proxies: [\"127.0.0.1/32\"] }}\ndns: {{ nameservers: [\"{}\"], timeout: 200ms }}",
            dns.addr
        ),
        &format!(
            r#"  - path: /strict
    backend: app
    rate_limit: {{ client_max_rate: 2, every: 1h }}
    security: {{ bot_detector: {} }}
  - path: /lenient
    backend: app
    security: {{ bot_detector: {} }}"#,
            verify("deny"),
            verify("allow")
        ),
    ));
    let google = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)";
    let bing = "Mozilla/5.0 (compatible; bingbot/2.0)";
    let status = |path: &str, xff: &str, ua: &str| {
        get(
            g.addr,
            path,
            &[("X-Forwarded-For", xff), ("User-Agent", ua)],
        )
        .status
    };
    assert_eq!(status("/strict", "192.0.2.10", google), 200);
    assert_eq!(status("/strict", "2001:db8::10", google), 200);
    for liar in ["192.0.2.11", "192.0.2.12", "192.0.2.13"] {
        let r = get(
            g.addr,
            "/strict",
            &[("X-Forwarded-For", liar), ("User-Agent", google)],
        );
        assert_rejected(&r, "bot_detector");
    }
    // by address range, no DNS
    assert_eq!(status("/strict", "198.51.100.5", bing), 200);
    assert_eq!(status("/strict", "203.0.113.5", bing), 403);
    // other User-Agents meet the patterns as before
    assert_eq!(status("/strict", "192.0.2.11", "Mozilla/5.0"), 200);
    assert_eq!(status("/strict", "192.0.2.10", "SomeBot/1.0"), 403);
    // the DNS goes silent: a cached verdict still holds; a new address is a DNS failure,
    // which each detector's on_dns_failure decides, within verify_timeout
    dns.set_mode(DnsMode::Silent);
    assert_eq!(status("/strict", "192.0.2.10", google), 200);
    let started = std::time::Instant::now();
    assert_eq!(status("/strict", "192.0.2.14", google), 403);
    assert!(started.elapsed() < std::time::Duration::from_secs(3));
    assert_eq!(status("/lenient", "192.0.2.14", google), 200);
    // a verified crawler is still subject to the limits: its bucket of 2 is spent
    let r = get(
        g.addr,
        "/strict",
        &[("X-Forwarded-For", "192.0.2.10"), ("User-Agent", google)],
    );
    assert_eq!(r.status, 429, "{}", r.text());
}
