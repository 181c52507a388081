//! COPY and ADD: files from the build directory into the step's rootfs.
//!
//! Docker's rules: sources are relative to the build directory and may not leave it
//! (`*` and `?` match within a name); a directory's contents are copied, not the
//! directory itself; a destination ending in `/` (or an existing directory) receives
//! files under their own names; several sources need such a destination; what
//! `.containerignore` names is left out (`ignore.rs`). ADD also
//! unpacks a local tar archive (plain or gzip) at the destination; it does not download
//! URLs. Files belong to root unless `--chown` says otherwise. Reads only the build
//! directory; writes only inside the rootfs it is given (paths resolved by `rootfs.rs`).

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

use sha2::Digest;

use super::ignore::Ignore;
use super::rootfs;

#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error("{0}")]
    Source(String),
    #[error("{0}: {1}")]
    Io(PathBuf, std::io::Error),
    #[error(transparent)]
    Rootfs(#[from] rootfs::RootfsError),
}

/// Finds the sources in the build directory, wildcards expanded, in order; those that
/// `.containerignore` leaves out are not found.
pub fn sources(
    context: &Path,
    ignore: &Ignore,
    patterns: &[String],
    add: bool,
) -> Result<Vec<PathBuf>, CopyError> {
    let mut found = Vec::new();
    for pattern in patterns {
        if add && (pattern.starts_with("http://") || pattern.starts_with("https://")) {
            return Err(CopyError::Source(format!(
                "ADD {pattern}: downloading is not supported; fetch the file into the build directory and ADD or COPY it from there"
            )));
        }
        let mut candidates = vec![context.to_path_buf()];
        let mut depth: i32 = 0;
        for component in Path::new(pattern).components() {
            let name = match component {
                Component::Normal(n) => n.to_string_lossy().to_string(),
                Component::ParentDir => {
                    depth -= 1;
                    if depth < 0 {
                        return Err(CopyError::Source(format!(
                            "{pattern}: outside the build directory {} (sources must be inside it)",
                            context.display()
                        )));
                    }
                    candidates = candidates.into_iter().map(|c| c.join("..")).collect();
                    continue;
                }
                _ => continue,
            };
            depth += 1;
            if name.contains(['*', '?']) {
                let mut next = Vec::new();
                for dir in &candidates {
                    let Ok(entries) = std::fs::read_dir(dir) else {
                        continue;
                    };
                    let mut names: Vec<String> = entries
                        .flatten()
                        .map(|e| e.file_name().to_string_lossy().to_string())
                        .filter(|n| glob_match(&name, n))
                        .collect();
                    names.sort();
                    next.extend(names.into_iter().map(|n| dir.join(n)));
                }
                candidates = next;
            } else {
                candidates = candidates.into_iter().map(|c| c.join(&name)).collect();
            }
        }
        let existing: Vec<PathBuf> = candidates
            .into_iter()
            .filter(|c| c.symlink_metadata().is_ok() && !ignore.skips(c))
            .collect();
        // A symlinked directory on the way must not lead out of the build directory (the
        // source itself, if a symlink, is copied as one, never followed).
        for path in &existing {
            let parent = path.parent().and_then(|p| std::fs::canonicalize(p).ok());
            if !parent.is_some_and(|p| p.starts_with(context)) {
                return Err(CopyError::Source(format!(
                    "{pattern}: leads outside the build directory {} through a symlink",
                    context.display()
                )));
            }
        }
        if existing.is_empty() {
            return Err(CopyError::Source(format!(
                "{pattern}: no such file or directory in the build directory {}",
                context.display()
            )));
        }
        found.extend(existing);
    }
    Ok(found)
}

/// `*` (any run of characters) and `?` (one character) within one name.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let (p, n): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    // Classic two-pointer match with backtracking to the last `*`.
    let (mut pi, mut ni, mut star, mut mark) = (0, 0, None, 0);
    while ni < n.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ni;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ni = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

/// A digest of everything the sources hold (names, types, modes, contents): the part of
/// a COPY's cache key that says whether the files changed.
pub fn content_digest(sources: &[PathBuf], ignore: &Ignore) -> Result<String, CopyError> {
    let mut hasher = sha2::Sha256::new();
    for source in sources {
        let mut stack = vec![source.clone()];
        while let Some(path) = stack.pop() {
            let meta = path
                .symlink_metadata()
                .map_err(|e| CopyError::Io(path.clone(), e))?;
            let relative = path.strip_prefix(source).unwrap_or(&path);
            hasher.update(relative.as_os_str().as_encoded_bytes());
            hasher.update(meta.permissions().mode().to_le_bytes());
            if meta.is_symlink() {
                let target =
                    std::fs::read_link(&path).map_err(|e| CopyError::Io(path.clone(), e))?;
                hasher.update(b"L");
                hasher.update(target.as_os_str().as_encoded_bytes());
            } else if meta.is_dir() {
                hasher.update(b"D");
                let mut children: Vec<PathBuf> = std::fs::read_dir(&path)
                    .map_err(|e| CopyError::Io(path.clone(), e))?
                    .flatten()
                    .map(|e| e.path())
                    .filter(|p| !ignore.skips(p))
                    .collect();
                children.sort();
                stack.extend(children.into_iter().rev());
            } else {
                hasher.update(b"F");
                hasher.update(meta.len().to_le_bytes());
                let mut file =
                    std::fs::File::open(&path).map_err(|e| CopyError::Io(path.clone(), e))?;
                std::io::copy(&mut file, &mut hasher)
                    .map_err(|e| CopyError::Io(path.clone(), e))?;
            }
            hasher.update(b"\0");
        }
        hasher.update(b"\n");
    }
    Ok(hex::encode(hasher.finalize()))
}

/// What one COPY or ADD does, its words already expanded.
pub struct CopyStep<'a> {
    pub add: bool,
    pub sources: &'a [PathBuf],
    /// As written: relative ones are under `workdir`.
    pub dest: &'a str,
    pub workdir: &'a str,
    pub owner: (u32, u32),
    pub mode: Option<u32>,
    pub ignore: &'a Ignore,
}

/// Copies (or unpacks) the sources into the rootfs at `root`.
pub fn apply(root: &Path, step: &CopyStep<'_>) -> Result<(), CopyError> {
    let dest = if step.dest.starts_with('/') {
        step.dest.to_string()
    } else {
        format!("{}/{}", step.workdir.trim_end_matches('/'), step.dest)
    };
    let into_dir = dest.ends_with('/') || dest.ends_with("/.");
    if step.sources.len() > 1 && !into_dir {
        return Err(CopyError::Source(format!(
            "{}: with more than one source, the destination must be a directory and end with /",
            step.dest
        )));
    }
    for source in step.sources {
        let meta = source
            .symlink_metadata()
            .map_err(|e| CopyError::Io(source.clone(), e))?;
        if meta.is_dir() {
            let target = rootfs::make_dirs(root, &dest, step.owner)?;
            copy_tree(source, &target, step)?;
        } else if step.add && is_archive(source)? {
            let target = rootfs::make_dirs(root, &dest, step.owner)?;
            unpack_archive(source, &target)?;
        } else {
            let existing_dir = rootfs::resolve(root, &dest, true)?.is_dir();
            let path = if into_dir || existing_dir {
                let name = source.file_name().unwrap_or_default().to_string_lossy();
                format!("{}/{name}", dest.trim_end_matches('/'))
            } else {
                dest.clone()
            };
            let parent = Path::new(&path)
                .parent()
                .map(|p| p.display().to_string())
                .unwrap_or("/".into());
            rootfs::make_dirs(root, &parent, step.owner)?;
            let target = rootfs::resolve(root, &path, false)?;
            copy_one(source, &target, &meta, step)?;
        }
    }
    Ok(())
}

fn copy_tree(from: &Path, to: &Path, step: &CopyStep<'_>) -> Result<(), CopyError> {
    let mut entries: Vec<_> = std::fs::read_dir(from)
        .map_err(|e| CopyError::Io(from.into(), e))?
        .flatten()
        .collect();
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let source = entry.path();
        if step.ignore.skips(&source) {
            continue;
        }
        let meta = source
            .symlink_metadata()
            .map_err(|e| CopyError::Io(source.clone(), e))?;
        let target = to.join(entry.file_name());
        if meta.is_dir() {
            if target.symlink_metadata().is_ok_and(|m| !m.is_dir()) {
                remove(&target)?;
            }
            if !target.exists() {
                std::fs::create_dir(&target).map_err(|e| CopyError::Io(target.clone(), e))?;
            }
            finish(&target, &meta, step)?;
            copy_tree(&source, &target, step)?;
        } else {
            copy_one(&source, &target, &meta, step)?;
        }
    }
    Ok(())
}

/// A file or a symlink, replacing what is at `target` (never writing through a link).
fn copy_one(
    source: &Path,
    target: &Path,
    meta: &std::fs::Metadata,
    step: &CopyStep<'_>,
) -> Result<(), CopyError> {
    if target.symlink_metadata().is_ok() {
        remove(target)?;
    }
    if meta.is_symlink() {
        let link = std::fs::read_link(source).map_err(|e| CopyError::Io(source.into(), e))?;
        std::os::unix::fs::symlink(&link, target).map_err(|e| CopyError::Io(target.into(), e))?;
        std::os::unix::fs::lchown(target, Some(step.owner.0), Some(step.owner.1))
            .map_err(|e| CopyError::Io(target.into(), e))?;
        return Ok(());
    }
    if !meta.is_file() {
        return Err(CopyError::Source(format!(
            "{}: only files, directories and symlinks can be copied",
            source.display()
        )));
    }
    std::fs::copy(source, target).map_err(|e| CopyError::Io(target.into(), e))?;
    finish(target, meta, step)
}

fn finish(target: &Path, meta: &std::fs::Metadata, step: &CopyStep<'_>) -> Result<(), CopyError> {
    std::os::unix::fs::chown(target, Some(step.owner.0), Some(step.owner.1))
        .map_err(|e| CopyError::Io(target.into(), e))?;
    let mode = step.mode.unwrap_or(meta.permissions().mode() & 0o7777);
    std::fs::set_permissions(target, std::fs::Permissions::from_mode(mode))
        .map_err(|e| CopyError::Io(target.into(), e))
}

fn remove(path: &Path) -> Result<(), CopyError> {
    let result = if path.symlink_metadata().is_ok_and(|m| m.is_dir()) {
        std::fs::remove_dir_all(path)
    } else {
        std::fs::remove_file(path)
    };
    result.map_err(|e| CopyError::Io(path.into(), e))
}

/// A tar archive, plain or gzip-compressed, by its first bytes (not its name).
fn is_archive(path: &Path) -> Result<bool, CopyError> {
    let mut head = [0u8; 512];
    let mut file = std::fs::File::open(path).map_err(|e| CopyError::Io(path.into(), e))?;
    let mut n = 0;
    while n < head.len() {
        match file.read(&mut head[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) => return Err(CopyError::Io(path.into(), e)),
        }
    }
    Ok((n >= 2 && head[..2] == [0x1f, 0x8b]) || (n >= 262 && &head[257..262] == b"ustar"))
}

fn unpack_archive(source: &Path, target: &Path) -> Result<(), CopyError> {
    let file = std::fs::File::open(source).map_err(|e| CopyError::Io(source.into(), e))?;
    let mut magic = [0u8; 2];
    let gzip = std::fs::File::open(source)
        .and_then(|mut f| f.read_exact(&mut magic))
        .is_ok()
        && magic == [0x1f, 0x8b];
    let reader: Box<dyn Read> = if gzip {
        Box::new(flate2::read::GzDecoder::new(file))
    } else {
        Box::new(file)
    };
    let mut archive = tar::Archive::new(reader);
    archive.set_preserve_permissions(true);
    archive.set_preserve_ownerships(true);
    archive.set_overwrite(true);
    // The tar crate refuses entries that would land outside `target` (`..`, links).
    archive
        .unpack(target)
        .map_err(|e| CopyError::Io(source.into(), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_match_within_a_name() {
        assert!(glob_match("*.html", "index.html"));
        assert!(glob_match("a?c", "abc"));
        assert!(glob_match("*", ""));
        assert!(!glob_match("*.html", "index.htm"));
        assert!(glob_match("*a*b", "xxaybb"));
    }

    /// Docker's rules for where files land, and sources that do not exist or leave the
    /// build directory are refused.
    #[test]
    fn files_land_where_docker_puts_them() {
        let dir = tempfile::tempdir().unwrap();
        let (context, root) = (dir.path().join("ctx"), dir.path().join("root"));
        std::fs::create_dir_all(context.join("site/css")).unwrap();
        std::fs::create_dir_all(&root).unwrap();
        std::fs::write(context.join("site/index.html"), "hi").unwrap();
        std::fs::write(context.join("site/css/a.css"), "x").unwrap();
        std::fs::write(context.join("one.txt"), "1").unwrap();
        std::fs::write(context.join(".containerignore"), "site/*.bak\n").unwrap();
        std::fs::write(context.join("site/old.bak"), "left out").unwrap();
        let ignore = Ignore::load(&context);
        let sources = |patterns: &[String], add: bool| sources(&context, &ignore, patterns, add);
        let step = |sources: &[PathBuf], dest: &str| {
            apply(
                &root,
                &CopyStep {
                    add: false,
                    sources,
                    dest,
                    workdir: "/app",
                    owner: (0, 0),
                    mode: None,
                    ignore: &ignore,
                },
            )
        };
        step(&sources(&["site".into()], false).unwrap(), "/www").unwrap();
        assert!(root.join("www/index.html").is_file());
        assert!(root.join("www/css/a.css").is_file());
        assert!(
            !root.join("www/old.bak").exists(),
            ".containerignore leaves it out"
        );
        step(&sources(&["one.txt".into()], false).unwrap(), "renamed.txt").unwrap();
        assert_eq!(
            std::fs::read_to_string(root.join("app/renamed.txt")).unwrap(),
            "1"
        );
        step(
            &sources(&["site/*.html".into(), "one.txt".into()], false).unwrap(),
            "/many/",
        )
        .unwrap();
        assert!(root.join("many/index.html").is_file() && root.join("many/one.txt").is_file());
        let two = sources(&["one.txt".into(), "site".into()], false).unwrap();
        assert!(step(&two, "/nodir")
            .unwrap_err()
            .to_string()
            .contains("must be a directory and end with /"));
        assert!(sources(&["../x".into()], false)
            .unwrap_err()
            .to_string()
            .contains("outside the build directory"));
        assert!(sources(&["nope*".into()], false)
            .unwrap_err()
            .to_string()
            .contains("no such file"));
        std::os::unix::fs::symlink("/etc", context.join("hostetc")).unwrap();
        assert!(sources(&["hostetc/passwd".into()], false)
            .unwrap_err()
            .to_string()
            .contains("through a symlink"));
        assert!(
            sources(&["hostetc".into()], false).is_ok(),
            "a symlink itself is copied as one"
        );
        assert!(sources(&["https://x/y".into()], true)
            .unwrap_err()
            .to_string()
            .contains("not supported"));
        let a = content_digest(&two, &ignore).unwrap();
        std::fs::write(context.join("site/old.bak"), "ignored, changed").unwrap();
        assert_eq!(a, content_digest(&two, &ignore).unwrap());
        std::fs::write(context.join("site/css/a.css"), "y").unwrap();
        assert_ne!(a, content_digest(&two, &ignore).unwrap());
    }
}
