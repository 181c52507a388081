//! Unpacking one image layer into a directory that overlayfs can stack.
//!
//! OCI layers mark deletions with whiteout files (`.wh.NAME` deletes NAME from the layers
//! below, `.wh..wh..opq` hides everything below in that directory). Because each layer is
//! kept as its own directory and stacked by overlayfs, we translate these markers into
//! overlayfs' own: a 0/0 character device for a deleted name, and the
//! `trusted.overlay.opaque=y` attribute on an opaque directory. The uncompressed stream's
//! sha256 must match the layer's diff_id.
//!
//! Layers are hostile input: an entry that would land outside the target (`..`, an
//! absolute path, a path through a symlink, a hard link to a file outside) is refused and
//! nothing is written outside; device nodes are skipped (a container has no business with
//! the host's disks); a layer that inflates past `max_bytes` is refused. Touches nothing
//! outside the target directory.

use std::cell::Cell;
use std::io::Read;
use std::path::{Component, Path, PathBuf};
use std::rc::Rc;

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
    #[error("the layer inflates past {0} bytes: refused (a decompression bomb? the agent's --max-layer-bytes sets the limit)")]
    TooLarge(u64),
}

/// Hashes everything read through it (the diff_id is the sha256 of the uncompressed tar)
/// and stops at `limit` bytes, noting in `exceeded` that this is why it stopped (the tar
/// reader wraps read errors in its own).
struct HashingReader<R> {
    inner: R,
    hasher: sha2::Sha256,
    read: u64,
    limit: u64,
    exceeded: Rc<Cell<bool>>,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read += n as u64;
        if self.read > self.limit {
            self.exceeded.set(true);
            return Err(std::io::Error::other("the layer is too large"));
        }
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

pub fn unpack_layer(
    blob: &Path,
    media_type: &str,
    diff_id: &str,
    target: &Path,
    max_bytes: u64,
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
    let exceeded = Rc::new(Cell::new(false));
    let mut reader = HashingReader {
        inner: decompressed,
        hasher: sha2::Sha256::new(),
        read: 0,
        limit: max_bytes,
        exceeded: exceeded.clone(),
    };
    std::fs::create_dir_all(target).map_err(|e| UnpackError::Write(target.into(), e))?;
    let unpacked = unpack_tar(&mut reader, target).and_then(|()| {
        // Hash what follows the tar's end too (padding, or nothing when the footer is missing).
        std::io::copy(&mut reader, &mut std::io::sink())
            .map(drop)
            .map_err(UnpackError::Read)
    });
    if exceeded.get() {
        return Err(UnpackError::TooLarge(max_bytes));
    }
    unpacked?;
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
        let kind = entry.header().entry_type();
        if kind.is_block_special() || kind.is_character_special() {
            tracing::warn!(path = %relative.display(), "device node in a layer: skipped");
            continue;
        }
        let name = relative
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if let Some(hidden) = name.strip_prefix(".wh.") {
            // The marker goes beside the entry it hides: never through a symlink, which
            // could point anywhere on the host.
            let parent = inside(target, relative.parent().unwrap_or(Path::new("")), &path)?;
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

/// The directory `relative` under `target`, made if missing, refused if any part of the
/// way is a symlink (or not a directory).
fn inside(target: &Path, relative: &Path, entry: &Path) -> Result<PathBuf, UnpackError> {
    let mut dir = target.to_path_buf();
    for part in relative.components() {
        dir.push(part);
        match std::fs::symlink_metadata(&dir) {
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => return Err(UnpackError::Escape(entry.to_path_buf())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir(&dir).map_err(|e| UnpackError::Write(dir.clone(), e))?
            }
            Err(e) => return Err(UnpackError::Write(dir.clone(), e)),
        }
    }
    Ok(dir)
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
            1 << 30,
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
            1 << 30,
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
            1 << 30,
        )
        .unwrap_err();
        assert!(matches!(err, UnpackError::Escape(_)), "{err}");
        assert!(!dir.path().join("escaped").exists());
    }

    /// A tar layer of special entries: (path, type, link name).
    fn special_layer(dir: &Path, entries: &[(&str, tar::EntryType, &str)]) -> (PathBuf, String) {
        let mut builder = tar::Builder::new(Vec::new());
        for (path, kind, link) in entries {
            let mut header = tar::Header::new_gnu();
            header.set_entry_type(*kind);
            header.set_size(0);
            header.set_mode(0o755);
            header.set_uid(0);
            header.set_gid(0);
            let name = &mut header.as_old_mut().name;
            name[..path.len()].copy_from_slice(path.as_bytes());
            if !link.is_empty() {
                let linkname = &mut header.as_old_mut().linkname;
                linkname[..link.len()].copy_from_slice(link.as_bytes());
            }
            if kind.is_character_special() {
                header.set_device_major(8).expect("major");
                header.set_device_minor(0).expect("minor");
            }
            header.set_cksum();
            builder.append(&header, std::io::empty()).expect("append");
        }
        let bytes = builder.into_inner().expect("tar");
        let path = dir.join("special.tar");
        std::fs::write(&path, &bytes).expect("write layer");
        (
            path,
            format!("sha256:{}", hex::encode(sha2::Sha256::digest(&bytes))),
        )
    }

    fn unpack_special(
        dir: &Path,
        entries: &[(&str, tar::EntryType, &str)],
    ) -> Result<PathBuf, UnpackError> {
        let (blob, diff_id) = special_layer(dir, entries);
        let target = dir.join("out");
        unpack_layer(
            &blob,
            "application/vnd.oci.image.layer.v1.tar",
            &diff_id,
            &target,
            1 << 30,
        )
        .map(|()| target)
    }

    #[test]
    fn nothing_is_written_through_a_symlink_out_of_the_layer() {
        use tar::EntryType;
        let dir = tempfile::tempdir().expect("tempdir");
        let outside = dir.path().join("host");
        std::fs::create_dir_all(&outside).expect("host dir");
        std::fs::write(outside.join("victim"), "precious").expect("victim");
        let host = outside.to_str().expect("path");
        // A whiteout through a symlink would delete the host's file.
        let err = unpack_special(
            dir.path(),
            &[
                ("evil", EntryType::Symlink, host),
                ("evil/.wh.victim", EntryType::Regular, ""),
            ],
        )
        .unwrap_err();
        assert!(matches!(err, UnpackError::Escape(_)), "{err}");
        // A file written through a symlink would land on the host.
        let err = unpack_special(
            dir.path(),
            &[
                ("link", EntryType::Symlink, host),
                ("link/planted", EntryType::Regular, ""),
            ],
        );
        assert!(err.is_err(), "writing through a symlink must fail");
        // A hard link to a host file would share (and let the container change) it.
        let victim = outside.join("victim");
        let err = unpack_special(
            dir.path(),
            &[("hard", EntryType::Link, victim.to_str().expect("path"))],
        );
        assert!(err.is_err(), "a hard link out must fail");
        assert_eq!(
            std::fs::read_to_string(&victim).expect("victim"),
            "precious"
        );
        assert!(!outside.join("planted").exists());
        assert_eq!(std::fs::read_dir(&outside).expect("host dir").count(), 1);
    }

    #[test]
    fn device_nodes_are_skipped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let target = unpack_special(
            dir.path(),
            &[
                ("dev/sda", tar::EntryType::Char, ""),
                ("ok", tar::EntryType::Directory, ""),
            ],
        )
        .expect("unpack");
        assert!(!target.join("dev/sda").exists());
        assert!(target.join("ok").is_dir());
    }

    #[test]
    fn a_layer_inflating_past_the_limit_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        // 8 MiB of zeros gzip to a few kilobytes.
        let zeros = vec![0u8; 8 << 20];
        let (blob, diff_id) = layer(dir.path(), &[("big", zeros.as_slice())]);
        let tar = std::fs::read(&blob).expect("tar");
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        std::io::Write::write_all(&mut gz, &tar).expect("gzip");
        let gz_path = dir.path().join("big.tar.gz");
        std::fs::write(&gz_path, gz.finish().expect("gzip")).expect("write");
        let err = unpack_layer(
            &gz_path,
            "application/vnd.oci.image.layer.v1.tar+gzip",
            &diff_id,
            &dir.path().join("out"),
            1 << 20,
        )
        .unwrap_err();
        assert!(matches!(err, UnpackError::TooLarge(_)), "{err}");
    }

    /// What `make fuzz` found worth keeping replays here: no input panics, and nothing is
    /// ever written beside the target.
    #[test]
    fn the_fuzz_corpus_replays_safely() {
        for input in kubelab_proto::fuzz_corpus("unpack_layer") {
            let dir = tempfile::tempdir().expect("tempdir");
            let data = std::fs::read(&input).expect("input");
            let media_type = if data.starts_with(&[0x1f, 0x8b]) {
                "application/vnd.oci.image.layer.v1.tar+gzip"
            } else {
                "application/vnd.oci.image.layer.v1.tar"
            };
            let _ = unpack_layer(
                &input,
                media_type,
                "sha256:0",
                &dir.path().join("out"),
                64 << 20,
            );
            let beside: Vec<_> = std::fs::read_dir(dir.path())
                .expect("dir")
                .flatten()
                .collect();
            assert!(beside.len() <= 1, "{:?} wrote outside its target", input);
        }
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
            1 << 30,
        )
        .unwrap_err();
        assert!(err.to_string().contains("zstd"), "{err}");
    }
}
