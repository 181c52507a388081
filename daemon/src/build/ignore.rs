//! `.containerignore` (or `.dockerignore`): files of the build directory that COPY and ADD
//! leave out, and whose changes do not spoil the cache.
//!
//! One pattern per line, relative to the build directory; `#` starts a comment; `*` and
//! `?` match within a name, `**` any number of directories; `!` makes an exception to
//! the lines above it (the last line that matches decides). A pattern that matches a
//! directory leaves out everything in it. Reads the one file; decides only "skip or not".

use std::path::{Component, Path, PathBuf};

use super::copy::glob_match;

pub struct Ignore {
    context: PathBuf,
    /// (is an exception, pattern split into names), in file order.
    rules: Vec<(bool, Vec<String>)>,
}

impl Ignore {
    /// The rules of `context/.containerignore`, else `context/.dockerignore`, else none.
    pub fn load(context: &Path) -> Ignore {
        let text = [".containerignore", ".dockerignore"]
            .iter()
            .find_map(|name| std::fs::read_to_string(context.join(name)).ok())
            .unwrap_or_default();
        Ignore::parse(context, &text)
    }

    fn parse(context: &Path, text: &str) -> Ignore {
        let rules = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(|line| {
                let (exception, pattern) = match line.strip_prefix('!') {
                    Some(rest) => (true, rest.trim()),
                    None => (false, line),
                };
                (exception, names(Path::new(pattern)))
            })
            .filter(|(_, names)| !names.is_empty())
            .collect();
        Ignore {
            context: context.to_path_buf(),
            rules,
        }
    }

    /// Whether `path` (in the build directory) is left out.
    pub fn skips(&self, path: &Path) -> bool {
        let Ok(relative) = path.strip_prefix(&self.context) else {
            return false;
        };
        let path = names(relative);
        let mut skipped = false;
        for (exception, pattern) in &self.rules {
            // The path itself, or a directory it is in.
            if (1..=path.len()).any(|n| matches(pattern, &path[..n])) {
                skipped = !exception;
            }
        }
        skipped
    }
}

fn names(path: &Path) -> Vec<String> {
    path.components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_string_lossy().into_owned()),
            _ => None,
        })
        .collect()
}

fn matches(pattern: &[String], path: &[String]) -> bool {
    match pattern.split_first() {
        None => path.is_empty(),
        Some((first, rest)) if first == "**" => {
            (0..=path.len()).any(|skip| matches(rest, &path[skip..]))
        }
        Some((first, rest)) => match path.split_first() {
            Some((name, path_rest)) => glob_match(first, name) && matches(rest, path_rest),
            None => false,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Patterns, directories, `**` and exceptions as Docker reads them.
    #[test]
    fn patterns_leave_out_what_docker_leaves_out() {
        let context = Path::new("/ctx");
        let ignore = Ignore::parse(
            context,
            "# comment\n.git\n*.md\n!README.md\n**/*.tmp\nbuild/\n/logs/*.log\n",
        );
        let skips = |p: &str| ignore.skips(&context.join(p));
        assert!(skips(".git"));
        assert!(skips(".git/objects/ab"));
        assert!(skips("notes.md"));
        assert!(!skips("README.md"));
        assert!(!skips("docs/notes.md"), "* does not cross directories");
        assert!(skips("a/b/c.tmp") && skips("c.tmp"));
        assert!(skips("build/out/x"));
        assert!(skips("logs/a.log") && !skips("logs/keep.txt"));
        assert!(!skips("src/main.rs"));
        assert!(!Ignore::parse(context, "").skips(&context.join("x")));
    }
}
