//! Every shipped config validates; every broken config fails with the message it expects.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test may panic on what it did not expect

mod common;

use std::process::Command;

fn check(path: &std::path::Path) -> (bool, String) {
    let out = Command::new(common::bin())
        .arg("check")
        .arg("-c")
        .arg(path)
        .output()
        .expect("run gatehouse check");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

#[test]
fn every_shipped_config_is_valid() {
    let mut n = 0;
    for entry in std::fs::read_dir("conf").expect("conf/ exists") {
        let path = entry.expect("dir entry").path();
        if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            let (ok, text) = check(&path);
            assert!(ok, "{} should be valid:\n{text}", path.display());
            n += 1;
        }
    }
    assert!(n >= 2, "conf/ should hold gatehouse.yaml and minimal.yaml");
}

/// Each file starts with one or more `# expect: <text>` lines; `check` must fail and print
/// every one of them.
#[test]
fn every_broken_config_fails_with_its_message() {
    let mut n = 0;
    for entry in std::fs::read_dir("tests/broken-configs").expect("folder exists") {
        let path = entry.expect("dir entry").path();
        let text = std::fs::read_to_string(&path).expect("read");
        let expects: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# expect: "))
            .collect();
        assert!(
            !expects.is_empty(),
            "{} has no '# expect:' line",
            path.display()
        );
        let (ok, out) = check(&path);
        assert!(!ok, "{} should be rejected", path.display());
        for e in expects {
            assert!(
                out.contains(e),
                "{}: expected {e:?} in:\n{out}",
                path.display()
            );
        }
        n += 1;
    }
    assert!(n >= 10);
}

#[test]
fn missing_file_is_a_clear_error() {
    let (ok, out) = check(std::path::Path::new("/nonexistent/gatehouse.yaml"));
    assert!(!ok);
    assert!(
        out.contains("cannot read /nonexistent/gatehouse.yaml"),
        "{out}"
    );
}
