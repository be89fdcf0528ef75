//! Checking a Kubernetes custom resource against its CRD's structural
//! OpenAPI v3 schema, without a cluster: what the API server would refuse
//! (wrong types, values outside an enum or a bound, missing required fields)
//! and what it would silently prune (fields the schema does not know).
//!
//! Supported keywords: `type`, `properties`, `additionalProperties`,
//! `x-kubernetes-preserve-unknown-fields`, `required`, `enum`, `items`,
//! `minLength`, `maxLength`, `minimum`, `maximum`, `maxItems`,
//! `maxProperties`, `nullable`. Not checked: `pattern` and CEL
//! `x-kubernetes-validations` rules.

use serde_json::Value;

/// The `openAPIV3Schema` of version `version` of the CRD for `kind` in a
/// multi-document CRD YAML file.
pub fn crd_schema(crds_yaml: &str, kind: &str, version: &str) -> Option<Value> {
    for document in serde_yaml_ng::Deserializer::from_str(crds_yaml) {
        let Ok(crd) = <Value as serde::Deserialize>::deserialize(document) else {
            continue;
        };
        if crd["kind"] != "CustomResourceDefinition" || crd["spec"]["names"]["kind"] != kind {
            continue;
        }
        let versions = crd["spec"]["versions"].as_array()?;
        return versions
            .iter()
            .find(|v| v["name"] == version)
            .map(|v| v["schema"]["openAPIV3Schema"].clone());
    }
    None
}

/// Every violation of `schema` by `value`, each naming its path (`.spec.url`).
pub fn violations(value: &Value, schema: &Value) -> Vec<String> {
    let mut found = Vec::new();
    check(value, schema, "", &mut found);
    found
}

fn check(value: &Value, schema: &Value, path: &str, found: &mut Vec<String>) {
    let here = if path.is_empty() { "." } else { path };
    if value.is_null() {
        if schema["nullable"] != true {
            found.push(format!("{here}: null is not allowed"));
        }
        return;
    }
    if let Some(expected) = schema["type"].as_str() {
        let matches = match expected {
            "object" => value.is_object(),
            "array" => value.is_array(),
            "string" => value.is_string(),
            "integer" => value.is_i64() || value.is_u64(),
            "number" => value.is_number(),
            "boolean" => value.is_boolean(),
            _ => true,
        };
        if !matches {
            found.push(format!("{here}: expected {expected}, got {value}"));
            return;
        }
    }
    if let Some(allowed) = schema["enum"].as_array() {
        if !allowed.contains(value) {
            found.push(format!("{here}: {value} is not one of {allowed:?}"));
        }
    }
    match value {
        Value::String(s) => check_length(s.chars().count(), schema, here, found),
        Value::Number(n) => {
            let n = n.as_f64().unwrap_or(f64::NAN);
            if schema["minimum"].as_f64().is_some_and(|min| n < min) {
                found.push(format!(
                    "{here}: {n} is below minimum {}",
                    schema["minimum"]
                ));
            }
            if schema["maximum"].as_f64().is_some_and(|max| n > max) {
                found.push(format!(
                    "{here}: {n} is above maximum {}",
                    schema["maximum"]
                ));
            }
        }
        Value::Array(items) => {
            if schema["maxItems"]
                .as_u64()
                .is_some_and(|max| items.len() as u64 > max)
            {
                found.push(format!("{here}: more than {} items", schema["maxItems"]));
            }
            for (i, item) in items.iter().enumerate() {
                check(item, &schema["items"], &format!("{path}[{i}]"), found);
            }
        }
        Value::Object(fields) => check_object(fields, schema, path, found),
        _ => {}
    }
}

fn check_length(len: usize, schema: &Value, here: &str, found: &mut Vec<String>) {
    if schema["minLength"]
        .as_u64()
        .is_some_and(|min| (len as u64) < min)
    {
        found.push(format!("{here}: shorter than {}", schema["minLength"]));
    }
    if schema["maxLength"]
        .as_u64()
        .is_some_and(|max| len as u64 > max)
    {
        found.push(format!("{here}: longer than {}", schema["maxLength"]));
    }
}

fn check_object(
    fields: &serde_json::Map<String, Value>,
    schema: &Value,
    path: &str,
    found: &mut Vec<String>,
) {
    let here = if path.is_empty() { "." } else { path };
    for name in schema["required"].as_array().into_iter().flatten() {
        if let Some(name) = name.as_str() {
            if !fields.contains_key(name) {
                found.push(format!("{here}: missing required field `{name}`"));
            }
        }
    }
    if schema["maxProperties"]
        .as_u64()
        .is_some_and(|max| fields.len() as u64 > max)
    {
        found.push(format!(
            "{here}: more than {} fields",
            schema["maxProperties"]
        ));
    }
    let preserve = schema["x-kubernetes-preserve-unknown-fields"] == true;
    for (name, field) in fields {
        let field_path = format!("{path}.{name}");
        if let Some(known) = schema["properties"].get(name) {
            check(field, known, &field_path, found);
        } else if schema["additionalProperties"].is_object() {
            check(field, &schema["additionalProperties"], &field_path, found);
        } else if !preserve && schema.get("properties").is_some() {
            found.push(format!(
                "{field_path}: unknown field (the API server would prune it)"
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Value {
        json!({
            "type": "object",
            "required": ["url"],
            "properties": {
                "url": {"type": "string", "minLength": 1},
                "phase": {"type": "string", "enum": ["AUTHN", "AUTHZ"]},
                "ports": {"type": "array", "items": {"type": "integer", "minimum": 1, "maximum": 65535}},
                "config": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                "labels": {"type": "object", "additionalProperties": {"type": "string", "maxLength": 3}}
            }
        })
    }

    #[test]
    fn a_valid_resource_has_no_violations() {
        let value = json!({"url": "oci://x", "phase": "AUTHZ", "ports": [80],
            "config": {"anything": {"goes": 1}}, "labels": {"a": "b"}});
        assert_eq!(violations(&value, &schema()), Vec::<String>::new());
    }

    #[test]
    fn each_violation_names_its_path() {
        let value = json!({"phase": "LATE", "ports": [0, "x"], "labels": {"a": "long"}, "typo": 1});
        let found = violations(&value, &schema());
        for expected in [
            ".: missing required field `url`",
            ".phase: \"LATE\" is not one of",
            ".ports[0]: 0 is below minimum 1",
            ".ports[1]: expected integer",
            ".labels.a: longer than 3",
            ".typo: unknown field",
        ] {
            assert!(
                found.iter().any(|f| f.starts_with(expected)),
                "no violation starting with {expected:?} in {found:#?}"
            );
        }
        assert_eq!(found.len(), 6, "{found:#?}");
    }
}
