//! Pod volumes on the node: `emptyDir` (a directory, or a tmpfs for `medium: Memory`,
//! under `pods/<uid>/volumes/<name>`, made before the first container and removed with
//! the pod) and `hostPath` (a path of the node, checked per its `type`).
//!
//! Returns where each volume is on the host; `spec.rs` bind-mounts them into containers.
//! Never removes anything outside the pod's own directory.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use kubelab_proto::v1::volume::Source;
use kubelab_proto::v1::Volume;

#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    #[error("volume {0:?}: {1}: {2}")]
    Io(String, PathBuf, std::io::Error),
    #[error("volume {0:?}: hostPath {1} is not {2} (hostPath.type: {3})")]
    HostPathType(String, PathBuf, &'static str, String),
    #[error("volume {0:?}: mounting a tmpfs at {1}: {2}")]
    Tmpfs(String, PathBuf, nix::Error),
}

/// Makes the pod's volumes ready (idempotent) and returns name → host path.
pub fn prepare(dir: &Path, volumes: &[Volume]) -> Result<HashMap<String, PathBuf>, VolumeError> {
    let mut paths = HashMap::new();
    for v in volumes {
        let io = |p: &Path, e| VolumeError::Io(v.name.clone(), p.to_path_buf(), e);
        let path = match &v.source {
            Some(Source::EmptyDir(e)) => {
                let path = dir.join(&v.name);
                let fresh = !path.exists();
                std::fs::create_dir_all(&path).map_err(|e| io(&path, e))?;
                if fresh && e.medium == "Memory" {
                    let size = if e.size_limit_bytes > 0 {
                        format!("size={}", e.size_limit_bytes)
                    } else {
                        String::new()
                    };
                    nix::mount::mount(
                        Some("tmpfs"),
                        &path,
                        Some("tmpfs"),
                        nix::mount::MsFlags::MS_NOSUID | nix::mount::MsFlags::MS_NODEV,
                        Some(size.as_str()),
                    )
                    .map_err(|e| VolumeError::Tmpfs(v.name.clone(), path.clone(), e))?;
                }
                path
            }
            Some(Source::HostPath(h)) => {
                let path = PathBuf::from(&h.path);
                let wrong = |kind| {
                    VolumeError::HostPathType(v.name.clone(), path.clone(), kind, h.r#type.clone())
                };
                match h.r#type.as_str() {
                    "DirectoryOrCreate" => {
                        std::fs::create_dir_all(&path).map_err(|e| io(&path, e))?
                    }
                    "FileOrCreate" if !path.exists() => {
                        if let Some(parent) = path.parent() {
                            std::fs::create_dir_all(parent).map_err(|e| io(parent, e))?;
                        }
                        std::fs::File::create(&path).map_err(|e| io(&path, e))?;
                    }
                    "Directory" if !path.is_dir() => return Err(wrong("a directory")),
                    "File" if !path.is_file() => return Err(wrong("a file")),
                    _ => {}
                }
                if !path.exists() {
                    return Err(VolumeError::Io(
                        v.name.clone(),
                        path,
                        std::io::Error::from(std::io::ErrorKind::NotFound),
                    ));
                }
                path
            }
            None => continue,
        };
        paths.insert(v.name.clone(), path);
    }
    Ok(paths)
}

/// Unmounts the pod's tmpfs volumes; the caller removes the directory.
pub fn remove(dir: &Path) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let _ = nix::mount::umount2(&entry.path(), nix::mount::MntFlags::MNT_DETACH);
    }
}
