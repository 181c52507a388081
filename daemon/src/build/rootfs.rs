//! The build's current root filesystem, as one step sees it.
//!
//! A step works on an overlay mount: the image's layers so far below (read-only), an
//! empty upper directory on top. What the step changes lands in the upper directory,
//! which `layer.rs` turns into the step's layer. `resolve` finds a path inside that
//! rootfs the way the container would, so that a symlink in the image (`/bin -> usr/bin`,
//! or one pointing at `/etc` of the host) never leads a COPY outside it.
//! Owns the step's scratch directory and its mount; unmounts and removes both on drop.

use std::path::{Component, Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    #[error("{0}: {1}")]
    Io(PathBuf, std::io::Error),
    #[error("mounting the build's rootfs at {0}: {1}")]
    Mount(PathBuf, nix::errno::Errno),
    #[error("{0}: too many levels of symbolic links")]
    Loop(String),
}

/// One step's overlay: `merged` is the rootfs, `upper` collects the changes.
pub struct StepRootfs {
    dir: PathBuf,
    pub merged: PathBuf,
    pub upper: PathBuf,
    mounted: bool,
}

impl StepRootfs {
    /// Mounts `layers` (bottom first) under a fresh upper directory, in a new scratch
    /// directory under `scratch`. With no layer yet (FROM scratch) `empty` is the lower.
    pub fn mount(scratch: &Path, layers: &[PathBuf], empty: &Path) -> Result<Self, RootfsError> {
        let dir = scratch.join(format!("step-{}", uuid::Uuid::new_v4().simple()));
        let (merged, upper, work) = (dir.join("merged"), dir.join("upper"), dir.join("work"));
        for d in [&merged, &upper, &work, &empty.to_path_buf()] {
            std::fs::create_dir_all(d).map_err(|e| RootfsError::Io(d.clone(), e))?;
        }
        let mut step = StepRootfs {
            dir,
            merged,
            upper,
            mounted: false,
        };
        // overlayfs lists the lower layers top first.
        let mut lower: Vec<String> = layers
            .iter()
            .rev()
            .map(|l| l.display().to_string())
            .collect();
        if lower.is_empty() {
            lower.push(empty.display().to_string());
        }
        let options = format!(
            "lowerdir={},upperdir={},workdir={}",
            lower.join(":"),
            step.upper.display(),
            work.display()
        );
        nix::mount::mount(
            Some("overlay"),
            &step.merged,
            Some("overlay"),
            nix::mount::MsFlags::empty(),
            Some(options.as_str()),
        )
        .map_err(|e| RootfsError::Mount(step.merged.clone(), e))?;
        step.mounted = true;
        Ok(step)
    }

    /// Unmounts the rootfs; the upper directory stays, holding the step's changes.
    pub fn unmount(&mut self) -> Result<(), RootfsError> {
        if self.mounted {
            nix::mount::umount2(&self.merged, nix::mount::MntFlags::MNT_DETACH)
                .map_err(|e| RootfsError::Mount(self.merged.clone(), e))?;
            self.mounted = false;
        }
        Ok(())
    }

    /// The step's scratch directory (for the runtime bundle and the layer files).
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for StepRootfs {
    fn drop(&mut self) {
        let _ = self.unmount();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Where `path` (absolute, as the container sees it) is under `root`, following symlinks
/// as the container would: an absolute target starts again at `root`, and `..` never
/// climbs above it. The last component is followed too unless `follow_last` is false.
pub fn resolve(root: &Path, path: &str, follow_last: bool) -> Result<PathBuf, RootfsError> {
    let mut pending: Vec<String> = components(path);
    pending.reverse();
    let mut resolved: Vec<String> = Vec::new();
    let mut hops = 0;
    while let Some(name) = pending.pop() {
        match name.as_str() {
            "." => continue,
            ".." => {
                resolved.pop();
                continue;
            }
            _ => {}
        }
        let candidate = root.join(resolved.join("/")).join(&name);
        let is_last = pending.is_empty();
        match candidate.symlink_metadata() {
            Ok(meta) if meta.file_type().is_symlink() && (follow_last || !is_last) => {
                hops += 1;
                if hops > 40 {
                    return Err(RootfsError::Loop(path.to_string()));
                }
                let target = std::fs::read_link(&candidate)
                    .map_err(|e| RootfsError::Io(candidate.clone(), e))?;
                let target = target.to_string_lossy().to_string();
                if target.starts_with('/') {
                    resolved.clear();
                }
                let mut more = components(&target);
                more.reverse();
                pending.extend(more);
            }
            _ => resolved.push(name),
        }
    }
    Ok(root.join(resolved.join("/")))
}

fn components(path: &str) -> Vec<String> {
    Path::new(path)
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_string_lossy().to_string()),
            Component::ParentDir => Some("..".into()),
            _ => None,
        })
        .collect()
}

/// Creates `path` and its missing parents inside the rootfs, each owned by uid:gid.
pub fn make_dirs(root: &Path, path: &str, owner: (u32, u32)) -> Result<PathBuf, RootfsError> {
    let mut sofar = String::new();
    for name in components(path) {
        sofar.push('/');
        sofar.push_str(&name);
        let at = resolve(root, &sofar, true)?;
        if !at.exists() {
            std::fs::create_dir(&at).map_err(|e| RootfsError::Io(at.clone(), e))?;
            std::os::unix::fs::chown(&at, Some(owner.0), Some(owner.1))
                .map_err(|e| RootfsError::Io(at.clone(), e))?;
        }
    }
    resolve(root, path, true)
}

/// A user as USER or `--chown` names it (`name`, `uid`, `name:group`, `uid:gid`), as
/// numbers, looked up in the rootfs' `/etc/passwd` and `/etc/group` as the container
/// would. Without a group, the user's own group (or 0 for a uid not in passwd).
pub fn lookup_user(root: &Path, spec: &str) -> Result<(u32, u32), String> {
    let read = |file: &str| {
        resolve(root, file, true)
            .ok()
            .and_then(|p| std::fs::read_to_string(p).ok())
            .unwrap_or_default()
    };
    let (user, group) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let passwd = read("/etc/passwd");
    // name:password:uid:gid:...
    let entry = passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.len() > 3 && (f[0] == user || (user.parse::<u32>().is_ok() && f[2] == user)));
    let uid = match user.parse::<u32>() {
        Ok(uid) => uid,
        Err(_) => entry
            .as_ref()
            .and_then(|f| f[2].parse().ok())
            .ok_or_else(|| format!("no user {user:?} in the image's /etc/passwd"))?,
    };
    let gid = match group {
        None => entry.as_ref().and_then(|f| f[3].parse().ok()).unwrap_or(0),
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => read("/etc/group")
                .lines()
                .map(|l| l.split(':').collect::<Vec<_>>())
                .find(|f| f.len() > 2 && f[0] == g)
                .and_then(|f| f[2].parse().ok())
                .ok_or_else(|| format!("no group {g:?} in the image's /etc/group"))?,
        },
    };
    Ok((uid, gid))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An image's symlinks are followed inside the rootfs, never out of it.
    #[test]
    fn paths_resolve_inside_the_rootfs() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("usr/bin")).unwrap();
        std::os::unix::fs::symlink("usr/bin", root.join("bin")).unwrap();
        std::os::unix::fs::symlink("/etc", root.join("hostetc")).unwrap();
        std::os::unix::fs::symlink("../../..", root.join("usr/up")).unwrap();
        assert_eq!(
            resolve(root, "/bin/sh", true).unwrap(),
            root.join("usr/bin/sh")
        );
        assert_eq!(
            resolve(root, "/hostetc/passwd", true).unwrap(),
            root.join("etc/passwd")
        );
        assert_eq!(resolve(root, "/usr/up/x", true).unwrap(), root.join("x"));
        assert_eq!(resolve(root, "../../etc", true).unwrap(), root.join("etc"));
        assert_eq!(resolve(root, "/bin", false).unwrap(), root.join("bin"));
        std::os::unix::fs::symlink("loop", root.join("loop")).unwrap();
        assert!(resolve(root, "/loop/x", true).is_err());
        let made = make_dirs(root, "/hostetc/new/dir", (0, 0)).unwrap();
        assert_eq!(made, root.join("etc/new/dir"));
        assert!(made.is_dir());
    }

    #[test]
    fn users_are_looked_up_in_the_image() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::write(
            root.join("etc/passwd"),
            "root:x:0:0::/root:/bin/sh\nwww:x:33:34::/:/bin/false\n",
        )
        .unwrap();
        std::fs::write(root.join("etc/group"), "root:x:0:\nstaff:x:50:\n").unwrap();
        assert_eq!(lookup_user(root, "www"), Ok((33, 34)));
        assert_eq!(lookup_user(root, "33"), Ok((33, 34)));
        assert_eq!(lookup_user(root, "1000"), Ok((1000, 0)));
        assert_eq!(lookup_user(root, "www:staff"), Ok((33, 50)));
        assert_eq!(lookup_user(root, "7:8"), Ok((7, 8)));
        assert!(lookup_user(root, "nobody")
            .unwrap_err()
            .contains("no user \"nobody\""));
    }
}
