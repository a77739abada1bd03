//! `gatehouse schema`: a JSON Schema of the config with a description for every key, which
//! every shipped config passes and a misspelt key or a wrong choice fails; the copy shipped
//! for editors (`conf/gatehouse.schema.json`) is the one the binary prints.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test may panic on what it did not expect

mod common;

use serde_json::Value;
use std::process::Command;

fn schema_text() -> String {
    let out = Command::new(common::bin())
        .arg("schema")
        .output()
        .expect("run gatehouse schema");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn schema() -> Value {
    serde_json::from_str(&schema_text()).expect("gatehouse schema prints JSON")
}

fn yaml(text: &str) -> Value {
    let v: serde_yaml::Value = serde_yaml::from_str(text).expect("YAML");
    serde_json::to_value(v).expect("YAML as JSON")
}

fn errors(validator: &jsonschema::Validator, instance: &Value) -> Vec<String> {
    validator
        .iter_errors(instance)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect()
}

/// Every property of every object in the schema, with the path that leads to it.
fn properties<'a>(v: &'a Value, path: String, out: &mut Vec<(String, &'a Value)>) {
    match v {
        Value::Object(m) => {
            if let Some(Value::Object(props)) = m.get("properties") {
                for (k, p) in props {
                    out.push((format!("{path}.{k}"), p));
                }
            }
            for (k, child) in m {
                properties(child, format!("{path}/{k}"), out);
            }
        }
        Value::Array(a) => a.iter().for_each(|c| properties(c, path.clone(), out)),
        _ => {}
    }
}

#[test]
fn the_schema_is_valid_and_describes_every_key() {
    let s = schema();
    jsonschema::meta::validate(&s).expect("a valid JSON Schema");
    assert_eq!(s["$schema"], "https://json-schema.org/draft/2020-12/schema");
    let mut props = Vec::new();
    properties(&s, String::new(), &mut props);
    assert!(props.len() > 100, "only {} keys", props.len());
    for (path, p) in &props {
        let d = p["description"].as_str().unwrap_or("");
        assert!(!d.trim().is_empty(), "{path} has no description");
    }
    // a key that serde renames keeps its file name
    let discovery = &s["$defs"]["DiscoveryFile"]["properties"];
    assert!(discovery.get("static").is_some(), "{discovery:#}");
}

#[test]
fn every_shipped_config_passes_the_schema() {
    let validator = jsonschema::validator_for(&schema()).unwrap();
    let mut n = 0;
    for entry in std::fs::read_dir("conf").unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            let text = std::fs::read_to_string(&path).unwrap();
            let errs = errors(&validator, &yaml(&text));
            assert!(errs.is_empty(), "{}: {errs:#?}", path.display());
            n += 1;
        }
    }
    assert!(
        n >= 3,
        "conf/ holds gatehouse.yaml, minimal.yaml and fleet.yaml"
    );
}

#[test]
fn the_schema_refuses_what_the_loader_refuses() {
    let validator = jsonschema::validator_for(&schema()).unwrap();
    let base = std::fs::read_to_string("conf/gatehouse.yaml").unwrap();
    assert!(errors(&validator, &yaml(&base)).is_empty());
    for (from, to, at) in [
        ("  threads: 2", "  thread: 2", "/server"),
        (
            "balance: round_robin",
            "balance: round_robbin",
            "/backends/demo/balance",
        ),
        (
            "timeout: 1s                 # optional",
            "timeout: 1 # optional",
            "/endpoints/0/timeout",
        ),
        (
            "  access_log: true",
            "  access_log: yes please",
            "/server/access_log",
        ),
        ("version: 1 ", "", ""),
    ] {
        assert!(
            base.contains(from),
            "{from:?} is not in conf/gatehouse.yaml"
        );
        let broken = base.replacen(from, to, 1);
        let errs = errors(&validator, &yaml(&broken));
        assert!(!errs.is_empty(), "{to:?} passed the schema");
        assert!(
            errs.iter().any(|e| e.starts_with(&format!("{at}:"))),
            "{to:?}: no error at {at:?} in {errs:#?}"
        );
    }
}

#[test]
fn the_shipped_schema_is_the_generated_one() {
    let shipped = std::fs::read_to_string("conf/gatehouse.schema.json").unwrap();
    assert!(
        shipped == schema_text(),
        "conf/gatehouse.schema.json is stale: run `gatehouse schema > conf/gatehouse.schema.json`"
    );
    for name in ["gatehouse.yaml", "minimal.yaml", "fleet.yaml"] {
        let text = std::fs::read_to_string(format!("conf/{name}")).unwrap();
        assert!(
            text.lines()
                .any(|l| l == "# yaml-language-server: $schema=gatehouse.schema.json"),
            "conf/{name} does not name its schema for editors"
        );
    }
}
