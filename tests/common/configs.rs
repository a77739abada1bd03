//! Test configs: the `server:` block every test starts from and a one-backend config, with the
//! placeholders `Gatehouse::start` fills in.

use std::net::SocketAddr;

/// The `version` and `server` lines every test config starts with (`Gatehouse::start`
/// fills in the placeholders); more `server:` keys may follow, indented by two spaces.
pub const SERVER: &str = r#"version: 1
server:
  listen: ["LISTEN"]
  admin: { listen: "ADMIN" }
  grace_period: 1s
  pid_file: TMPDIR/gatehouse.pid
  upgrade_sock: TMPDIR/upgrade.sock
"#;

/// A config with one backend pointing at `upstreams` and one catch-all endpoint.
pub fn simple_config(
    upstreams: &[SocketAddr],
    extra_backend: &str,
    extra_endpoint: &str,
) -> String {
    let hosts: Vec<String> = upstreams.iter().map(|a| format!("\"{a}\"")).collect();
    format!(
        r#"{SERVER}backends:
  app:
    discovery: {{ static: [{hosts}] }}
{extra_backend}
endpoints:
  - path: /{{*rest}}
    backend: app
{extra_endpoint}
"#,
        hosts = hosts.join(", ")
    )
}
