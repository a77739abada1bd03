//! The container image without Docker: the runtime stage of the `Dockerfile` is rebuilt as a
//! directory (its `COPY` lines, with the binary under test standing in for the built one),
//! and its default command, `check`, and its HEALTHCHECK are run there.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test may panic on what it did not expect

mod common;

use common::{free_port, try_get, wait_for};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// What the runtime stage (the last `FROM`) holds and runs.
struct Stage {
    workdir: String,
    /// (source in the build context, or `None` for the built binary; destination)
    copies: Vec<(Option<String>, String)>,
    entrypoint: Vec<String>,
    cmd: Vec<String>,
    healthcheck: Vec<String>,
}

fn json_array(s: &str) -> Vec<String> {
    let inner = s.trim().trim_start_matches('[').trim_end_matches(']');
    inner
        .split(',')
        .map(|p| p.trim().trim_matches('"').to_string())
        .filter(|p| !p.is_empty())
        .collect()
}

fn runtime_stage() -> Stage {
    let text = std::fs::read_to_string("Dockerfile").expect("Dockerfile");
    let joined = text.replace("\\\n", " ");
    let lines: Vec<&str> = joined.lines().collect();
    let last = lines
        .iter()
        .rposition(|l| l.starts_with("FROM "))
        .expect("a FROM line");
    let mut st = Stage {
        workdir: "/".into(),
        copies: vec![],
        entrypoint: vec![],
        cmd: vec![],
        healthcheck: vec![],
    };
    for line in lines.iter().skip(last + 1) {
        let line = line.trim();
        if let Some(dir) = line.strip_prefix("WORKDIR ") {
            st.workdir = dir.trim().to_string();
        } else if let Some(rest) = line.strip_prefix("COPY ") {
            let parts: Vec<&str> = rest.split_whitespace().collect();
            let (from_build, parts) = match parts.first() {
                Some(p) if p.starts_with("--from=") => (true, &parts[1..]),
                _ => (false, &parts[..]),
            };
            assert_eq!(parts.len(), 2, "one source per COPY: {line}");
            let src = (!from_build).then(|| parts[0].to_string());
            if from_build {
                assert!(
                    parts[0].ends_with("/gatehouse"),
                    "only the binary comes from the build stage: {line}"
                );
            }
            st.copies.push((src, parts[1].to_string()));
        } else if let Some(rest) = line.strip_prefix("ENTRYPOINT ") {
            st.entrypoint = json_array(rest);
        } else if let Some(rest) = line.strip_prefix("CMD ") {
            st.cmd = json_array(rest);
        } else if let Some(rest) = line.strip_prefix("HEALTHCHECK ") {
            let cmd = rest
                .split_once("CMD ")
                .expect("HEALTHCHECK ... CMD [...]")
                .1;
            st.healthcheck = json_array(cmd);
        }
    }
    st
}

fn copy_tree(src: &Path, dst: &Path) {
    if src.is_dir() {
        std::fs::create_dir_all(dst).unwrap();
        for e in std::fs::read_dir(src).unwrap() {
            let e = e.unwrap();
            copy_tree(&e.path(), &dst.join(e.file_name()));
        }
    } else {
        std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
        std::fs::copy(src, dst).unwrap();
    }
}

/// The image as a directory: `root` stands for `/`.
fn build_layout(st: &Stage, root: &Path) -> PathBuf {
    let rooted = |p: &str| root.join(p.trim_start_matches('/'));
    let workdir = rooted(&st.workdir);
    std::fs::create_dir_all(&workdir).unwrap();
    let mut binary = None;
    for (src, dst) in &st.copies {
        let to = if dst.starts_with('/') {
            rooted(dst)
        } else {
            workdir.join(dst)
        };
        match src {
            Some(s) => copy_tree(Path::new(s), &to),
            None => {
                copy_tree(common::bin(), &to);
                binary = Some(to);
            }
        }
    }
    binary.expect("the binary is copied into the image")
}

#[test]
fn the_image_layout_checks_serves_and_reports_healthy() {
    let st = runtime_stage();
    assert_eq!(st.entrypoint, ["gatehouse"]);
    let tmp = tempfile::tempdir().unwrap();
    let bin = build_layout(&st, tmp.path());
    let workdir = tmp.path().join(st.workdir.trim_start_matches('/'));

    // `check` on the default command's config, from the image's working directory.
    let out = Command::new(&bin)
        .arg("check")
        .args(&st.cmd)
        .current_dir(&workdir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "check in the image layout: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // The default command itself, with the example config's ports moved to free ones
    // (a port taken between choosing and binding means another try).
    let conf = workdir.join(&st.cmd[st.cmd.iter().position(|a| a == "-c").unwrap() + 1]);
    let original = std::fs::read_to_string(&conf).unwrap();
    for addr in ["0.0.0.0:8080", "127.0.0.1:9901", "127.0.0.1:9001"] {
        assert!(
            original.contains(addr),
            "the example config listens on {addr}"
        );
    }
    let (mut child, listen, admin) = (0..5)
        .find_map(|_| {
            let (l, a, d) = (free_port(), free_port(), free_port());
            let text = original
                .replace("0.0.0.0:8080", &format!("127.0.0.1:{l}"))
                .replace("127.0.0.1:9901", &format!("127.0.0.1:{a}"))
                .replace("127.0.0.1:9001", &format!("127.0.0.1:{d}"));
            std::fs::write(&conf, text).unwrap();
            let mut child = Command::new(&bin)
                .args(&st.cmd)
                .current_dir(&workdir)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            let admin = format!("127.0.0.1:{a}").parse().unwrap();
            let up = wait_for(
                "the image's server to be ready or to exit",
                Duration::from_secs(20),
                || {
                    if let Ok(Some(_)) = child.try_wait() {
                        return Some(false);
                    }
                    try_get(admin, "/ready", &[])
                        .ok()
                        .filter(|r| r.status == 200)
                        .map(|_| true)
                },
            );
            up.then_some((child, l, admin))
        })
        .expect("the image's default command serves");
    let _kill = KillOnDrop(&mut child);
    // The demo upstream is a listener of its own, not covered by /ready: poll for it.
    let listen_addr = format!("127.0.0.1:{listen}").parse().unwrap();
    wait_for(
        "a proxied answer from the demo upstream",
        Duration::from_secs(20),
        || {
            try_get(listen_addr, "/echo/hello", &[])
                .ok()
                .filter(|r| r.status == 200)
        },
    );

    // The HEALTHCHECK command, pointed at this instance's admin listener.
    let mut hc = st.healthcheck.clone();
    assert_eq!(hc[..2], ["gatehouse", "health"]);
    let i = hc.iter().position(|a| a == "--admin").expect("--admin") + 1;
    hc[i] = admin.to_string();
    let status = Command::new(&bin).args(&hc[1..]).status().unwrap();
    assert!(status.success(), "healthy instance: {status}");

    // Nothing listening: unhealthy, exit 1.
    let dead = common::dead_addr();
    hc[i] = dead.addr.to_string();
    let out = Command::new(&bin).args(&hc[1..]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("gatehouse health"));
}

struct KillOnDrop<'a>(&'a mut Child);

impl Drop for KillOnDrop<'_> {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
