//! Rewriting marked lines of the shipped configs (`key: value # demo:NAME`), so the files
//! under `envoy/demo/` and `demo/policies/` stay valid as committed.

use std::collections::BTreeMap;

/// Replaces the value of every line marked `# demo:NAME` with `values[NAME]`; fails on a
/// marker without a value or a value without a marker.
pub fn render(text: &str, values: &BTreeMap<&str, String>) -> anyhow::Result<String> {
    let mut used = std::collections::BTreeSet::new();
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        let marker = if line.trim_start().starts_with('#') {
            None // a comment may mention markers
        } else {
            line.split_once("# demo:")
        };
        match marker {
            Some((head, name)) => {
                let name = name.trim();
                let value = values
                    .get(name)
                    .ok_or_else(|| anyhow::anyhow!("no value for marker demo:{name}"))?;
                let (key, _) = head
                    .split_once(':')
                    .ok_or_else(|| anyhow::anyhow!("marker demo:{name} on a line without a key"))?;
                out.push_str(&format!("{key}: {value} # demo:{name}"));
                used.insert(name.to_string());
            }
            None => out.push_str(line),
        }
        out.push('\n');
    }
    if let Some(unused) = values.keys().find(|k| !used.contains(**k)) {
        anyhow::bail!("no marker demo:{unused}");
    }
    Ok(out)
}

/// A JSON string literal (also a valid YAML scalar).
pub fn quoted(s: &str) -> String {
    serde_json::Value::String(s.to_string()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marked_values_are_replaced_and_checked() {
        let text = "# `# demo:NAME` lines\na:\n  port_value: 10000 # demo:port\n  other: 1\n";
        let values = BTreeMap::from([("port", "23456".to_string())]);
        assert_eq!(
            render(text, &values).ok().as_deref(),
            Some("# `# demo:NAME` lines\na:\n  port_value: 23456 # demo:port\n  other: 1\n")
        );
        assert!(render(text, &BTreeMap::new()).is_err());
        let extra = BTreeMap::from([("port", "1".to_string()), ("x", "2".to_string())]);
        assert!(render(text, &extra).is_err());
        assert_eq!(quoted("a\"b"), "\"a\\\"b\"");
    }
}
