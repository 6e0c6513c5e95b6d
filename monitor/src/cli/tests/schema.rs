//! The `--json` views against their documented schemas in `docs/`, with a
//! checker for the part of JSON Schema those files use.

use serde_json::Value;

use super::three;
use crate::cli::{SettingsJson, StateJson};

/// Check `value` against the subset of JSON Schema the documented
/// schema uses: local `$ref`, `type`, `enum`, `required`, `properties`,
/// `additionalProperties: false`, `items`, `minimum`, `maximum`.
fn check(value: &Value, schema: &Value, root: &Value, at: &str) -> Vec<String> {
    let mut errors = Vec::new();
    let schema = match schema.get("$ref").and_then(Value::as_str) {
        Some(r) => {
            let path = r.strip_prefix('#').expect("local $ref");
            let target = root
                .pointer(path)
                .unwrap_or_else(|| panic!("$ref {r} resolves"));
            errors.extend(check(value, target, root, at));
            schema
        }
        None => schema,
    };
    if let Some(types) = schema.get("type") {
        let types: Vec<&str> = match types {
            Value::String(t) => vec![t.as_str()],
            Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
            other => panic!("bad type {other} at {at}"),
        };
        let fits = |t: &str| match t {
            "object" => value.is_object(),
            "array" => value.is_array(),
            "string" => value.is_string(),
            "boolean" => value.is_boolean(),
            "null" => value.is_null(),
            "integer" => value.is_i64() || value.is_u64(),
            "number" => value.is_number(),
            other => panic!("unknown type {other} at {at}"),
        };
        if !types.iter().any(|t| fits(t)) {
            errors.push(format!("{at}: {value} is not of type {types:?}"));
        }
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array) {
        if !allowed.contains(value) {
            errors.push(format!("{at}: {value} is not one of {allowed:?}"));
        }
    }
    if let Some(n) = value.as_f64() {
        if schema
            .get("minimum")
            .and_then(Value::as_f64)
            .is_some_and(|m| n < m)
        {
            errors.push(format!("{at}: {n} is below the minimum"));
        }
        if schema
            .get("maximum")
            .and_then(Value::as_f64)
            .is_some_and(|m| n > m)
        {
            errors.push(format!("{at}: {n} is above the maximum"));
        }
    }
    if let Some(object) = value.as_object() {
        let properties = schema.get("properties").and_then(Value::as_object);
        for key in schema
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let key = key.as_str().expect("required names are strings");
            if !object.contains_key(key) {
                errors.push(format!("{at}: required key {key:?} is missing"));
            }
        }
        for (key, v) in object {
            match properties.and_then(|p| p.get(key)) {
                Some(sub) => errors.extend(check(v, sub, root, &format!("{at}.{key}"))),
                None if schema.get("additionalProperties") == Some(&Value::Bool(false)) => {
                    errors.push(format!("{at}: key {key:?} is not in the schema"))
                }
                None => {}
            }
        }
    }
    if let (Some(items), Some(array)) = (schema.get("items"), value.as_array()) {
        for (i, v) in array.iter().enumerate() {
            errors.extend(check(v, items, root, &format!("{at}[{i}]")));
        }
    }
    errors
}

/// `docs/NAME.schema.json`, parsed.
fn schema(name: &str) -> Value {
    let path = format!("{}/../docs/{name}.schema.json", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let schema: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"));
    assert_eq!(
        schema["$schema"], "https://json-schema.org/draft/2020-12/schema",
        "{path}"
    );
    schema
}

/// `doc` fits `schema`; every key `object` (a schema of an object)
/// documents is required: null is how a value is absent, so each one is
/// always produced.
fn assert_fits(doc: &Value, schema: &Value, objects: &[&Value]) {
    let errors = check(doc, schema, schema, "$");
    assert!(errors.is_empty(), "{errors:#?}\n{doc:#}");
    for object in objects {
        let mut required: Vec<&str> = object["required"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(Value::as_str)
            .collect();
        let mut properties: Vec<&str> = object["properties"]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        required.sort();
        properties.sort();
        assert_eq!(required, properties);
    }
}

#[test]
fn state_json_matches_the_documented_schema() {
    let schema = schema("show-state");
    let doc = serde_json::to_value(StateJson::from(&three())).unwrap();
    assert_fits(
        &doc,
        &schema,
        &[
            &schema,
            &schema["$defs"]["node"],
            &schema["$defs"]["monitor"],
        ],
    );
}

#[test]
fn settings_json_matches_the_documented_schema() {
    let schema = schema("show-settings");
    let mut state = three();
    state.synchronous_standby_names = "ANY 1 (pgpilot_2)".into();
    let doc = serde_json::to_value(SettingsJson::from(&state)).unwrap();
    assert_fits(&doc, &schema, &[&schema, &schema["$defs"]["node"]]);
}

#[test]
fn the_schema_check_catches_drift() {
    let schema = schema("show-state");
    let mut doc = serde_json::to_value(StateJson::from(&three())).unwrap();
    doc["nodes"][0]
        .as_object_mut()
        .unwrap()
        .remove("connection");
    doc["nodes"][1]["lag_bytes"] = "4096".into();
    doc["nodes"][2]["connection"] = "maybe".into();
    doc["nodes"][2]["colour"] = "blue".into();
    let errors = check(&doc, &schema, &schema, "$");
    assert_eq!(errors.len(), 4, "{errors:#?}");
}
