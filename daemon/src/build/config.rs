//! The image's OCI config, kept as JSON (so that a base image's fields kubelab does not
//! know pass through): reading and editing its fields, and the time its history records.

use serde_json::{json, Map, Value};

/// A string field of the config ("" when missing).
pub(super) fn config_str<'a>(config: &'a Map<String, Value>, key: &str) -> &'a str {
    config.get(key).and_then(Value::as_str).unwrap_or("")
}

/// The object under `key` in the config (made if missing or not an object).
pub(super) fn object<'a>(
    config: &'a mut Map<String, Value>,
    key: &str,
) -> &'a mut Map<String, Value> {
    let value = config.entry(key).or_insert_with(|| json!({}));
    if !value.is_object() {
        *value = json!({});
    }
    match value {
        Value::Object(map) => map,
        _ => unreachable!("made an object just above"),
    }
}

/// The config's `Env`, as `NAME=VALUE` strings.
pub(super) fn env_of(config: &Map<String, Value>) -> Vec<String> {
    config
        .get("Env")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// Now, as the config and its history write times.
pub(super) fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}
