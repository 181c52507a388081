//! Reading a Containerfile (or Dockerfile) into a list of instructions.
//!
//! Owns the file's syntax only: lines continued with `\`, comments, the instruction
//! keywords (any case), JSON ("exec") and shell forms, and `$VAR` / `${VAR}` /
//! `${VAR:-default}` / `${VAR:+alternative}` substitution with quotes, as Docker reads
//! them. Every error names its line. It decides nothing about files, layers or images:
//! `mod.rs` runs the instructions.

use std::collections::BTreeMap;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("line {line}: {message}")]
pub struct ParseError {
    pub line: usize,
    pub message: String,
}

/// The instructions kubelab builds, for the error that refuses the others.
pub const SUPPORTED: &str =
    "FROM, RUN, COPY, ADD, ENV, ARG, WORKDIR, USER, EXPOSE, LABEL, ENTRYPOINT, CMD";

/// A command as written: `["a", "b"]` (exec form) or `a b` (run by `/bin/sh -c`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    Exec(Vec<String>),
    Shell(String),
}

impl Command {
    /// The argv the command runs as.
    pub fn argv(&self) -> Vec<String> {
        match self {
            Command::Exec(words) => words.clone(),
            Command::Shell(line) => vec!["/bin/sh".into(), "-c".into(), line.clone()],
        }
    }
}

/// One instruction, with its arguments still unexpanded (variables are substituted when
/// it runs, with the values of that moment).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    From(String),
    Run(Command),
    /// COPY and ADD: `--chown=`/`--chmod=` flags, then sources and the destination.
    Copy {
        add: bool,
        chown: Option<String>,
        chmod: Option<String>,
        args: String,
    },
    Env(String),
    Arg(String),
    Workdir(String),
    User(String),
    Expose(String),
    Label(String),
    Entrypoint(Command),
    Cmd(Command),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Instruction {
    /// The line the instruction starts on (1-based).
    pub line: usize,
    pub kind: Kind,
    /// The instruction as written, continuation lines joined: for history and messages.
    pub text: String,
}

/// Reads the whole file. The first instruction other than ARG must be FROM.
pub fn parse(source: &str) -> Result<Vec<Instruction>, ParseError> {
    let mut instructions = Vec::new();
    let mut lines = source.lines().enumerate().peekable();
    while let Some((index, raw)) = lines.next() {
        let trimmed = raw.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let line = index + 1;
        // Join continuation lines; comment lines inside a continuation are dropped, as
        // Docker does.
        let mut text = trimmed.to_string();
        while let Some(stripped) = text.strip_suffix('\\') {
            text = stripped.trim_end().to_string();
            // The next line that is neither a comment nor blank goes on this one.
            let next = lines
                .by_ref()
                .map(|(_, l)| l.trim())
                .find(|l| !l.is_empty() && !l.starts_with('#'));
            match next {
                Some(next) => {
                    text.push(' ');
                    text.push_str(next);
                }
                None => break,
            }
        }
        let (keyword, rest) = match text.split_once(char::is_whitespace) {
            Some((k, r)) => (k.to_string(), r.trim().to_string()),
            None => (text.clone(), String::new()),
        };
        let kind = instruction(line, &keyword.to_ascii_uppercase(), &rest)?;
        instructions.push(Instruction { line, kind, text });
    }
    let mut seen_from = false;
    for i in &instructions {
        match &i.kind {
            Kind::From(_) if seen_from => {
                return Err(error(
                    i.line,
                    "a second FROM: multi-stage builds are not supported (build each image on its own)",
                ))
            }
            Kind::From(_) => seen_from = true,
            Kind::Arg(_) => {}
            _ if !seen_from => {
                return Err(error(
                    i.line,
                    "the first instruction must be FROM (an image, or scratch); only ARG may come before it",
                ))
            }
            _ => {}
        }
    }
    if !seen_from {
        return Err(error(
            1,
            "no FROM instruction: a Containerfile starts with FROM IMAGE (or FROM scratch)",
        ));
    }
    Ok(instructions)
}

fn error(line: usize, message: impl Into<String>) -> ParseError {
    ParseError {
        line,
        message: message.into(),
    }
}

fn instruction(line: usize, keyword: &str, rest: &str) -> Result<Kind, ParseError> {
    let need_args = |what: &str| -> Result<(), ParseError> {
        if rest.is_empty() {
            Err(error(line, format!("{keyword} needs {what}")))
        } else {
            Ok(())
        }
    };
    Ok(match keyword {
        "FROM" => {
            need_args("an image (or scratch)")?;
            if rest.starts_with("--") {
                return Err(error(
                    line,
                    format!("FROM {rest}: flags (such as --platform) are not supported"),
                ));
            }
            // `AS name` names the stage; with one stage there is nothing to refer to it.
            let words: Vec<&str> = rest.split_whitespace().collect();
            match words.as_slice() {
                [_] => {}
                [_, as_, _] if as_.eq_ignore_ascii_case("AS") => {}
                _ => {
                    return Err(error(
                        line,
                        "FROM takes one image (FROM IMAGE [AS NAME], or FROM scratch)",
                    ))
                }
            }
            let image = words[0].to_string();
            Kind::From(image)
        }
        "RUN" => {
            need_args("a command")?;
            if rest.starts_with("--") {
                let flag = rest.split_whitespace().next().unwrap_or(rest);
                return Err(error(
                    line,
                    format!("RUN {flag}: RUN flags are not supported"),
                ));
            }
            Kind::Run(command(line, rest)?)
        }
        "COPY" | "ADD" => {
            let mut args = rest;
            let (mut chown, mut chmod) = (None, None);
            while let Some(flag) = args.strip_prefix("--") {
                let (word, after) = flag.split_once(char::is_whitespace).unwrap_or((flag, ""));
                match word.split_once('=') {
                    Some(("chown", v)) => chown = Some(v.to_string()),
                    Some(("chmod", v)) => chmod = Some(v.to_string()),
                    Some(("from", _)) => {
                        return Err(error(line, format!("{keyword} --from: multi-stage builds are not supported")))
                    }
                    _ => {
                        return Err(error(line, format!("{keyword} --{word}: unknown flag (supported: --chown=USER[:GROUP], --chmod=MODE)")))
                    }
                }
                args = after.trim_start();
            }
            if args.is_empty() {
                return Err(error(
                    line,
                    format!("{keyword} needs a source and a destination"),
                ));
            }
            Kind::Copy {
                add: keyword == "ADD",
                chown,
                chmod,
                args: args.to_string(),
            }
        }
        "ENV" => {
            need_args("NAME=VALUE")?;
            Kind::Env(rest.to_string())
        }
        "ARG" => {
            need_args("a NAME (or NAME=DEFAULT)")?;
            Kind::Arg(rest.to_string())
        }
        "WORKDIR" => {
            need_args("a directory")?;
            Kind::Workdir(rest.to_string())
        }
        "USER" => {
            need_args("a user (NAME or UID, optionally :GROUP)")?;
            Kind::User(rest.to_string())
        }
        "EXPOSE" => {
            need_args("a port (such as 80 or 53/udp)")?;
            Kind::Expose(rest.to_string())
        }
        "LABEL" => {
            need_args("KEY=VALUE")?;
            Kind::Label(rest.to_string())
        }
        "ENTRYPOINT" => {
            need_args("a command")?;
            Kind::Entrypoint(command(line, rest)?)
        }
        "CMD" => {
            need_args("a command")?;
            Kind::Cmd(command(line, rest)?)
        }
        "ONBUILD" | "HEALTHCHECK" | "SHELL" | "STOPSIGNAL" | "VOLUME" | "MAINTAINER" => {
            return Err(error(
                line,
                format!(
                    "{keyword} is not supported by kubelab image build (supported: {SUPPORTED})"
                ),
            ))
        }
        other => {
            return Err(error(
                line,
                format!("unknown instruction {other:?} (supported: {SUPPORTED})"),
            ))
        }
    })
}

/// The exec form when the text is a JSON array of strings, else the shell form.
fn command(line: usize, rest: &str) -> Result<Command, ParseError> {
    if rest.starts_with('[') {
        if let Ok(words) = serde_json::from_str::<Vec<String>>(rest) {
            if words.is_empty() {
                return Err(error(line, "an empty command []"));
            }
            return Ok(Command::Exec(words));
        }
    }
    Ok(Command::Shell(rest.to_string()))
}

/// Splits text into words as Docker does for COPY, ENV, LABEL and the like: quotes
/// group, backslash escapes, and variables are substituted outside single quotes.
pub fn words(text: &str, vars: &BTreeMap<String, String>) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if in_word {
                    out.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => word.push(c),
                        None => return Err(format!("unterminated single quote in {text:?}")),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\' | '$')) => word.push(c),
                            Some(c) => {
                                word.push('\\');
                                word.push(c);
                            }
                            None => return Err(format!("unterminated double quote in {text:?}")),
                        },
                        Some('$') => word.push_str(&variable(&mut chars, vars)?),
                        Some(c) => word.push(c),
                        None => return Err(format!("unterminated double quote in {text:?}")),
                    }
                }
            }
            '\\' => {
                in_word = true;
                if let Some(c) = chars.next() {
                    word.push(c);
                }
            }
            '$' => {
                in_word = true;
                word.push_str(&variable(&mut chars, vars)?);
            }
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        out.push(word);
    }
    Ok(out)
}

/// Substitutes variables in the whole text, keeping it one string (the legacy `ENV NAME
/// VALUE` form, and USER and WORKDIR).
pub fn expand(text: &str, vars: &BTreeMap<String, String>) -> Result<String, String> {
    Ok(words(text, vars)?.join(" "))
}

/// After a `$`: `NAME`, `{NAME}`, `{NAME:-default}` or `{NAME:+alternative}`.
fn variable(
    chars: &mut std::iter::Peekable<std::str::Chars<'_>>,
    vars: &BTreeMap<String, String>,
) -> Result<String, String> {
    let is_name = |c: &char| c.is_ascii_alphanumeric() || *c == '_';
    if chars.peek() == Some(&'{') {
        chars.next();
        let mut inside = String::new();
        loop {
            match chars.next() {
                Some('}') => break,
                Some(c) => inside.push(c),
                None => return Err("unterminated ${...}".into()),
            }
        }
        let value = |name: &str| vars.get(name).filter(|v| !v.is_empty()).cloned();
        return Ok(match inside.split_once(":-") {
            Some((name, default)) => value(name).unwrap_or_else(|| default.to_string()),
            None => match inside.split_once(":+") {
                Some((name, alternative)) => value(name)
                    .map(|_| alternative.to_string())
                    .unwrap_or_default(),
                None => {
                    if inside.is_empty() || !inside.chars().all(|c| is_name(&c)) {
                        return Err(format!("bad substitution ${{{inside}}}"));
                    }
                    vars.get(&inside).cloned().unwrap_or_default()
                }
            },
        });
    }
    let mut name = String::new();
    while let Some(c) = chars.peek().copied().filter(is_name) {
        name.push(c);
        chars.next();
    }
    if name.is_empty() {
        return Ok("$".into());
    }
    Ok(vars.get(&name).cloned().unwrap_or_default())
}

/// `KEY=VALUE` pairs (ENV, LABEL, ARG); also the legacy `ENV KEY VALUE` when allowed.
pub fn pairs(
    text: &str,
    vars: &BTreeMap<String, String>,
    legacy_form: bool,
) -> Result<Vec<(String, String)>, String> {
    let first = text.split_whitespace().next().unwrap_or_default();
    if legacy_form && !first.contains('=') {
        let value = text[first.len()..].trim();
        return Ok(vec![(first.to_string(), expand(value, vars)?)]);
    }
    words(text, vars)?
        .into_iter()
        .map(|w| match w.split_once('=') {
            Some(("", _)) => Err(format!("{w:?} has no name before '='")),
            Some((k, v)) => Ok((k.to_string(), v.to_string())),
            None => Err(format!("{w:?} is not KEY=VALUE")),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn instructions_continuations_and_comments_are_read_as_docker_reads_them() {
        let file = "# syntax comment\nARG BASE=busybox\nfrom $BASE\n\nRUN echo a \\\n  # a comment inside\n  && echo b\nCMD [\"httpd\", \"-f\"]\nENTRYPOINT sh -c 'x'\nCOPY --chown=1:2 a b /dst/\n";
        let parsed = parse(file).unwrap();
        assert_eq!(parsed.len(), 6);
        assert_eq!(parsed[1].kind, Kind::From("$BASE".into()));
        assert_eq!(parsed[1].line, 3);
        assert_eq!(
            parsed[2].kind,
            Kind::Run(Command::Shell("echo a && echo b".into()))
        );
        assert_eq!(parsed[2].line, 5);
        assert_eq!(
            parsed[3].kind,
            Kind::Cmd(Command::Exec(vec!["httpd".into(), "-f".into()]))
        );
        assert_eq!(
            parsed[4].kind,
            Kind::Entrypoint(Command::Shell("sh -c 'x'".into()))
        );
        assert_eq!(
            parsed[5].kind,
            Kind::Copy {
                add: false,
                chown: Some("1:2".into()),
                chmod: None,
                args: "a b /dst/".into()
            }
        );
    }

    #[test]
    fn unsupported_instructions_are_refused_with_their_line() {
        let e = parse("FROM scratch\nCOPY a /\nHEALTHCHECK CMD true\n").unwrap_err();
        assert_eq!(e.line, 3);
        assert!(
            e.to_string()
                .starts_with("line 3: HEALTHCHECK is not supported"),
            "{e}"
        );
        let e = parse("FROM scratch\nFROBNICATE x\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("line 2: unknown instruction \"FROBNICATE\" (supported: {SUPPORTED})")
        );
        assert_eq!(parse("FROM a\nFROM b\n").unwrap_err().line, 2);
        assert!(parse("FROM a AS x\n").is_ok(), "one named stage is fine");
        assert_eq!(parse("FROM a AS x\nFROM b\n").unwrap_err().line, 2);
        assert_eq!(parse("RUN true\n").unwrap_err().line, 1);
        assert_eq!(parse("FROM a\nCOPY --from=x a b\n").unwrap_err().line, 2);
        assert_eq!(
            parse("FROM a\n\nRUN --mount=type=cache true\n")
                .unwrap_err()
                .line,
            3
        );
        assert!(parse("# nothing\n")
            .unwrap_err()
            .to_string()
            .contains("no FROM"));
    }

    #[test]
    fn words_expand_variables_outside_single_quotes() {
        let v = vars(&[("NAME", "web"), ("EMPTY", "")]);
        assert_eq!(
            words(
                r#"a$NAME "b ${NAME}" 'c $NAME' d\ e ${EMPTY:-dflt} ${NAME:+alt} ${MISSING}x"#,
                &v
            )
            .unwrap(),
            vec!["aweb", "b web", "c $NAME", "d e", "dflt", "alt", "x"]
        );
        assert!(words("'open", &v).is_err());
        assert!(words("${a b}", &v).is_err());
    }

    #[test]
    fn pairs_read_key_value_and_the_legacy_env_form() {
        let v = vars(&[("X", "1")]);
        assert_eq!(
            pairs(r#"A=$X B="two words" C="""#, &v, true).unwrap(),
            vec![
                ("A".into(), "1".into()),
                ("B".into(), "two words".into()),
                ("C".into(), String::new())
            ]
        );
        assert_eq!(
            pairs("PATH /a b $X", &v, true).unwrap(),
            vec![("PATH".into(), "/a b 1".into())]
        );
        assert!(pairs("novalue", &v, false).is_err());
    }

    /// What `make fuzz` kept still parses (or is refused with a line) without a panic.
    #[test]
    fn the_fuzz_corpus_replays_without_panics() {
        let vars = vars(&[("A", "x y")]);
        for text in kubelab_proto::fuzz_corpus_texts("containerfile") {
            match parse(&text) {
                Ok(instructions) => {
                    for i in instructions {
                        let _ = words(&i.text, &vars);
                        let _ = pairs(&i.text, &vars, true);
                    }
                }
                Err(e) => assert!(e.line >= 1),
            }
        }
    }
}
