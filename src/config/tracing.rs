//! The top-level `tracing` block: where spans go (OTLP over HTTP), which new traces are kept,
//! and the service name they carry.

use super::ConfigError;
use serde::Deserialize;

/// `tracing:` as written.
#[derive(Debug, Clone, Deserialize, PartialEq, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TracingFile {
    /// The collector's OTLP/HTTP URL, e.g. http://otel-collector:4318 (spans go to its
    /// /v1/traces) or a full URL with its own path. http:// only.
    pub otlp_endpoint: String,
    /// Share of new traces recorded, from 0.0 to 1.0 (default 1.0); a trace continued from
    /// a client's traceparent keeps its parent's decision.
    #[serde(default)]
    pub sample_ratio: Option<f64>,
    /// service.name of the spans (default gatehouse).
    #[serde(default)]
    pub service_name: Option<String>,
}

/// A validated `tracing` block.
#[derive(Debug, Clone, PartialEq)]
pub struct TracingConfig {
    /// The URL spans are posted to (`/v1/traces` added to a URL without a path).
    pub endpoint: String,
    pub sample_ratio: f64,
    pub service_name: String,
}

pub const DEFAULT_SERVICE_NAME: &str = "gatehouse";

pub(super) fn tracing_block(
    errors: &mut Vec<ConfigError>,
    t: &TracingFile,
) -> Option<TracingConfig> {
    let mut ok = true;
    let endpoint = match t.otlp_endpoint.parse::<http::Uri>() {
        Ok(u) if u.scheme_str() == Some("http") && u.authority().is_some() => {
            let base = t.otlp_endpoint.trim_end_matches('/');
            if matches!(u.path(), "" | "/") {
                format!("{base}/v1/traces")
            } else {
                t.otlp_endpoint.clone()
            }
        }
        Ok(u) if u.scheme_str() == Some("https") => {
            errors.push(ConfigError::new(
                "tracing.otlp_endpoint",
                "https is not supported: send to a collector or agent over http (e.g. one on \
                 the same host), which may forward over TLS",
            ));
            ok = false;
            String::new()
        }
        _ => {
            errors.push(ConfigError::new(
                "tracing.otlp_endpoint",
                format!(
                    "{:?} is not an http:// URL (e.g. http://otel-collector:4318)",
                    t.otlp_endpoint
                ),
            ));
            ok = false;
            String::new()
        }
    };
    let sample_ratio = t.sample_ratio.unwrap_or(1.0);
    if !(0.0..=1.0).contains(&sample_ratio) {
        errors.push(ConfigError::new(
            "tracing.sample_ratio",
            format!("{sample_ratio} is not between 0.0 and 1.0"),
        ));
        ok = false;
    }
    let service_name = t
        .service_name
        .clone()
        .unwrap_or_else(|| DEFAULT_SERVICE_NAME.to_string());
    if service_name.trim().is_empty() {
        errors.push(ConfigError::new(
            "tracing.service_name",
            "must not be empty",
        ));
        ok = false;
    }
    ok.then_some(TracingConfig {
        endpoint,
        sample_ratio,
        service_name,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(yaml: &str) -> Result<TracingConfig, Vec<ConfigError>> {
        let t: TracingFile = serde_yaml::from_str(yaml).unwrap();
        let mut errs = Vec::new();
        tracing_block(&mut errs, &t).ok_or(errs)
    }

    #[test]
    fn endpoints_ratios_and_names() {
        let t = block("{ otlp_endpoint: \"http://c:4318\" }").unwrap();
        assert_eq!(t.endpoint, "http://c:4318/v1/traces");
        assert_eq!(t.sample_ratio, 1.0);
        assert_eq!(t.service_name, "gatehouse");
        let t = block("{ otlp_endpoint: \"http://c:4318/\", sample_ratio: 0.25 }").unwrap();
        assert_eq!(t.endpoint, "http://c:4318/v1/traces");
        let t = block("{ otlp_endpoint: \"http://c/otlp/traces\" }").unwrap();
        assert_eq!(t.endpoint, "http://c/otlp/traces");
        let e = block("{ otlp_endpoint: \"https://c:4318\" }").unwrap_err();
        assert!(e[0].message.contains("https is not supported"), "{e:?}");
        let e = block("{ otlp_endpoint: \"c:4318\", sample_ratio: 2 }").unwrap_err();
        assert_eq!(e.len(), 2, "{e:?}");
        assert_eq!(e[1].path, "tracing.sample_ratio");
        let e = block("{ otlp_endpoint: \"http://c\", service_name: \" \" }").unwrap_err();
        assert_eq!(e[0].path, "tracing.service_name");
    }
}
