//! The TLS handshake through the real binary: `server.tls.groups` (the key-exchange groups the
//! HTTPS listeners offer, in the order they prefer them), seen by OpenSSL clients restricted
//! to chosen groups, and session resumption.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test may panic on what it did not expect

mod common;

use common::tls::{ClientTls, Issued, Pki, ResumingClient, TlsConn};
use common::{Behaviour, Gatehouse, MockUpstream, SERVER};
use pingora::tls::ssl::SslVersion;

/// A CA, a certificate for `a.test` and an upstream that echoes.
struct Site {
    pki: Pki,
    leaf: Issued,
    dir: tempfile::TempDir,
    up: MockUpstream,
}

impl Site {
    fn new() -> Site {
        let pki = Pki::new();
        let leaf = pki.issue(&["a.test"]);
        let dir = tempfile::tempdir().unwrap();
        leaf.write(dir.path(), "a");
        Site {
            pki,
            leaf,
            dir,
            up: MockUpstream::start(Behaviour::Echo),
        }
    }

    /// A config with an HTTPS listener; `groups` is the YAML value of `server.tls.groups`.
    fn config(&self, groups: Option<&str>) -> String {
        let a = self.dir.path().join("a").display().to_string();
        let groups = groups
            .map(|g| format!("    groups: {g}\n"))
            .unwrap_or_default();
        format!(
            r#"{SERVER}  tls:
    listen: ["TLSADDR"]
    certificates: [{{ cert: {a}.pem, key: {a}.key }}]
{groups}backends:
  app: {{ discovery: {{ static: ["{}"] }} }}
endpoints:
  - {{ path: "/{{*rest}}", backend: app }}
"#,
            self.up.addr
        )
    }

    /// A handshake offering only `groups` (OpenSSL's client default if `None`): the group
    /// used, after a request through it was answered.
    fn handshake(&self, g: &Gatehouse, groups: Option<&str>) -> Result<String, String> {
        let ca = self.pki.ca_pem();
        let tls = ClientTls {
            groups,
            ..ClientTls::new("a.test", &ca)
        };
        let mut c = TlsConn::open(g.tls_addr, &tls)?;
        assert_eq!(c.peer_der(), self.leaf.der());
        let r = c.get("/x").map_err(|e| e.to_string())?;
        assert_eq!(r.status, 200, "{}", r.text());
        c.group().ok_or_else(|| "no group reported".to_string())
    }
}

#[test]
fn only_the_configured_groups_are_accepted() {
    let site = Site::new();
    let g = Gatehouse::start(&site.config(Some("[P-384]")));
    assert_eq!(site.handshake(&g, Some("P-384")).unwrap(), "secp384r1");
    let err = site.handshake(&g, Some("X25519")).unwrap_err();
    assert!(err.contains("handshake"), "{err}");
    let err = site
        .handshake(&g, Some("X25519MLKEM768:P-256"))
        .unwrap_err();
    assert!(err.contains("handshake"), "{err}");
    // A client that supports it among others gets it, even without a key share for it.
    assert_eq!(
        site.handshake(&g, Some("X25519:P-384")).unwrap(),
        "secp384r1"
    );
    assert_eq!(site.up.count(), 2);
}

#[test]
fn the_first_group_the_client_supports_is_used() {
    let site = Site::new();
    // The client sends a key share for its first group only: X25519.
    let client = Some("X25519:X25519MLKEM768");
    let g = Gatehouse::start(&site.config(Some("[X25519MLKEM768, X25519]")));
    assert_eq!(site.handshake(&g, client).unwrap(), "X25519MLKEM768");
    drop(g);
    let g = Gatehouse::start(&site.config(Some("[X25519, X25519MLKEM768]")));
    assert_eq!(site.handshake(&g, client).unwrap(), "x25519");
    // OpenSSL's default client offers (and sends shares for) both.
    assert_eq!(site.handshake(&g, None).unwrap(), "x25519");
}

#[test]
fn the_default_prefers_the_post_quantum_hybrid() {
    let site = Site::new();
    let g = Gatehouse::start(&site.config(None));
    assert_eq!(site.handshake(&g, None).unwrap(), "X25519MLKEM768");
    assert_eq!(site.handshake(&g, Some("X25519")).unwrap(), "x25519");
    assert_eq!(site.handshake(&g, Some("P-256")).unwrap(), "secp256r1");
    assert_eq!(site.handshake(&g, Some("P-384")).unwrap(), "secp384r1");
    // Offered by OpenSSL, not by the default.
    assert!(site.handshake(&g, Some("X448")).is_err());
    let err = site.handshake(&g, Some("X448")).unwrap_err();
    assert!(err.contains("handshake"), "{err}");
}

#[test]
fn groups_are_fixed_at_start() {
    let site = Site::new();
    let g = Gatehouse::start(&site.config(Some("[P-384]")));
    assert!(g.reload(&site.config(Some("[X25519]"))));
    common::wait_for(
        "the restart warning",
        std::time::Duration::from_secs(5),
        || {
            g.log()
                .contains("server.tls (listen, min_version, groups, http2) changed")
                .then_some(())
        },
    );
    assert_eq!(site.handshake(&g, Some("P-384")).unwrap(), "secp384r1");
    assert!(site.handshake(&g, Some("X25519")).is_err());
    let err = site.handshake(&g, Some("X25519")).unwrap_err();
    assert!(err.contains("handshake"), "{err}");
}

#[test]
fn an_unknown_group_is_a_config_error_with_its_path() {
    let site = Site::new();
    let err = Gatehouse::try_start(&site.config(Some("[X25519, NOPE-1]")))
        .err()
        .expect("refused");
    assert!(
        err.contains("server.tls.groups[1]: unknown key-exchange group \"NOPE-1\""),
        "{err}"
    );
    let path = site.dir.path().join("bad.yaml");
    std::fs::write(&path, site.config(Some("[X25519, NOPE-1]"))).unwrap();
    let out = std::process::Command::new(common::bin())
        .args(["check", "-c"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("server.tls.groups[1]: unknown"), "{stderr}");
}

/// Sessions resume (TLS 1.3 tickets, and TLS 1.2), with tickets that say they last 12 hours
/// (rustls's ticket keys: made at start, rotated every 6 hours, the previous ones kept).
#[test]
fn sessions_resume() {
    let site = Site::new();
    let g = Gatehouse::start(&site.config(None));
    let ca = site.pki.ca_pem();
    for max in [SslVersion::TLS1_3, SslVersion::TLS1_2] {
        let tls = ClientTls {
            max: Some(max),
            ..ClientTls::new("a.test", &ca)
        };
        let mut c = ResumingClient::new(&tls).unwrap();
        let (r, resumed) = c.get(g.tls_addr, "/first").unwrap();
        assert_eq!((r.status, resumed), (200, false));
        assert_eq!(c.ticket_lifetime(), Some(12 * 3600), "{max:?}");
        let (r, resumed) = c.get(g.tls_addr, "/again").unwrap();
        assert_eq!((r.status, resumed), (200, true), "{max:?}");
    }
    assert_eq!(site.up.count(), 4);
}

/// Ticket keys are made by each process: a session does not resume after a restart.
#[test]
fn a_restart_forgets_the_sessions() {
    let site = Site::new();
    let ca = site.pki.ca_pem();
    let mut c = ResumingClient::new(&ClientTls::new("a.test", &ca)).unwrap();
    let g = Gatehouse::start(&site.config(None));
    assert!(!c.get(g.tls_addr, "/first").unwrap().1);
    assert!(c.get(g.tls_addr, "/again").unwrap().1);
    drop(g);
    let g = Gatehouse::start(&site.config(None));
    let (r, resumed) = c.get(g.tls_addr, "/after").unwrap();
    assert_eq!((r.status, resumed), (200, false));
    assert!(c.get(g.tls_addr, "/again").unwrap().1);
}

/// A connection is told HTTPS from plain by the port it came in on, so one port cannot be
/// both (even on two addresses): `gatehouse check` names the HTTPS entry.
#[test]
fn a_port_cannot_be_plain_and_https() {
    let site = Site::new();
    let text = site
        .config(None)
        .replace("LISTEN", "127.0.0.1:18443")
        .replace("TLSADDR", "[::1]:18443")
        .replace("ADMIN", "127.0.0.1:18444")
        .replace("TMPDIR", &site.dir.path().display().to_string());
    let path = site.dir.path().join("clash.yaml");
    std::fs::write(&path, &text).unwrap();
    let check = |path: &std::path::Path| {
        std::process::Command::new(common::bin())
            .args(["check", "-c"])
            .arg(path)
            .output()
            .unwrap()
    };
    let out = check(&path);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("server.tls.listen[0]: port 18443 is also a plain listener's"),
        "{stderr}"
    );
    std::fs::write(&path, text.replace("[::1]:18443", "[::1]:18445")).unwrap();
    let out = check(&path);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A TLS 1.2 client that lists the post-quantum hybrid among its groups (OpenSSL 3.6's
/// default list does) gets the first classical group: X25519MLKEM768 is TLS 1.3 only.
#[test]
fn a_tls12_client_gets_a_classical_group() {
    let site = Site::new();
    let g = Gatehouse::start(&site.config(None));
    let ca = site.pki.ca_pem();
    let tls = ClientTls {
        max: Some(SslVersion::TLS1_2),
        ..ClientTls::new("a.test", &ca)
    };
    let mut c = TlsConn::open(g.tls_addr, &tls).unwrap();
    assert_eq!(c.ssl().version_str(), "TLSv1.2");
    assert_eq!(c.group().as_deref(), Some("x25519"));
    assert_eq!(c.get("/x").unwrap().status, 200);
}
