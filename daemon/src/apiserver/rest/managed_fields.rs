//! Who set which field: Kubernetes' `managedFields`, the bookkeeping of server-side
//! apply. Every REST write records its manager (`fieldManager`, else the client's
//! program name) and the fields it set; an apply may only take a field another manager
//! set to a different value with `force`, else it is a conflict; and a field an applier
//! stops naming is removed, unless another manager also set it.
//!
//! A field set is a set of paths, each a list of Kubernetes' FieldsV1 keys (`f:spec`,
//! `f:containers`, `k:{"name":"c"}`, `f:image`); the sets are stored in FieldsV1's nested
//! form. Lists that merge by a key (containers by `name`...) have elements of their own
//! (`k:`), other lists are one field. Pure functions of JSON values.

use std::collections::BTreeSet;

use serde_json::{Map, Value};

use kubelab_proto::v1::ManagedFieldsEntry;

use super::strategic::{merge_key, ListMerge};

/// One field's path: FieldsV1 keys from the object's root.
pub type Path = Vec<String>;
/// The fields a manager set.
pub type FieldSet = BTreeSet<Path>;

/// What is not a field anyone manages: the identity and the server's own metadata,
/// and the status (written through its own subresource).
const UNMANAGED: &[&str] = &["apiVersion", "kind", "status"];
const MANAGED_METADATA: &[&str] = &["labels", "annotations", "finalizers", "ownerReferences"];

/// The fields `value` (an object as sent) sets.
pub fn fields_of(value: &Value) -> FieldSet {
    let mut out = FieldSet::new();
    let Some(object) = value.as_object() else {
        return out;
    };
    for (key, v) in object {
        if UNMANAGED.contains(&key.as_str()) || v.is_null() {
            continue;
        }
        if key == "metadata" {
            for (mk, mv) in v.as_object().into_iter().flatten() {
                if MANAGED_METADATA.contains(&mk.as_str()) && !mv.is_null() {
                    walk(
                        &mut vec!["f:metadata".into(), format!("f:{mk}")],
                        &mut vec!["metadata".into(), mk.clone()],
                        mv,
                        &mut out,
                    );
                }
            }
            continue;
        }
        walk(
            &mut vec![format!("f:{key}")],
            &mut vec![key.clone()],
            v,
            &mut out,
        );
    }
    out
}

/// Adds the fields under `value` at `path`; `names` is the same path as plain field
/// names (what decides how a list merges).
fn walk(path: &mut Path, names: &mut Vec<String>, value: &Value, out: &mut FieldSet) {
    match value {
        Value::Object(map) if !map.is_empty() => {
            for (key, v) in map {
                if v.is_null() {
                    continue;
                }
                path.push(format!("f:{key}"));
                names.push(key.clone());
                walk(path, names, v, out);
                names.pop();
                path.pop();
            }
        }
        Value::Array(items) => match merge_key(names) {
            ListMerge::ByKey(key) => {
                for item in items {
                    let Some(id) = item.get(key) else { continue };
                    path.push(element_key(key, id));
                    let mut element = path.clone();
                    element.push(".".into());
                    out.insert(element);
                    walk(path, names, item, out);
                    path.pop();
                }
            }
            ListMerge::Primitive => {
                for item in items {
                    path.push(format!("v:{item}"));
                    out.insert(path.clone());
                    path.pop();
                }
            }
            ListMerge::Replace => {
                out.insert(path.clone());
            }
        },
        _ => {
            out.insert(path.clone());
        }
    }
}

fn element_key(key: &str, id: &Value) -> String {
    let mut m = Map::new();
    m.insert(key.to_string(), id.clone());
    format!("k:{}", Value::Object(m))
}

/// The value at `path` in `object`, if there is one.
pub fn value_at<'a>(object: &'a Value, path: &[String]) -> Option<&'a Value> {
    let mut at = object;
    for step in path {
        if step == "." {
            continue;
        }
        at = if let Some(field) = step.strip_prefix("f:") {
            at.get(field)?
        } else if let Some(key) = step.strip_prefix("k:") {
            let wanted: Map<String, Value> = serde_json::from_str(key).ok()?;
            at.as_array()?
                .iter()
                .find(|item| wanted.iter().all(|(k, v)| item.get(k) == Some(v)))?
        } else if let Some(v) = step.strip_prefix("v:") {
            let wanted: Value = serde_json::from_str(v).ok()?;
            at.as_array()?.iter().find(|item| **item == wanted)?
        } else {
            return None;
        };
    }
    Some(at)
}

/// Removes the field at `path` from `object` (a map entry, a list element).
pub fn remove_at(object: &mut Value, path: &[String]) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    if last == "." {
        remove_at(object, parents);
        return;
    }
    let mut at = object;
    for step in parents {
        let next = if let Some(field) = step.strip_prefix("f:") {
            at.get_mut(field)
        } else if let Some(key) = step.strip_prefix("k:") {
            let Ok(wanted) = serde_json::from_str::<Map<String, Value>>(key) else {
                return;
            };
            at.as_array_mut().and_then(|items| {
                items
                    .iter_mut()
                    .find(|item| wanted.iter().all(|(k, v)| item.get(k) == Some(v)))
            })
        } else {
            None
        };
        match next {
            Some(next) => at = next,
            None => return,
        }
    }
    if let Some(field) = last.strip_prefix("f:") {
        if let Some(map) = at.as_object_mut() {
            map.remove(field);
        }
    } else if let Some(key) = last.strip_prefix("k:") {
        if let (Ok(wanted), Some(items)) = (
            serde_json::from_str::<Map<String, Value>>(key),
            at.as_array_mut(),
        ) {
            items.retain(|item| !wanted.iter().all(|(k, v)| item.get(k) == Some(v)));
        }
    } else if let Some(v) = last.strip_prefix("v:") {
        if let (Ok(wanted), Some(items)) = (serde_json::from_str::<Value>(v), at.as_array_mut()) {
            items.retain(|item| *item != wanted);
        }
    }
}

/// A field set in FieldsV1's nested form.
pub fn to_fields_v1(set: &FieldSet) -> Value {
    let mut root = Map::new();
    for path in set {
        let mut at = &mut root;
        for step in path {
            at = at
                .entry(step.clone())
                .or_insert_with(|| Value::Object(Map::new()))
                .as_object_mut()
                .expect("inserted as an object");
        }
    }
    Value::Object(root)
}

/// FieldsV1's nested form read back into a set (the leaves are the fields).
pub fn from_fields_v1(value: &Value) -> FieldSet {
    fn collect(value: &Value, path: &mut Path, out: &mut FieldSet) {
        match value.as_object() {
            Some(map) if !map.is_empty() => {
                for (k, v) in map {
                    path.push(k.clone());
                    collect(v, path, out);
                    path.pop();
                }
            }
            _ => {
                if !path.is_empty() {
                    out.insert(path.clone());
                }
            }
        }
    }
    let mut out = FieldSet::new();
    collect(value, &mut Vec::new(), &mut out);
    out
}

/// A path as Kubernetes writes one in a conflict: `.spec.containers[name="c"].image`.
pub fn path_text(path: &[String]) -> String {
    let mut out = String::new();
    for step in path {
        if let Some(f) = step.strip_prefix("f:") {
            out.push('.');
            out.push_str(f);
        } else if let Some(k) = step.strip_prefix("k:") {
            let map: Map<String, Value> = serde_json::from_str(k).unwrap_or_default();
            let inner: Vec<String> = map.iter().map(|(k, v)| format!("{k}={v}")).collect();
            out.push_str(&format!("[{}]", inner.join(",")));
        } else if let Some(v) = step.strip_prefix("v:") {
            out.push_str(&format!("[={v}]"));
        }
    }
    out
}

/// The fields whose values differ between `before` and `after` (set or changed in
/// `after`): what an update takes ownership of.
pub fn changed(before: &Value, after: &Value) -> FieldSet {
    fields_of(after)
        .into_iter()
        .filter(|p| p.last().is_some_and(|l| l != ".") || value_at(before, p).is_none())
        .filter(|p| value_at(before, p) != value_at(after, p))
        .collect()
}

/// One manager's entry, as stored on the object.
pub fn entry(
    manager: &str,
    operation: &str,
    api_version: &str,
    fields: &FieldSet,
) -> ManagedFieldsEntry {
    ManagedFieldsEntry {
        manager: manager.to_string(),
        operation: operation.to_string(),
        api_version: api_version.to_string(),
        time_ms: kubelab_proto::now_ms(),
        fields_v1: to_fields_v1(fields).to_string(),
        subresource: String::new(),
    }
}

/// The fields of a stored entry.
pub fn fields(entry: &ManagedFieldsEntry) -> FieldSet {
    serde_json::from_str(&entry.fields_v1)
        .map(|v: Value| from_fields_v1(&v))
        .unwrap_or_default()
}

/// An update (create, replace, patch) by `manager` set `changed`: it owns them from now
/// on, next to what it owned, and no other manager does (an update never conflicts).
pub fn record_update(
    entries: &mut Vec<ManagedFieldsEntry>,
    manager: &str,
    api_version: &str,
    changed: &FieldSet,
) {
    if changed.is_empty() {
        return;
    }
    let mut mine = FieldSet::new();
    entries.retain_mut(|e| {
        let mut set = fields(e);
        if e.manager == manager && e.operation == "Update" {
            mine.append(&mut set);
            return false;
        }
        set.retain(|p| !changed.contains(p));
        e.fields_v1 = to_fields_v1(&set).to_string();
        !set.is_empty()
    });
    mine.extend(changed.iter().cloned());
    entries.push(entry(manager, "Update", api_version, &mine));
}

/// Fields `manager`'s apply would set to another value than another manager set them:
/// each with that manager's name.
pub fn conflicts(
    entries: &[ManagedFieldsEntry],
    manager: &str,
    applied: &Value,
    applied_fields: &FieldSet,
    current: &Value,
) -> Vec<(String, Path)> {
    let mut out = Vec::new();
    for e in entries {
        if e.manager == manager && e.operation == "Apply" {
            continue;
        }
        for path in fields(e).intersection(applied_fields) {
            if path.last().is_some_and(|l| l == ".") {
                continue;
            }
            if value_at(applied, path) != value_at(current, path) {
                out.push((e.manager.clone(), path.clone()));
            }
        }
    }
    out
}

/// Kubernetes' words for an apply's conflicts.
pub fn conflict_message(conflicts: &[(String, Path)], api_version: &str) -> String {
    let mut managers: Vec<&String> = conflicts.iter().map(|(m, _)| m).collect();
    managers.dedup();
    if conflicts.len() == 1 {
        let (manager, path) = &conflicts[0];
        return format!(
            "Apply failed with 1 conflict: conflict with {manager:?} using {api_version}: {}",
            path_text(path)
        );
    }
    let mut text = format!("Apply failed with {} conflicts:", conflicts.len());
    for manager in managers {
        text.push_str(&format!(" conflicts with {manager:?} using {api_version}:"));
        for (_, path) in conflicts.iter().filter(|(m, _)| m == manager) {
            text.push_str(&format!("\n- {}", path_text(path)));
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn fields_follow_merge_keys_and_round_trip() {
        let pod = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "a", "labels": {"app": "web"}, "finalizers": ["x"]},
            "spec": {"containers": [{"name": "c", "image": "i", "args": ["a", "b"]}]}
        });
        let set = fields_of(&pod);
        let texts: Vec<String> = set.iter().map(|p| path_text(p)).collect();
        assert!(
            texts.contains(&".metadata.labels.app".to_string()),
            "{texts:?}"
        );
        assert!(
            texts.contains(&".spec.containers[name=\"c\"].image".to_string()),
            "{texts:?}"
        );
        assert!(
            texts.contains(&".spec.containers[name=\"c\"].args".to_string()),
            "{texts:?}"
        );
        assert!(
            !texts.iter().any(|t| t.contains(".metadata.name")),
            "{texts:?}"
        );
        let v1 = to_fields_v1(&set);
        assert_eq!(v1["f:metadata"]["f:labels"]["f:app"], json!({}));
        assert_eq!(from_fields_v1(&v1), set);
        let image = set
            .iter()
            .find(|p| path_text(p).ends_with(".image"))
            .unwrap();
        assert_eq!(value_at(&pod, image), Some(&json!("i")));
        let mut gone = pod.clone();
        remove_at(&mut gone, image);
        assert_eq!(gone["spec"]["containers"][0].get("image"), None);
    }

    #[test]
    fn an_apply_conflicts_with_another_managers_value_and_updates_take_over() {
        let a = |labels: Value| json!({"metadata": {"labels": labels}});
        let mut entries = Vec::new();
        record_update(
            &mut entries,
            "kubectl-label",
            "v1",
            &fields_of(&a(json!({"x": "1"}))),
        );
        let current = a(json!({"x": "1"}));
        let applied = a(json!({"x": "2", "y": "3"}));
        let found = conflicts(&entries, "ssa", &applied, &fields_of(&applied), &current);
        assert_eq!(found.len(), 1);
        assert_eq!(
            conflict_message(&found, "v1"),
            "Apply failed with 1 conflict: conflict with \"kubectl-label\" using v1: .metadata.labels.x"
        );
        // The same value is shared ownership, not a conflict.
        let same = a(json!({"x": "1"}));
        assert!(conflicts(&entries, "ssa", &same, &fields_of(&same), &current).is_empty());
        // Another update of x takes it from kubectl-label, whose entry then goes.
        record_update(
            &mut entries,
            "kubectl-edit",
            "v1",
            &fields_of(&a(json!({"x": "9"}))),
        );
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].manager, "kubectl-edit");
    }

    #[test]
    fn an_update_owns_what_it_changed() {
        let before = json!({"metadata": {"labels": {"a": "1", "b": "2"}}});
        let after = json!({"metadata": {"labels": {"a": "1", "b": "3", "c": "4"}}});
        let texts: Vec<String> = changed(&before, &after)
            .iter()
            .map(|p| path_text(p))
            .collect();
        assert_eq!(texts, [".metadata.labels.b", ".metadata.labels.c"]);
    }
}
