//! What kubelab does not support yet, found by a round trip: the fields of a client's
//! JSON that the same object, converted to kubelab's message and back, lacks or holds
//! otherwise. Kept apart from the conversions so that they need no list of fields:
//! whatever they do not carry is named here.

/// The fields of `given` (a client's JSON) that `kept` (the same object converted to
/// kubelab's message and back) lacks or holds otherwise: what kubelab does not support
/// yet, by path (`spec.affinity`, `spec.containers[0].stdin`). Values left at their zero
/// (`false`, `0`, `""`, `{}`, `[]`, `null`) count as unset, quantities compare by value,
/// and what the server owns (status, managedFields) is not compared.
pub fn unsupported(given: &serde_json::Value, kept: &serde_json::Value) -> Vec<String> {
    let mut out = Vec::new();
    diff("", given, kept, &mut out);
    out
}

fn is_zero(v: &serde_json::Value) -> bool {
    use serde_json::Value;
    match v {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.values().all(is_zero),
    }
}

const NOT_COMPARED: &[&str] = &["status", "metadata.managedFields", "apiVersion", "kind"];

fn diff(path: &str, given: &serde_json::Value, kept: &serde_json::Value, out: &mut Vec<String>) {
    use serde_json::Value;
    if NOT_COMPARED.contains(&path) || is_zero(given) {
        return;
    }
    match (given, kept) {
        (Value::Object(g), Value::Object(k)) => {
            for (key, value) in g {
                let child = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                match k.get(key) {
                    Some(kept) => diff(&child, value, kept, out),
                    None if is_zero(value) || NOT_COMPARED.contains(&child.as_str()) => {}
                    None => out.push(child),
                }
            }
        }
        (Value::Array(g), Value::Array(k)) if g.len() == k.len() => {
            for (i, (g, k)) in g.iter().zip(k).enumerate() {
                diff(&format!("{path}[{i}]"), g, k, out);
            }
        }
        (g, k) if g == k => {}
        (Value::String(g), Value::String(k)) if same_quantity(path, g, k) => {}
        (Value::Number(g), Value::String(k)) if same_quantity(path, &g.to_string(), k) => {}
        _ => out.push(path.to_string()),
    }
}

/// Whether two quantities under `resources` (or a size limit) are one value written two
/// ways (`0.5` and `500m`, `1Gi` and `1024Mi`).
fn same_quantity(path: &str, a: &str, b: &str) -> bool {
    let quantity_field = path.contains(".resources.") || path.ends_with(".sizeLimit");
    quantity_field
        && match (
            crate::quantity::parse_millis(a),
            crate::quantity::parse_millis(b),
        ) {
            (Ok(x), Ok(y)) => x == y,
            _ => false,
        }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_a_round_trip_loses_is_named() {
        let given = serde_json::json!({
            "metadata": {"name": "a", "managedFields": [{"manager": "kubectl"}]},
            "spec": {"dnsPolicy": "None", "hostNetwork": false, "affinity": {"nodeAffinity": {}},
                     "containers": [{"name": "c", "stdin": true,
                                     "resources": {"requests": {"cpu": "0.5"}}}]},
            "status": {"phase": "Running"}
        });
        let kept = serde_json::json!({
            "metadata": {"name": "a"},
            "spec": {"dnsPolicy": "ClusterFirst",
                     "containers": [{"name": "c", "resources": {"requests": {"cpu": "500m"}}}]}
        });
        assert_eq!(
            unsupported(&given, &kept),
            ["spec.containers[0].stdin", "spec.dnsPolicy"]
        );
    }
}
