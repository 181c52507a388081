//! Reading a client's JSON object as kube-apiserver reads it: `apiVersion` and `kind`
//! checked against what the endpoint serves (and filled in when left out), every field
//! the Kubernetes type does not have reported by path, as its strict decoder reports
//! them (`unknown field "spec.containers[0].comand"`). Unknown fields are found with
//! `serde_ignored`, which watches the `k8s-openapi` deserializer skip them.

/// An object read from JSON, with what the reading noticed.
#[derive(Debug)]
pub struct Decoded<T> {
    pub object: T,
    /// The JSON as sent (with `apiVersion`/`kind` filled in), for `unsupported`.
    pub value: serde_json::Value,
    /// Paths of the fields the Kubernetes type does not have.
    pub unknown: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Not JSON at all, or not an object.
    #[error("couldn't get version/kind; json parse error: {0}")]
    Syntax(String),
    /// JSON, but not this resource's shape (a string where a list belongs...).
    #[error("{kind} in version \"{version}\" cannot be handled as a {kind}: {message}")]
    Shape {
        kind: String,
        version: String,
        message: String,
    },
    /// Another kind or version than the endpoint's.
    #[error("the {field} in the data ({given}) does not match the expected {field} ({expected})")]
    Mismatch {
        field: &'static str,
        given: String,
        expected: String,
    },
}

/// Reads `body` as a `T` (a `k8s-openapi` resource type).
pub fn decode<T>(body: &[u8]) -> Result<Decoded<T>, DecodeError>
where
    T: k8s_openapi::Resource + serde::de::DeserializeOwned,
{
    let mut value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| DecodeError::Syntax(e.to_string()))?;
    let object = value
        .as_object_mut()
        .ok_or_else(|| DecodeError::Syntax("the body is not a JSON object".into()))?;
    for (field, expected, name) in [
        ("apiVersion", T::API_VERSION, "API version"),
        ("kind", T::KIND, "kind"),
    ] {
        match object.get(field) {
            None | Some(serde_json::Value::Null) => {
                object.insert(field.into(), expected.into());
            }
            Some(serde_json::Value::String(given)) if given == expected => {}
            Some(given) => {
                return Err(DecodeError::Mismatch {
                    field: name,
                    given: given
                        .as_str()
                        .map(String::from)
                        .unwrap_or(given.to_string()),
                    expected: expected.into(),
                })
            }
        }
    }
    let mut unknown = Vec::new();
    let decoded: Result<T, _> = serde_ignored::deserialize(&value, |path| {
        unknown.push(path_text(&path));
    });
    let object = decoded.map_err(|e| DecodeError::Shape {
        kind: T::KIND.into(),
        version: T::API_VERSION.into(),
        message: e.to_string(),
    })?;
    Ok(Decoded {
        object,
        value,
        unknown,
    })
}

/// `spec.containers[0].comand`, as Kubernetes writes a field's path.
fn path_text(path: &serde_ignored::Path) -> String {
    use serde_ignored::Path;
    match path {
        Path::Root => String::new(),
        Path::Seq { parent, index } => format!("{}[{index}]", path_text(parent)),
        Path::Map { parent, key } => {
            let parent = path_text(parent);
            if parent.is_empty() {
                key.clone()
            } else {
                format!("{parent}.{key}")
            }
        }
        Path::Some { parent }
        | Path::NewtypeStruct { parent }
        | Path::NewtypeVariant { parent } => path_text(parent),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Pod;

    #[test]
    fn unknown_fields_are_named_by_path() {
        let body = br#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"a","colour":"red"},
            "spec":{"containers":[{"name":"c","image":"busybox","comand":["sh"]}]}}"#;
        let d = decode::<Pod>(body).unwrap();
        assert_eq!(d.unknown, ["metadata.colour", "spec.containers[0].comand"]);
        assert_eq!(d.object.metadata.name.as_deref(), Some("a"));
    }

    #[test]
    fn kind_and_version_are_checked_or_filled_in() {
        let d = decode::<Pod>(br#"{"metadata":{"name":"a"},"spec":{"containers":[]}}"#).unwrap();
        assert_eq!(d.value["kind"], "Pod");
        let e = decode::<Pod>(br#"{"apiVersion":"v1","kind":"Namespace"}"#).unwrap_err();
        assert_eq!(
            e.to_string(),
            "the kind in the data (Namespace) does not match the expected kind (Pod)"
        );
        let e = decode::<Pod>(b"{not json").unwrap_err();
        assert!(
            e.to_string().starts_with("couldn't get version/kind"),
            "{e}"
        );
        let e = decode::<Pod>(br#"{"spec":{"containers":"x"}}"#).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("Pod in version \"v1\" cannot be handled as a Pod: invalid type"),
            "{e}"
        );
    }
}
