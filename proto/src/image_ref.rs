//! Image references (`registry/repository:tag@digest`), read by Docker's grammar.
//!
//! Every component reads references: the apiserver to refuse a bad one, the agent to
//! pull, the CLI and the builder to push. oci-client can parse them too, but with one
//! large regular expression that, once compiled, holds ~12 MB of memory in each process
//! that used it (and takes ~40 ms to compile): more than an idle agent needs for
//! everything else. This is the same grammar, walked by hand. Owns the syntax and
//! Docker's normalisation (`busybox` is `docker.io/library/busybox:latest`); knows
//! nothing of registries.

use std::fmt;

/// A parsed reference, normalised as Docker does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageRef {
    /// `docker.io` when the name has no registry host.
    pub registry: String,
    pub repository: String,
    /// `latest` when neither a tag nor a digest is given.
    pub tag: Option<String>,
    pub digest: Option<String>,
}

/// The whole normalised form: `registry/repository[:tag][@digest]`.
impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

/// Why a reference is not one, in words that say what to fix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RefError(pub String);

impl fmt::Display for RefError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for RefError {}

const NAME_MAX: usize = 255;
const TAG_MAX: usize = 128;

pub fn parse(reference: &str) -> Result<ImageRef, RefError> {
    let err = |why: &str| Err(RefError(why.to_string()));
    if reference.is_empty() {
        return err("the reference is empty");
    }
    let (name_and_tag, digest) = match reference.split_once('@') {
        Some((n, d)) => (n, Some(d)),
        None => (reference, None),
    };
    if let Some(d) = digest {
        check_digest(d)?;
    }
    // A tag follows the last ':' that comes after the last '/' (a ':' before it is a port).
    let last_slash = name_and_tag.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match name_and_tag[last_slash..].rfind(':') {
        Some(i) => (
            &name_and_tag[..last_slash + i],
            Some(&name_and_tag[last_slash + i + 1..]),
        ),
        None => (name_and_tag, None),
    };
    if let Some(t) = tag {
        let mut chars = t.chars();
        let first_ok = chars
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
        if !first_ok
            || t.len() > TAG_MAX
            || !chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
        {
            return err(
                "the tag must be letters, digits, '_', '.' or '-' (not first), at most 128",
            );
        }
    }
    let (registry, path) = match name.split_once('/') {
        Some((first, rest)) if first.contains(['.', ':']) || first == "localhost" => {
            check_domain(first)?;
            (first.to_string(), rest)
        }
        _ => ("docker.io".to_string(), name),
    };
    if path.is_empty() || !path.split('/').all(is_path_component) {
        return err("the repository must be lowercase letters and digits, with '.', '_', '__' or '-' between them, in parts split by '/' (example: 127.0.0.1:5000/busybox:1)");
    }
    let registry = if registry == "index.docker.io" {
        "docker.io".to_string()
    } else {
        registry
    };
    let repository = if registry == "docker.io" && !path.contains('/') {
        format!("library/{path}")
    } else {
        path.to_string()
    };
    if repository.len() > NAME_MAX {
        return err("the repository name is longer than 255 characters");
    }
    let tag = match (tag, digest) {
        (None, None) => Some("latest".to_string()),
        (t, _) => t.map(String::from),
    };
    Ok(ImageRef {
        registry,
        repository,
        tag,
        digest: digest.map(String::from),
    })
}

/// `[a-z0-9]+` runs joined by `.`, `_`, `__` or any number of `-`.
fn is_path_component(part: &str) -> bool {
    let bytes = part.as_bytes();
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if bytes.is_empty() || !alnum(bytes[0]) || !alnum(bytes[bytes.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < bytes.len() {
        if alnum(bytes[i]) {
            i += 1;
            continue;
        }
        // A separator: one '.', one or two '_', or a run of '-'; then alphanumerics again.
        let start = i;
        match bytes[i] {
            b'.' => i += 1,
            b'_' => {
                i += 1;
                if bytes.get(i) == Some(&b'_') {
                    i += 1;
                }
            }
            b'-' => {
                while bytes.get(i) == Some(&b'-') {
                    i += 1;
                }
            }
            _ => return false,
        }
        if i == start || !bytes.get(i).copied().is_some_and(alnum) {
            return false;
        }
    }
    true
}

/// `host[:port]`, the host being DNS labels (letters, digits, inner '-') joined by '.'.
fn check_domain(domain: &str) -> Result<(), RefError> {
    let (host, port) = match domain.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (domain, None),
    };
    let label_ok = |l: &str| {
        !l.is_empty()
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    };
    let port_ok = port.is_none_or(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()));
    if host.split('.').all(label_ok) && port_ok {
        Ok(())
    } else {
        Err(RefError(format!(
            "the registry {domain:?} must be a host name or address, with an optional :port"
        )))
    }
}

/// `algorithm:hex`, with the length the algorithm gives.
fn check_digest(digest: &str) -> Result<(), RefError> {
    let want = match digest.split_once(':') {
        Some(("sha256", hex)) => Some((hex, 64)),
        Some(("sha384", hex)) => Some((hex, 96)),
        Some(("sha512", hex)) => Some((hex, 128)),
        _ => None,
    };
    match want {
        Some((hex, len)) if hex.len() == len && hex.chars().all(|c| c.is_ascii_hexdigit()) => {
            Ok(())
        }
        _ => Err(RefError(format!(
            "the digest {digest:?} must be sha256:, sha384: or sha512: and its hex digits"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Normalised as Docker (and oci-client) do.
    #[test]
    fn references_normalise_as_docker_does() {
        let digest = format!("sha256:{}", "a".repeat(64));
        for (input, expected) in [
            ("busybox", "docker.io/library/busybox:latest".to_string()),
            ("busybox:1.36", "docker.io/library/busybox:1.36".into()),
            ("user/app", "docker.io/user/app:latest".into()),
            ("index.docker.io/app", "docker.io/library/app:latest".into()),
            (
                "127.0.0.1:5000/busybox:demo",
                "127.0.0.1:5000/busybox:demo".into(),
            ),
            (
                "localhost/a/b_c__d-e--f.g",
                "localhost/a/b_c__d-e--f.g:latest".into(),
            ),
            (
                "registry.example.org:443/x/y:v1.2-rc_3",
                "registry.example.org:443/x/y:v1.2-rc_3".into(),
            ),
            (
                &format!("127.0.0.1:5000/site@{digest}"),
                format!("127.0.0.1:5000/site@{digest}"),
            ),
            (
                &format!("127.0.0.1:5000/site:1@{digest}"),
                format!("127.0.0.1:5000/site:1@{digest}"),
            ),
        ] {
            assert_eq!(parse(input).unwrap().to_string(), expected, "{input}");
        }
    }

    #[test]
    fn bad_references_are_refused() {
        for bad in [
            "",
            "Busybox",
            "busy box",
            "a//b",
            "/a",
            "a/",
            "a:",
            "a:-x",
            "a__b__",
            "a___b",
            "a.-b",
            "host:5000:6000/a",
            "-host.io/a",
            "a@sha256:abc",
            "a@md5:0123456789abcdef0123456789abcdef",
            &format!("a:{}", "t".repeat(129)),
            &format!("x.io/{}", "a".repeat(256)),
        ] {
            assert!(parse(bad).is_err(), "{bad:?} was accepted");
        }
    }

    /// What `make fuzz` kept parses or is refused without a panic, and what parses
    /// round-trips through its written form.
    #[test]
    fn the_fuzz_corpus_replays_without_panics() {
        for text in crate::fuzz_corpus_texts("image_ref") {
            if let Ok(r) = parse(&text) {
                assert_eq!(parse(&r.to_string()), Ok(r), "{text:?}");
            }
        }
    }
}
