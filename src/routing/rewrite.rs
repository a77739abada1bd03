//! Rewrite templates such as `/catalog/{cat_id}/{rest}`: the path sent upstream, made of
//! literal text and the placeholders the route matched.

use crate::config::placeholders;

/// A compiled rewrite template such as `/catalog/{cat_id}/{rest}`.
#[derive(Debug, Clone, PartialEq)]
pub struct Rewrite {
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq)]
enum Part {
    Lit(String),
    Param(String),
}

impl Rewrite {
    /// Compiles the rewrite of the endpoint routed at `path`: the template must start with
    /// '/' and name only placeholders of the path.
    pub fn compile(path: &str, template: &str) -> Result<Rewrite, String> {
        if !template.starts_with('/') {
            return Err(format!("{template:?} must start with '/'"));
        }
        let known = placeholders(path);
        let r = Rewrite::parse(template)?;
        for p in &r.parts {
            if let Part::Param(name) = p {
                if !known.contains(&name.as_str()) {
                    return Err(format!(
                        "placeholder {{{name}}} is not in the path {path:?}"
                    ));
                }
            }
        }
        Ok(r)
    }

    fn parse(template: &str) -> Result<Rewrite, String> {
        let mut parts = Vec::new();
        let mut rest = template;
        while let Some(start) = rest.find('{') {
            if start > 0 {
                parts.push(Part::Lit(rest[..start].to_string()));
            }
            let Some(len) = rest[start..].find('}') else {
                return Err(format!("unclosed '{{' in {template:?}"));
            };
            let name = rest[start + 1..start + len].trim_start_matches('*');
            if name.is_empty() {
                return Err(format!("empty placeholder in {template:?}"));
            }
            parts.push(Part::Param(name.to_string()));
            rest = &rest[start + len + 1..];
        }
        if rest.contains('}') {
            return Err(format!("unmatched '}}' in {template:?}"));
        }
        if !rest.is_empty() {
            parts.push(Part::Lit(rest.to_string()));
        }
        Ok(Rewrite { parts })
    }

    /// Renders the template with the matched placeholders into `out`.
    pub fn render(&self, params: &matchit::Params<'_, '_>, out: &mut String) {
        for p in &self.parts {
            match p {
                Part::Lit(s) => out.push_str(s),
                Part::Param(name) => out.push_str(params.get(name).unwrap_or("")),
            }
        }
    }
}
