//! Label selectors, in Kubernetes' text form: `app=web,tier!=db,env in (a,b),env notin (c),canary,!legacy`.
//!
//! Owns parsing a selector and matching it against an object's labels. Pure functions:
//! nothing here reads the store.

use std::collections::HashMap;

use super::validation::check_labels;
use super::ApiError;

/// One comma-separated part of a selector.
#[derive(Clone, Debug, PartialEq)]
enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    DoesNotExist(String),
}

/// A parsed selector; the empty selector matches everything.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LabelSelector(Vec<Requirement>);

impl LabelSelector {
    pub fn parse(text: &str) -> Result<Self, ApiError> {
        let mut requirements = Vec::new();
        for part in split_top_level(text)? {
            let part = part.trim();
            if part.is_empty() {
                continue;
            }
            requirements.push(parse_requirement(part).map_err(|why| {
                ApiError::Invalid(format!(
                    "label selector {text:?}: {why} (examples: app=web, tier!=db, env in (a,b), !canary)"
                ))
            })?);
        }
        Ok(LabelSelector(requirements))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// A workload's `spec.selector` (matchLabels and matchExpressions), checked as
    /// Kubernetes checks it; `field` names it in errors.
    pub fn from_k8s(
        selector: &k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector,
        field: &str,
    ) -> Result<Self, ApiError> {
        let mut requirements: Vec<Requirement> = selector
            .match_labels
            .iter()
            .flatten()
            .map(|(k, v)| Requirement::Equals(k.clone(), v.clone()))
            .collect();
        for (i, e) in selector.match_expressions.iter().flatten().enumerate() {
            let values = e.values.clone().unwrap_or_default();
            let at = format!("{field}.matchExpressions[{i}]");
            let requirement = match e.operator.as_str() {
                "In" | "NotIn" if values.is_empty() => {
                    return Err(ApiError::Invalid(format!(
                        "{at}.values: Required value: must be specified when `operator` is 'In' or 'NotIn'"
                    )))
                }
                "In" => Requirement::In(e.key.clone(), values),
                "NotIn" => Requirement::NotIn(e.key.clone(), values),
                "Exists" | "DoesNotExist" if !values.is_empty() => {
                    return Err(ApiError::Invalid(format!(
                        "{at}.values: Forbidden: may not be specified when `operator` is 'Exists' or 'DoesNotExist'"
                    )))
                }
                "Exists" => Requirement::Exists(e.key.clone()),
                "DoesNotExist" => Requirement::DoesNotExist(e.key.clone()),
                other => {
                    return Err(ApiError::Invalid(format!(
                        "{at}.operator: Invalid value: {other:?}: not a valid selector operator"
                    )))
                }
            };
            requirements.push(requirement);
        }
        let labels: HashMap<String, String> = selector
            .match_labels
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect();
        check_labels(&labels)?;
        Ok(LabelSelector(requirements))
    }

    /// The selector in Kubernetes' text form (what `labelSelector=` and a Scale's
    /// `status.selector` carry).
    pub fn to_text(&self) -> String {
        let parts: Vec<String> = self
            .0
            .iter()
            .map(|r| match r {
                Requirement::Equals(k, v) => format!("{k}={v}"),
                Requirement::NotEquals(k, v) => format!("{k}!={v}"),
                Requirement::In(k, vs) => format!("{k} in ({})", vs.join(",")),
                Requirement::NotIn(k, vs) => format!("{k} notin ({})", vs.join(",")),
                Requirement::Exists(k) => k.clone(),
                Requirement::DoesNotExist(k) => format!("!{k}"),
            })
            .collect();
        parts.join(",")
    }

    pub fn matches(&self, labels: &HashMap<String, String>) -> bool {
        self.0.iter().all(|r| match r {
            Requirement::Equals(k, v) => labels.get(k) == Some(v),
            // As in Kubernetes: a missing label is "not equal".
            Requirement::NotEquals(k, v) => labels.get(k) != Some(v),
            Requirement::In(k, vs) => labels.get(k).is_some_and(|l| vs.contains(l)),
            Requirement::NotIn(k, vs) => labels.get(k).is_none_or(|l| !vs.contains(l)),
            Requirement::Exists(k) => labels.contains_key(k),
            Requirement::DoesNotExist(k) => !labels.contains_key(k),
        })
    }
}

/// Splits on the commas that are not inside `( … )`.
fn split_top_level(text: &str) -> Result<Vec<&str>, ApiError> {
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0i32, 0);
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
        if !(0..=1).contains(&depth) {
            return Err(ApiError::Invalid(format!(
                "label selector {text:?}: unbalanced parentheses"
            )));
        }
    }
    if depth != 0 {
        return Err(ApiError::Invalid(format!(
            "label selector {text:?}: unbalanced parentheses"
        )));
    }
    parts.push(&text[start..]);
    Ok(parts)
}

fn parse_requirement(part: &str) -> Result<Requirement, String> {
    let checked_key = |key: &str| -> Result<String, String> {
        let key = key.trim();
        let one = HashMap::from([(key.to_string(), String::new())]);
        check_labels(&one).map_err(|e| e.to_string())?;
        Ok(key.to_string())
    };
    let checked_value = |key: &str, value: &str| -> Result<String, String> {
        let value = value.trim();
        let one = HashMap::from([("k".to_string(), value.to_string())]);
        check_labels(&one).map_err(|_| format!("{value:?} is not a valid value for {key}"))?;
        Ok(value.to_string())
    };
    if let Some(key) = part.strip_prefix('!') {
        return Ok(Requirement::DoesNotExist(checked_key(key)?));
    }
    for (op, negated) in [("!=", true), ("==", false), ("=", false)] {
        if let Some((key, value)) = part.split_once(op) {
            let key = checked_key(key)?;
            let value = checked_value(&key, value)?;
            return Ok(if negated {
                Requirement::NotEquals(key, value)
            } else {
                Requirement::Equals(key, value)
            });
        }
    }
    if let Some(open) = part.find('(') {
        let head: Vec<&str> = part[..open].split_whitespace().collect();
        let Some(inner) = part[open + 1..].strip_suffix(')') else {
            return Err(format!(
                "{part:?}: nothing may follow the closing parenthesis"
            ));
        };
        let [key, op] = head.as_slice() else {
            return Err(format!(
                "{part:?}: expected KEY in (V1,V2) or KEY notin (V1,V2)"
            ));
        };
        let key = checked_key(key)?;
        let values = inner
            .split(',')
            .map(|v| checked_value(&key, v))
            .collect::<Result<Vec<_>, _>>()?;
        return match *op {
            "in" => Ok(Requirement::In(key, values)),
            "notin" => Ok(Requirement::NotIn(key, values)),
            other => Err(format!(
                "{other:?} is not an operator (in, notin, =, ==, !=)"
            )),
        };
    }
    if part.split_whitespace().count() != 1 {
        return Err(format!("{part:?} is not a requirement"));
    }
    Ok(Requirement::Exists(checked_key(part)?))
}

/// A field selector (`spec.nodeName=node-1,status.phase!=Running`): equality tests on
/// the few fields each resource offers (`FieldSelector::matches` asks the resource).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FieldSelector(Vec<(String, bool, String)>);

impl FieldSelector {
    /// Parses `text`; `supported` says which fields the resource can select on.
    pub fn parse(text: &str, supported: &[&str]) -> Result<Self, ApiError> {
        let mut terms = Vec::new();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (field, equal, value) = if let Some((f, v)) = part.split_once("!=") {
                (f, false, v)
            } else if let Some((f, v)) = part.split_once("==") {
                (f, true, v)
            } else if let Some((f, v)) = part.split_once('=') {
                (f, true, v)
            } else {
                return Err(ApiError::BadRequest(format!(
                    "invalid selector: '{text}'; can't understand '{part}'"
                )));
            };
            let field = field.trim();
            if !supported.contains(&field) {
                return Err(ApiError::BadRequest(format!(
                    "field label not supported: {field}"
                )));
            }
            terms.push((field.to_string(), equal, value.trim().to_string()));
        }
        Ok(FieldSelector(terms))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The value a term requires of `field` (`spec.nodeName=x` → `x`), if one does.
    pub fn required(&self, field: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(f, equal, _)| *equal && f == field)
            .map(|(_, _, v)| v.as_str())
    }

    /// Whether an object whose fields read as `value_of` says matches every term.
    pub fn matches(&self, value_of: impl Fn(&str) -> String) -> bool {
        self.0
            .iter()
            .all(|(field, equal, value)| (value_of(field) == *value) == *equal)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn selectors_match_as_in_kubernetes() {
        let web = labels(&[("app", "web"), ("env", "prod")]);
        let db = labels(&[("app", "db")]);
        let cases = [
            ("", true, true),
            ("app=web", true, false),
            ("app==web", true, false),
            ("app!=web", false, true),
            ("env!=prod", false, true),
            ("env in (prod, dev)", true, false),
            ("env notin (prod)", false, true),
            ("env", true, false),
            ("!env", false, true),
            ("app in (web,db),!canary", true, true),
            ("app=web,env=dev", false, false),
            ("example.com/team", false, false),
        ];
        for (text, on_web, on_db) in cases {
            let s = LabelSelector::parse(text).expect(text);
            assert_eq!((s.matches(&web), s.matches(&db)), (on_web, on_db), "{text}");
        }
    }

    #[test]
    fn field_selectors_match_and_refuse_unknown_fields() {
        let fields = ["metadata.name", "spec.nodeName"];
        let s = FieldSelector::parse("spec.nodeName=n1,metadata.name!=a", &fields).unwrap();
        assert_eq!(s.required("spec.nodeName"), Some("n1"));
        let value = |name: &'static str| {
            move |f: &str| {
                if f == "spec.nodeName" {
                    "n1".into()
                } else {
                    name.to_string()
                }
            }
        };
        assert!(s.matches(value("b")));
        assert!(!s.matches(value("a")));
        let e = FieldSelector::parse("status.colour=red", &fields).unwrap_err();
        assert_eq!(e.to_string(), "field label not supported: status.colour");
    }

    #[test]
    fn bad_selectors_are_explained() {
        for text in [
            "app=we b",
            "env in (a",
            "env within (a)",
            "a b",
            "=x",
            "env in (a) x",
        ] {
            let e = LabelSelector::parse(text).expect_err(text).to_string();
            assert!(e.starts_with("invalid label selector"), "{text}: {e}");
        }
    }

    /// What `make fuzz` kept parses or is refused without a panic, and what parses
    /// matches labels without one.
    #[test]
    fn the_fuzz_corpus_replays_without_panics() {
        let some = labels(&[("app", "web"), ("env", "prod")]);
        for text in kubelab_proto::fuzz_corpus_texts("selector") {
            if let Ok(selector) = LabelSelector::parse(&text) {
                let _ = selector.matches(&some);
                let _ = selector.matches(&HashMap::new());
            }
        }
    }
}
