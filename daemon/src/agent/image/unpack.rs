//! Unpacking one image layer into a directory that overlayfs can stack.
//!
//! OCI layers mark deletions with whiteout files (`.wh.NAME` deletes NAME from the layers
//! below, `.wh..wh..opq` hides everything below in that directory). Because each layer is
//! kept as its own directory and stacked by overlayfs, we translate these markers into
//! overlayfs' own: a 0/0 character device for a deleted name, and the
//! `trusted.overlay.opaque=y` attribute on an opaque directory. The uncompressed stream's
//! sha256 must match the layer's diff_id. Touches nothing outside the target directory.

use std::io::Read;
use std::path::{Component, Path, PathBuf};

use sha2::Digest;

#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error(
        "unsupported layer media type {0:?} (gzip-compressed or plain tar layers are supported)"
    )]
    MediaType(String),
    #[error("reading the layer: {0}")]
    Read(std::io::Error),
    #[error("writing {0}: {1}")]
    Write(PathBuf, std::io::Error),
    #[error("entry {0:?} points outside the layer: refused")]
    Escape(PathBuf),
    #[error("uncompressed layer has digest {actual}, but the image config says {expected}")]
    DiffIdMismatch { expected: String, actual: String },
}

/// Hashes everything read through it: the diff_id is the sha256 of the uncompressed tar.
struct HashingReader<R> {
    inner: R,
    hasher: sha2::Sha256,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

pub fn unpack_layer(
    blob: &Path,
    media_type: &str,
    diff_id: &str,
    target: &Path,
) -> Result<(), UnpackError> {
    let file = std::fs::File::open(blob).map_err(UnpackError::Read)?;
    let file = std::io::BufReader::with_capacity(256 * 1024, file);
    let decompressed: Box<dyn Read> = if media_type.ends_with("gzip") {
        Box::new(flate2::read::GzDecoder::new(file))
    } else if media_type.ends_with("tar") {
        Box::new(file)
    } else {
        return Err(UnpackError::MediaType(media_type.to_string()));
    };
    let mut reader = HashingReader {
        inner: decompressed,
        hasher: sha2::Sha256::new(),
    };
    std::fs::create_dir_all(target).map_err(|e| UnpackError::Write(target.into(), e))?;
    unpack_tar(&mut reader, target)?;
    // Hash what follows the tar's end too (padding, or nothing when the footer is missing).
    std::io::copy(&mut reader, &mut std::io::sink()).map_err(UnpackError::Read)?;
    let actual = format!("sha256:{}", hex::encode(reader.hasher.finalize()));
    if actual != diff_id {
        return Err(UnpackError::DiffIdMismatch {
            expected: diff_id.to_string(),
            actual,
        });
    }
    Ok(())
}

fn unpack_tar(reader: &mut dyn Read, target: &Path) -> Result<(), UnpackError> {
    let mut archive = tar::Archive::new(reader);
    archive.set_preserve_permissions(true);
    archive.set_preserve_ownerships(true);
    archive.set_unpack_xattrs(true);
    archive.set_overwrite(true);
    let entries = archive.entries().map_err(UnpackError::Read)?;
    for entry in entries {
        let mut entry = match entry {
            Ok(entry) => entry,
            // Some tools write layers without the two zero blocks that end a tar; what came
            // before is complete, so stop here rather than refuse the layer.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(e) => return Err(UnpackError::Read(e)),
        };
        let path = entry.path().map_err(UnpackError::Read)?.into_owned();
        let relative = safe_relative(&path)?;
        let name = relative
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if let Some(hidden) = name.strip_prefix(".wh.") {
            let parent = target.join(relative.parent().unwrap_or(Path::new("")));
            std::fs::create_dir_all(&parent).map_err(|e| UnpackError::Write(parent.clone(), e))?;
            if hidden == ".wh..opq" {
                set_opaque(&parent)?;
            } else {
                make_whiteout(&parent.join(hidden))?;
            }
            continue;
        }
        // `unpack_in` refuses paths that climb out of `target`, including through symlinks
        // it created earlier.
        let unpacked = entry
            .unpack_in(target)
            .map_err(|e| UnpackError::Write(target.join(&relative), e))?;
        if !unpacked {
            return Err(UnpackError::Escape(path));
        }
    }
    Ok(())
}

/// The entry's path with `./` removed, refused when it is absolute or climbs with `..`.
fn safe_relative(path: &Path) -> Result<PathBuf, UnpackError> {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::Normal(c) => out.push(c),
            Component::CurDir => {}
            _ => return Err(UnpackError::Escape(path.to_path_buf())),
        }
    }
    Ok(out)
}

/// overlayfs' whiteout: a character device with device number 0/0.
fn make_whiteout(path: &Path) -> Result<(), UnpackError> {
    use nix::sys::stat::{makedev, mknod, Mode, SFlag};
    if std::fs::symlink_metadata(path).is_ok() {
        let _ = std::fs::remove_dir_all(path).or_else(|_| std::fs::remove_file(path));
    }
    mknod(path, SFlag::S_IFCHR, Mode::empty(), makedev(0, 0))
        .map_err(|e| UnpackError::Write(path.to_path_buf(), std::io::Error::from(e)))
}

/// overlayfs' opaque directory: nothing from the layers below shows through it.
fn set_opaque(dir: &Path) -> Result<(), UnpackError> {
    xattr::set(dir, "trusted.overlay.opaque", b"y")
        .map_err(|e| UnpackError::Write(dir.to_path_buf(), e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileTypeExt;

    /// A plain tar layer written to a file, and its diff_id.
    fn layer(dir: &Path, entries: &[(&str, &[u8])]) -> (PathBuf, String) {
        let mut builder = tar::Builder::new(Vec::new());
        for (path, data) in entries {
            let mut header = tar::Header::new_gnu();
            header.set_size(data.len() as u64);
            header.set_mode(0o644);
            header.set_uid(0);
            header.set_gid(0);
            // Written into the raw name field, so that even a hostile path (`../x`) gets in.
            let name = &mut header.as_old_mut().name;
            name[..path.len()].copy_from_slice(path.as_bytes());
            header.set_cksum();
            builder.append(&header, *data).expect("append");
        }
        let bytes = builder.into_inner().expect("tar");
        let path = dir.join("layer.tar");
        std::fs::write(&path, &bytes).expect("write layer");
        (
            path,
            format!("sha256:{}", hex::encode(sha2::Sha256::digest(&bytes))),
        )
    }

    #[test]
    fn whiteouts_become_overlayfs_markers() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (blob, diff_id) = layer(
            dir.path(),
            &[
                ("etc/.wh.gone", b""),
                ("opq/.wh..wh..opq", b""),
                ("opq/new", b"new"),
            ],
        );
        let target = dir.path().join("out");
        unpack_layer(
            &blob,
            "application/vnd.oci.image.layer.v1.tar",
            &diff_id,
            &target,
        )
        .expect("unpack");
        let gone = std::fs::symlink_metadata(target.join("etc/gone")).expect("whiteout");
        assert!(gone.file_type().is_char_device());
        assert_eq!(
            xattr::get(target.join("opq"), "trusted.overlay.opaque").expect("xattr"),
            Some(b"y".to_vec())
        );
        assert_eq!(std::fs::read(target.join("opq/new")).expect("file"), b"new");
        assert!(!target.join("etc/.wh.gone").exists());
    }

    #[test]
    fn a_wrong_diff_id_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (blob, _) = layer(dir.path(), &[("a", b"a")]);
        let wrong = format!("sha256:{}", "0".repeat(64));
        let err = unpack_layer(
            &blob,
            "application/vnd.oci.image.layer.v1.tar",
            &wrong,
            &dir.path().join("out"),
        )
        .unwrap_err();
        assert!(matches!(err, UnpackError::DiffIdMismatch { .. }), "{err}");
    }

    #[test]
    fn an_entry_climbing_out_of_the_layer_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (blob, diff_id) = layer(dir.path(), &[("../escaped", b"x")]);
        let target = dir.path().join("out");
        let err = unpack_layer(
            &blob,
            "application/vnd.oci.image.layer.v1.tar",
            &diff_id,
            &target,
        )
        .unwrap_err();
        assert!(matches!(err, UnpackError::Escape(_)), "{err}");
        assert!(!dir.path().join("escaped").exists());
    }

    #[test]
    fn unknown_compression_is_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (blob, diff_id) = layer(dir.path(), &[("a", b"a")]);
        let err = unpack_layer(
            &blob,
            "application/vnd.oci.image.layer.v1.tar+zstd",
            &diff_id,
            &dir.path().join("out"),
        )
        .unwrap_err();
        assert!(err.to_string().contains("zstd"), "{err}");
    }
}
