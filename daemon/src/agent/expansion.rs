//! Kubernetes' `$(VAR)` variable references in a container's `env` values, `command`
//! and `args`.
//!
//! The rules are those of Kubernetes' `third_party/forked/golang/expansion`:
//! - `$(NAME)` is replaced by NAME's value when NAME is defined, and left as written
//!   when it is not; the name is whatever lies between `(` and the first `)`.
//! - `$$` is an escaped `$`: `$$(NAME)` gives the literal `$(NAME)`, `$$$$` gives `$$`.
//! - `$` before anything else (`$NAME`, `${NAME}`, `$?`), an unterminated `$(`, and a
//!   `$` at the end are kept as written.
//!
//! What is visible where follows the kubelet's `makeEnvironmentVariables`: an `env`
//! value sees the container's variables declared before it in the list (the image's
//! `ENV` are not sources); `command` and `args` see the container's whole expanded env.
//! The image's Entrypoint and Cmd are never expanded.
//!
//! Pure string work: it reads nothing and touches no file or process.

use std::collections::HashMap;

use kubelab_proto::v1::EnvVar;

/// `input` with its variable references replaced; `lookup` gives a defined name's value.
pub fn expand<'a>(input: &str, lookup: impl Fn(&str) -> Option<&'a str>) -> String {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let mut chars = after.chars();
        match chars.next() {
            // A `$` at the very end is kept.
            None => {
                out.push('$');
                rest = after;
            }
            // `$$` is one literal `$`; what follows it is not a reference.
            Some('$') => {
                out.push('$');
                rest = &after[1..];
            }
            Some('(') => match after[1..].find(')') {
                Some(close) => {
                    let name = &after[1..1 + close];
                    match lookup(name) {
                        Some(value) => out.push_str(value),
                        None => {
                            out.push_str("$(");
                            out.push_str(name);
                            out.push(')');
                        }
                    }
                    rest = &after[close + 2..];
                }
                // Unterminated: keep `$(` and go on scanning right after it.
                None => {
                    out.push_str("$(");
                    rest = &after[1..];
                }
            },
            // `$` before anything else is kept with that character.
            Some(c) => {
                out.push('$');
                out.push(c);
                rest = chars.as_str();
            }
        }
    }
    out.push_str(rest);
    out
}

/// The container's own variables, expanded in declaration order: each value sees the
/// variables declared before it (a name declared twice takes its last value, and a value
/// naming itself sees its earlier definition, if any) and, beneath them, `base` (the
/// service links). Kept in first-declaration order.
pub fn container_env(env: &[EnvVar], base: &[(String, String)]) -> Vec<(String, String)> {
    let base: HashMap<&str, &str> = base.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let mut values: HashMap<String, String> = HashMap::new();
    let mut order: Vec<String> = Vec::new();
    for var in env {
        let value = if var.value.is_empty() {
            String::new()
        } else {
            expand(&var.value, |name| {
                values
                    .get(name)
                    .map(String::as_str)
                    .or_else(|| base.get(name).copied())
            })
        };
        if values.insert(var.name.clone(), value).is_none() {
            order.push(var.name.clone());
        }
    }
    order
        .into_iter()
        .filter_map(|name| values.remove(&name).map(|v| (name, v)))
        .collect()
}

/// Each of `list` (a container's `command` or `args`) expanded against `env`, the
/// container's expanded variables as [`container_env`] gives them.
pub fn expand_list(list: &[String], env: &[(String, String)]) -> Vec<String> {
    let vars: HashMap<&str, &str> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    list.iter()
        .map(|s| expand(s, |name| vars.get(name).copied()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(vars: &[(&'static str, &'static str)], input: &str) -> String {
        expand(input, |name| {
            vars.iter().find(|(k, _)| *k == name).map(|(_, v)| *v)
        })
    }

    const VARS: &[(&str, &str)] = &[
        ("VAR_A", "A"),
        ("VAR_B", "B"),
        ("VAR_C", "C"),
        ("VAR_REF", "$(VAR_A)"),
        ("VAR_EMPTY", ""),
    ];

    fn var(name: &str, value: &str) -> EnvVar {
        EnvVar {
            name: name.into(),
            value: value.into(),
        }
    }

    #[test]
    fn defined_references_are_replaced_wherever_they_stand() {
        assert_eq!(with(VARS, "$(VAR_A)"), "A");
        assert_eq!(with(VARS, "$(VAR_A)-$(VAR_A)"), "A-A");
        assert_eq!(with(VARS, "___$(VAR_B)___"), "___B___");
        assert_eq!(with(VARS, "$(VAR_A)_$(VAR_B)_$(VAR_C)"), "A_B_C");
        assert_eq!(with(VARS, "foo$(VAR_EMPTY)bar"), "foobar");
        assert_eq!(with(VARS, "foo\\$(VAR_C)bar"), "foo\\Cbar");
    }

    #[test]
    fn a_value_is_inserted_as_is_not_expanded_again() {
        assert_eq!(with(VARS, "$(VAR_REF)"), "$(VAR_A)");
        assert_eq!(
            with(VARS, "%%$(VAR_REF)--$(VAR_REF)%%"),
            "%%$(VAR_A)--$(VAR_A)%%"
        );
    }

    #[test]
    fn undefined_references_are_left_as_written() {
        assert_eq!(with(VARS, "$(VAR_DNE)"), "$(VAR_DNE)");
        assert_eq!(with(VARS, "$(VAR_A$(VAR_B))"), "$(VAR_A$(VAR_B))");
        assert_eq!(with(VARS, "$(VAR_A$(VAR_B)"), "$(VAR_A$(VAR_B)");
        assert_eq!(with(VARS, "$(foo$$var)"), "$(foo$$var)");
        assert_eq!(with(VARS, "$()"), "$()");
    }

    #[test]
    fn a_double_dollar_is_one_literal_dollar() {
        assert_eq!(with(VARS, "$$(VAR_B)_$(VAR_A)"), "$(VAR_B)_A");
        assert_eq!(with(VARS, "$$(VAR_A)_$$(VAR_B)"), "$(VAR_A)_$(VAR_B)");
        assert_eq!(with(VARS, "f000-$$VAR_A"), "f000-$VAR_A");
        assert_eq!(with(VARS, "$$"), "$");
        assert_eq!(with(VARS, "$$$$$$(BIG_MONEY)"), "$$$(BIG_MONEY)");
        assert_eq!(with(VARS, "$$$$$$(VAR_A)"), "$$$(VAR_A)");
        assert_eq!(with(VARS, "$$$$$$$(GOOD_ODDS)"), "$$$$(GOOD_ODDS)");
        assert_eq!(with(VARS, "$$$$$$$(VAR_A)"), "$$$A");
    }

    #[test]
    fn a_lone_dollar_and_shell_syntax_are_kept() {
        assert_eq!(with(VARS, "$"), "$");
        assert_eq!(with(VARS, "$(VAR_A)foobarzab$"), "Afoobarzab$");
        assert_eq!(with(VARS, "$VAR_A"), "$VAR_A");
        assert_eq!(with(VARS, "$VAR_A)"), "$VAR_A)");
        assert_eq!(with(VARS, "${VAR_A}"), "${VAR_A}");
        assert_eq!(with(VARS, "$?_boo_$!"), "$?_boo_$!");
        assert_eq!(with(VARS, "f00__(VAR_A)__"), "f00__(VAR_A)__");
        assert_eq!(with(VARS, "\n"), "\n");
        assert_eq!(with(VARS, "$é$(VAR_A)"), "$éA");
    }

    #[test]
    fn unterminated_references_are_kept() {
        assert_eq!(with(VARS, "foo$(VAR_Awhoops!"), "foo$(VAR_Awhoops!");
        assert_eq!(with(VARS, "$(VAR_B)_______$(A"), "B_______$(A");
        assert_eq!(with(VARS, "$(VAR_C)_______$("), "C_______$(");
        assert_eq!(with(VARS, "--$($($($($--"), "--$($($($($--");
        assert_eq!(with(VARS, "$($($($($--foo$("), "$($($($($--foo$(");
        assert_eq!(with(VARS, "foo-\\$(VAR_A"), "foo-\\$(VAR_A");
    }

    #[test]
    fn env_values_see_only_variables_declared_before_them() {
        let env = container_env(
            &[
                var("FOO", "bar"),
                var("ZOO", "$(FOO)-1"),
                var("BLU", "$(ZOO)-2"),
                var("EARLY", "$(LATE)"),
                var("LATE", "late"),
                var("SELF", "$(SELF)"),
            ],
            &[],
        );
        let get = |n: &str| env.iter().find(|(k, _)| k == n).map(|(_, v)| v.as_str());
        assert_eq!(get("ZOO"), Some("bar-1"));
        assert_eq!(get("BLU"), Some("bar-1-2"));
        assert_eq!(get("EARLY"), Some("$(LATE)"));
        assert_eq!(get("SELF"), Some("$(SELF)"));
    }

    #[test]
    fn a_redeclared_variable_keeps_its_first_place_and_last_value() {
        let env = container_env(&[var("A", "1"), var("B", "$(A)"), var("A", "$(A)2")], &[]);
        assert_eq!(
            env,
            [
                ("A".to_string(), "12".to_string()),
                ("B".into(), "1".into())
            ]
        );
    }

    #[test]
    fn command_and_args_see_the_whole_expanded_env() {
        let env = container_env(
            &[var("GREETING", "hello"), var("LOUD", "$(GREETING)!")],
            &[],
        );
        let cmd = [
            "sh".to_string(),
            "-c".into(),
            "echo $(GREETING) $$(GREETING) $(NOPE) $(LOUD)".into(),
        ];
        assert_eq!(
            expand_list(&cmd, &env),
            ["sh", "-c", "echo hello $(GREETING) $(NOPE) hello!"]
        );
    }
}
