//! Strategic merge patch, Kubernetes' own patch type (what `kubectl apply`, `edit` and
//! `patch` send by default): a JSON merge patch in which some lists merge by a key
//! (containers by `name`, ports by `containerPort`) instead of being replaced, with the
//! directives `$patch: replace|delete|merge`, `$setElementOrder/FIELD`,
//! `$deleteFromPrimitiveList/FIELD` and `$retainKeys`.
//!
//! Hand-written: no maintained crate implements it (it lives in Kubernetes' Go code,
//! driven by struct tags). The merge keys of the resources kubelab serves are listed in
//! `merge_key`, from the `patchMergeKey` tags of the Kubernetes API types. Pure.

use serde_json::{Map, Value};

/// Why a patch could not be applied.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PatchError(pub String);

/// How a list at a path merges.
#[derive(Debug, PartialEq, Eq)]
pub enum ListMerge {
    /// Replaced whole (JSON merge patch's rule, and lists without a strategy).
    Replace,
    /// Elements matched by this field.
    ByKey(&'static str),
    /// A list of strings or numbers merged as a set (finalizers).
    Primitive,
}

/// The list strategy of the field at `path` (object keys only, list positions left out).
pub fn merge_key(path: &[String]) -> ListMerge {
    let last = |n: usize| -> Vec<&str> {
        path.iter()
            .rev()
            .take(n)
            .rev()
            .map(String::as_str)
            .collect()
    };
    match last(2).as_slice() {
        [c, "env"] | [c, "volumeMounts"] | [c, "ports"] | [c, "volumeDevices"]
            if matches!(*c, "containers" | "initContainers" | "ephemeralContainers") =>
        {
            return match last(1)[0] {
                "env" => ListMerge::ByKey("name"),
                "volumeMounts" => ListMerge::ByKey("mountPath"),
                "ports" => ListMerge::ByKey("containerPort"),
                _ => ListMerge::ByKey("devicePath"),
            };
        }
        ["metadata", "ownerReferences"] => return ListMerge::ByKey("uid"),
        ["metadata", "finalizers"] => return ListMerge::Primitive,
        ["status", "conditions"] => return ListMerge::ByKey("type"),
        ["status", "addresses"] => return ListMerge::ByKey("type"),
        _ => {}
    }
    match last(1).first().copied() {
        Some("containers" | "initContainers" | "ephemeralContainers") => ListMerge::ByKey("name"),
        Some("volumes" | "imagePullSecrets") => ListMerge::ByKey("name"),
        Some("hostAliases") => ListMerge::ByKey("ip"),
        _ => ListMerge::Replace,
    }
}

/// Applies `patch` to `target` in place.
pub fn apply(target: &mut Value, patch: &Value) -> Result<(), PatchError> {
    if !patch.is_object() {
        return Err(PatchError(
            "a strategic merge patch must be a JSON object".into(),
        ));
    }
    merge_value(target, patch, &mut Vec::new())
}

fn merge_value(
    target: &mut Value,
    patch: &Value,
    path: &mut Vec<String>,
) -> Result<(), PatchError> {
    match patch {
        Value::Object(p) => {
            match p.get("$patch").and_then(Value::as_str) {
                Some("replace") => {
                    *target = strip(patch);
                    return Ok(());
                }
                Some("delete") => {
                    *target = Value::Null;
                    return Ok(());
                }
                Some("merge") | None => {}
                Some(other) => {
                    return Err(PatchError(format!("unknown patch type: {other:?}")));
                }
            }
            if !target.is_object() {
                *target = Value::Object(Map::new());
            }
            let Some(t) = target.as_object_mut() else {
                return Ok(());
            };
            merge_map(t, p, path)
        }
        other => {
            *target = strip(other);
            Ok(())
        }
    }
}

fn merge_map(
    target: &mut Map<String, Value>,
    patch: &Map<String, Value>,
    path: &mut Vec<String>,
) -> Result<(), PatchError> {
    let mut orders = Vec::new();
    for (key, value) in patch {
        if key == "$patch" || key == "$retainKeys" {
            continue;
        }
        if let Some(field) = key.strip_prefix("$setElementOrder/") {
            orders.push((field.to_string(), value.clone()));
            continue;
        }
        if let Some(field) = key.strip_prefix("$deleteFromPrimitiveList/") {
            if let (Some(Value::Array(list)), Value::Array(gone)) = (target.get_mut(field), value) {
                list.retain(|v| !gone.contains(v));
            }
            continue;
        }
        if value.is_null() {
            target.remove(key);
            continue;
        }
        path.push(key.clone());
        match value {
            Value::Array(items) => {
                let current = target.remove(key).unwrap_or(Value::Array(Vec::new()));
                let merged = merge_list(current, items, path)?;
                target.insert(key.clone(), merged);
            }
            _ => {
                let slot = target.entry(key.clone()).or_insert(Value::Null);
                merge_value(slot, value, path)?;
                if slot.is_null() {
                    target.remove(key);
                }
            }
        }
        path.pop();
    }
    if let Some(Value::Array(keep)) = patch.get("$retainKeys") {
        target.retain(|k, _| keep.iter().any(|w| w == k));
    }
    for (field, order) in orders {
        path.push(field.clone());
        let strategy = merge_key(path);
        path.pop();
        if let (ListMerge::ByKey(k), Some(Value::Array(list)), Value::Array(order)) =
            (strategy, target.get_mut(&field), &order)
        {
            let rank = |v: &Value| {
                order
                    .iter()
                    .position(|o| o.get(k) == v.get(k))
                    .unwrap_or(usize::MAX)
            };
            list.sort_by_key(rank);
        }
    }
    Ok(())
}

fn merge_list(
    current: Value,
    patch: &[Value],
    path: &mut Vec<String>,
) -> Result<Value, PatchError> {
    let mut list = match current {
        Value::Array(list) => list,
        _ => Vec::new(),
    };
    // `[{"$patch": "replace"}, ...]` replaces the list with the rest.
    let replace = patch
        .iter()
        .any(|v| v.get("$patch").and_then(Value::as_str) == Some("replace"));
    match merge_key(path) {
        _ if replace => Ok(Value::Array(
            patch
                .iter()
                .filter(|v| v.get("$patch").is_none())
                .map(strip)
                .collect(),
        )),
        ListMerge::Replace => Ok(Value::Array(patch.iter().map(strip).collect())),
        ListMerge::Primitive => {
            for v in patch {
                if !list.contains(v) {
                    list.push(v.clone());
                }
            }
            Ok(Value::Array(list))
        }
        ListMerge::ByKey(key) => {
            for item in patch {
                let Some(id) = item.get(key) else {
                    return Err(PatchError(format!(
                        "map: {item} does not contain declared merge key: {key}"
                    )));
                };
                let at = list.iter().position(|v| v.get(key) == Some(id));
                let delete = item.get("$patch").and_then(Value::as_str) == Some("delete");
                match (at, delete) {
                    (Some(i), true) => {
                        list.remove(i);
                    }
                    (None, true) => {}
                    (Some(i), false) => merge_value(&mut list[i], item, path)?,
                    (None, false) => list.push(strip(item)),
                }
            }
            Ok(Value::Array(list))
        }
    }
}

/// A value with the patch directives removed (what is stored when it is added whole).
fn strip(value: &Value) -> Value {
    match value {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, _)| !k.starts_with('$'))
                .map(|(k, v)| (k.clone(), strip(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(strip).collect()),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn patched(mut target: Value, patch: Value) -> Value {
        apply(&mut target, &patch).unwrap();
        target
    }

    #[test]
    fn containers_merge_by_name_and_maps_merge() {
        let pod = json!({
            "metadata": {"labels": {"app": "web", "tier": "front"}},
            "spec": {"containers": [
                {"name": "a", "image": "x:1", "env": [{"name": "A", "value": "1"}]},
                {"name": "b", "image": "y:1"}
            ]}
        });
        let out = patched(
            pod,
            json!({
                "metadata": {"labels": {"tier": null, "env": "lab"}},
                "spec": {"containers": [{"name": "b", "image": "y:2"},
                                        {"name": "a", "env": [{"name": "B", "value": "2"}]}]}
            }),
        );
        assert_eq!(
            out["metadata"]["labels"],
            json!({"app": "web", "env": "lab"})
        );
        assert_eq!(out["spec"]["containers"][0]["image"], "x:1");
        assert_eq!(out["spec"]["containers"][0]["env"][1]["name"], "B");
        assert_eq!(out["spec"]["containers"][1]["image"], "y:2");
    }

    #[test]
    fn directives_delete_replace_and_order() {
        let pod = json!({"spec": {
            "containers": [{"name": "a"}, {"name": "b"}],
            "tolerations": [{"key": "k"}],
            "volumes": [{"name": "v", "emptyDir": {}}]
        }, "metadata": {"finalizers": ["x"]}});
        let out = patched(
            pod,
            json!({
                "$setElementOrder/containers": [{"name": "b"}, {"name": "a"}],
                "spec": {
                    "$setElementOrder/containers": [{"name": "b"}, {"name": "a"}],
                    "containers": [{"name": "c", "$patch": "delete"}, {"name": "a", "image": "i"}],
                    "tolerations": [{"key": "other"}],
                    "volumes": [{"$patch": "replace"}, {"name": "w", "emptyDir": {}}]
                },
                "metadata": {"finalizers": ["y"], "$deleteFromPrimitiveList/finalizers": ["x"]}
            }),
        );
        assert_eq!(
            out["spec"]["containers"],
            json!([{"name": "b"}, {"name": "a", "image": "i"}])
        );
        assert_eq!(out["spec"]["tolerations"], json!([{"key": "other"}]));
        assert_eq!(
            out["spec"]["volumes"],
            json!([{"name": "w", "emptyDir": {}}])
        );
        assert_eq!(out["metadata"]["finalizers"], json!(["y"]));
    }

    #[test]
    fn a_list_element_without_its_merge_key_is_refused() {
        let mut pod = json!({"spec": {"containers": []}});
        let e = apply(&mut pod, &json!({"spec": {"containers": [{"image": "x"}]}})).unwrap_err();
        assert!(e.0.contains("merge key: name"), "{e}");
        assert!(apply(&mut pod, &json!([1])).is_err());
    }
}
