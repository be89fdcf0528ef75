//! Rewriting the committed Envoy configs for one test run.
//!
//! Each config under `envoy/e2e/` is valid as committed (`make validate`
//! checks it). A line that ends with the marker `# e2e:NAME` has its value
//! (everything after the first `: `) replaced by the value given for NAME.

use std::collections::HashMap;

/// Starts the marker comment; comment-only lines are never rewritten.
const MARKER: &str = "# e2e:";

/// Values for the `# e2e:NAME` markers of one config.
#[derive(Default, Clone)]
pub struct Values(HashMap<String, String>);

impl Values {
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets a marker's value; strings that are not plain YAML scalars should
    /// be passed through [`yaml_string`].
    pub fn set(mut self, name: &str, value: impl Into<String>) -> Self {
        self.0.insert(name.to_owned(), value.into());
        self
    }
}

/// A string as a YAML double-quoted scalar (a JSON string literal is one).
pub fn yaml_string(value: &str) -> String {
    serde_json::Value::String(value.to_owned()).to_string()
}

/// Renders `template`, replacing the value on every marked line. Panics if a
/// marker has no value or a value has no marker, so a renamed marker cannot
/// silently leave a committed port or path in place.
pub fn render(template: &str, values: &Values) -> String {
    let mut used = Vec::new();
    let mut out = String::with_capacity(template.len());
    for line in template.lines() {
        let marker = line
            .rsplit_once(MARKER)
            .filter(|(before, _)| !before.trim_start().starts_with('#'));
        match marker {
            Some((before, name)) => {
                let name = name.trim();
                let value = values
                    .0
                    .get(name)
                    .unwrap_or_else(|| panic!("no value for template marker `{name}`"));
                let (key, _) = before
                    .split_once(": ")
                    .unwrap_or_else(|| panic!("marker `{name}` is not on a `key: value` line"));
                out.push_str(key);
                out.push_str(": ");
                out.push_str(value);
                used.push(name.to_owned());
            }
            None => out.push_str(line),
        }
        out.push('\n');
    }
    for name in values.0.keys() {
        assert!(used.contains(name), "template has no marker `{name}`");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_marked_values_only() {
        let template = "# a `# e2e:NAME` comment\na:\n  port_value: 10 # e2e:port\n  value: '{}' # e2e:cfg\nb: 1\n";
        let values = Values::new()
            .set("port", "42")
            .set("cfg", yaml_string(r#"{"x":"y"}"#));
        assert_eq!(
            render(template, &values),
            "# a `# e2e:NAME` comment\na:\n  port_value: 42\n  value: \"{\\\"x\\\":\\\"y\\\"}\"\nb: 1\n"
        );
    }

    #[test]
    #[should_panic(expected = "template has no marker `nope`")]
    fn unknown_value_is_an_error() {
        render("a: 1\n", &Values::new().set("nope", "1"));
    }
}
