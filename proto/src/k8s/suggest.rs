//! "Did you mean …?" for an unknown field: the field names a Kubernetes type has at the
//! unknown field's place, read from the type's own deserializer (k8s-openapi lists them
//! when it asks for a struct), and the nearest one by edit distance.

use std::cell::Cell;

use k8s_openapi::api::core::v1 as core;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

/// A deserializer that only records the field names a struct asks for.
struct FieldNames<'a>(&'a Cell<&'static [&'static str]>);

#[derive(Debug)]
struct Stop;

impl std::fmt::Display for Stop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("field names recorded")
    }
}

impl std::error::Error for Stop {}

impl serde::de::Error for Stop {
    fn custom<T: std::fmt::Display>(_: T) -> Self {
        Stop
    }
}

impl<'de> serde::Deserializer<'de> for FieldNames<'_> {
    type Error = Stop;

    fn deserialize_any<V: serde::de::Visitor<'de>>(self, _: V) -> Result<V::Value, Stop> {
        Err(Stop)
    }

    fn deserialize_struct<V: serde::de::Visitor<'de>>(
        self,
        _: &'static str,
        fields: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, Stop> {
        self.0.set(fields);
        Err(Stop)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct map enum identifier ignored_any
    }
}

fn names<T: serde::de::DeserializeOwned>() -> &'static [&'static str] {
    let cell = Cell::new(&[][..]);
    let _ = T::deserialize(FieldNames(&cell));
    cell.get()
}

/// The field names of the Pod type at `parent` (a path as `unknown` gives them,
/// list positions written `[N]`), when kubelab knows which type lives there.
fn fields_at(parent: &str) -> &'static [&'static str] {
    // List positions do not change the type: `spec.containers[3]` is a Container.
    let mut shape = String::new();
    let mut skipping = false;
    for c in parent.chars() {
        match c {
            '[' => skipping = true,
            ']' => {
                skipping = false;
                shape.push_str("[]");
            }
            _ if !skipping => shape.push(c),
            _ => {}
        }
    }
    let container = |rest: &str| -> &'static [&'static str] {
        match rest {
            "" => names::<core::Container>(),
            ".securityContext" => names::<core::SecurityContext>(),
            ".resources" => names::<core::ResourceRequirements>(),
            ".ports[]" => names::<core::ContainerPort>(),
            ".env[]" => names::<core::EnvVar>(),
            ".volumeMounts[]" => names::<core::VolumeMount>(),
            ".livenessProbe" | ".readinessProbe" | ".startupProbe" => names::<core::Probe>(),
            _ => &[],
        }
    };
    match shape.as_str() {
        "" => names::<core::Pod>(),
        "metadata" => names::<ObjectMeta>(),
        "spec" => names::<core::PodSpec>(),
        "spec.securityContext" => names::<core::PodSecurityContext>(),
        "spec.volumes[]" => names::<core::Volume>(),
        "spec.tolerations[]" => names::<core::Toleration>(),
        other => other
            .strip_prefix("spec.containers[]")
            .or_else(|| other.strip_prefix("spec.initContainers[]"))
            .map(container)
            .unwrap_or(&[]),
    }
}

/// Levenshtein distance, on bytes (field names are ASCII).
fn distance(a: &str, b: &str) -> usize {
    let b = b.as_bytes();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.bytes().enumerate() {
        let mut previous = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous + usize::from(ca != *cb);
            previous = row[j + 1];
            row[j + 1] = substitution.min(row[j] + 1).min(row[j + 1] + 1);
        }
    }
    row[b.len()]
}

/// The known field nearest to the unknown field at `path` (`spec.containers[0].comand`
/// → `command`), if one is near enough to be what was meant.
pub fn nearest_field(path: &str) -> Option<&'static str> {
    let (parent, field) = match path.rsplit_once('.') {
        Some((parent, field)) => (parent, field),
        None => ("", path),
    };
    let lower = field.to_ascii_lowercase();
    fields_at(parent)
        .iter()
        .map(|known| (distance(&lower, &known.to_ascii_lowercase()), *known))
        .filter(|(d, known)| *d <= 2.max(known.len() / 4))
        .min_by_key(|(d, _)| *d)
        .map(|(_, known)| known)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn misspelt_fields_find_their_nearest() {
        assert_eq!(nearest_field("spec.containers[0].comand"), Some("command"));
        assert_eq!(
            nearest_field("spec.containers[1].imagePullPolicy2"),
            Some("imagePullPolicy")
        );
        assert_eq!(nearest_field("spec.restartpolicy"), Some("restartPolicy"));
        assert_eq!(nearest_field("metadata.lables"), Some("labels"));
        assert_eq!(
            nearest_field("spec.containers[0].resources.limit"),
            Some("limits")
        );
        assert_eq!(nearest_field("spec.zzzzzzzz"), None);
        assert_eq!(nearest_field("spec.volumes[0].nosuch.deep"), None);
    }
}
