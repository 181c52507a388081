//! Turning a build step's overlay upper directory into an OCI layer.
//!
//! What a step changed is exactly what overlayfs put in its upper directory: new and
//! modified files, a 0/0 character device for each deleted name, and the
//! `trusted.overlay.opaque=y` attribute on a directory that replaced one below. This
//! module writes that as a tar in OCI's terms (`.wh.NAME` and `.wh..wh..opq`), gzipped
//! as it is made: the tar's sha256 is the layer's diff_id, the gzip's is its blob
//! digest. It reads the upper directory and writes one file; it mounts and runs nothing.

use std::collections::HashMap;
use std::io::Write;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use sha2::Digest;

#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    #[error("reading {0}: {1}")]
    Read(PathBuf, std::io::Error),
    #[error("writing the layer {0}: {1}")]
    Write(PathBuf, std::io::Error),
}

/// A layer written to disk (gzip-compressed).
#[derive(Debug)]
pub struct Written {
    pub diff_id: String,
    pub digest: String,
    pub size: u64,
    /// Files, directories, links and whiteouts in the layer.
    pub entries: usize,
}

/// Whether a step changed anything at all (then it makes no layer).
pub fn is_empty(upper: &Path) -> Result<bool, LayerError> {
    let mut entries = std::fs::read_dir(upper).map_err(|e| LayerError::Read(upper.into(), e))?;
    Ok(entries.next().is_none())
}

/// Writes `upper` as a gzip-compressed tar at `gz_path`.
pub fn write(upper: &Path, gz_path: &Path) -> Result<Written, LayerError> {
    let wr = |e| LayerError::Write(gz_path.to_path_buf(), e);
    // tar → sha256 (the diff_id) → gzip → sha256 (the digest) → the file, in one pass.
    let file = HashingWriter::new(std::io::BufWriter::new(
        std::fs::File::create(gz_path).map_err(wr)?,
    ));
    let gz = flate2::write::GzEncoder::new(file, flate2::Compression::fast());
    let mut builder = tar::Builder::new(HashingWriter::new(gz));
    builder.follow_symlinks(false);
    let mut entries = 0;
    // (device, inode) of files with several links → the first path written, so that the
    // others become hard links as they were.
    let mut links: HashMap<(u64, u64), PathBuf> = HashMap::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(relative) = stack.pop() {
        let dir = upper.join(&relative);
        let rd = |e| LayerError::Read(dir.clone(), e);
        let mut names: Vec<_> = std::fs::read_dir(&dir)
            .map_err(rd)?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<Result<_, _>>()
            .map_err(rd)?;
        names.sort();
        // Directories are written depth-first in name order: pushed in reverse.
        let mut subdirs = Vec::new();
        for name in names {
            let rel = relative.join(&name);
            let path = upper.join(&rel);
            let meta = path
                .symlink_metadata()
                .map_err(|e| LayerError::Read(path.clone(), e))?;
            let kind = meta.file_type();
            let mut header = tar::Header::new_gnu();
            header.set_metadata_in_mode(&meta, tar::HeaderMode::Complete);
            header.set_uid(meta.uid().into());
            header.set_gid(meta.gid().into());
            if kind.is_char_device() && meta.rdev() == 0 {
                // overlayfs' whiteout: the name was deleted.
                let marker = relative.join(format!(".wh.{}", name.to_string_lossy()));
                builder
                    .append_data(&mut marker_header(meta.mtime()), marker, std::io::empty())
                    .map_err(wr)?;
            } else if kind.is_dir() {
                header.set_size(0);
                builder
                    .append_data(&mut header, &rel, std::io::empty())
                    .map_err(wr)?;
                if is_opaque(&path) {
                    let marker = rel.join(".wh..wh..opq");
                    builder
                        .append_data(&mut marker_header(meta.mtime()), marker, std::io::empty())
                        .map_err(wr)?;
                }
                subdirs.push(rel);
            } else if kind.is_symlink() {
                let target =
                    std::fs::read_link(&path).map_err(|e| LayerError::Read(path.clone(), e))?;
                header.set_size(0);
                builder
                    .append_link(&mut header, &rel, &target)
                    .map_err(wr)?;
            } else if kind.is_file() {
                let key = (meta.dev(), meta.ino());
                match links.get(&key) {
                    Some(first) if meta.nlink() > 1 => {
                        header.set_entry_type(tar::EntryType::Link);
                        header.set_size(0);
                        builder.append_link(&mut header, &rel, first).map_err(wr)?;
                    }
                    _ => {
                        if meta.nlink() > 1 {
                            links.insert(key, rel.clone());
                        }
                        let file = std::fs::File::open(&path)
                            .map_err(|e| LayerError::Read(path.clone(), e))?;
                        builder.append_data(&mut header, &rel, file).map_err(wr)?;
                    }
                }
            } else if kind.is_fifo() {
                header.set_size(0);
                builder
                    .append_data(&mut header, &rel, std::io::empty())
                    .map_err(wr)?;
            } else {
                // Device nodes and sockets: an image carries none (the runtime makes /dev).
                tracing::debug!(path = %rel.display(), "not put in the layer: a device or a socket");
                continue;
            }
            entries += 1;
        }
        stack.extend(subdirs.into_iter().rev());
    }
    let tar = builder.into_inner().map_err(wr)?;
    let diff_id = tar.digest();
    let mut file = tar.inner.finish().map_err(wr)?;
    file.flush().map_err(wr)?;
    Ok(Written {
        diff_id,
        digest: file.digest(),
        size: file.written,
        entries,
    })
}

/// The header of a whiteout marker: an empty file of root's.
fn marker_header(mtime: i64) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Regular);
    header.set_size(0);
    header.set_mode(0o600);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(mtime.max(0) as u64);
    header
}

fn is_opaque(dir: &Path) -> bool {
    matches!(xattr::get(dir, "trusted.overlay.opaque"), Ok(Some(v)) if v == b"y")
}

struct HashingWriter<W> {
    inner: W,
    hasher: sha2::Sha256,
    written: u64,
}

impl<W> HashingWriter<W> {
    fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            hasher: sha2::Sha256::new(),
            written: 0,
        }
    }

    fn digest(&self) -> String {
        format!("sha256:{}", hex::encode(self.hasher.clone().finalize()))
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deleted file and a replaced directory come out as OCI whiteouts, and the digests
    /// are those of the files written.
    #[test]
    fn overlay_markers_become_oci_whiteouts() {
        let dir = tempfile::tempdir().unwrap();
        let upper = dir.path().join("upper");
        std::fs::create_dir_all(upper.join("etc/conf.d")).unwrap();
        std::fs::write(upper.join("etc/motd"), b"hello\n").unwrap();
        std::fs::hard_link(upper.join("etc/motd"), upper.join("etc/motd2")).unwrap();
        std::os::unix::fs::symlink("motd", upper.join("etc/link")).unwrap();
        nix::sys::stat::mknod(
            &upper.join("etc/gone"),
            nix::sys::stat::SFlag::S_IFCHR,
            nix::sys::stat::Mode::empty(),
            0,
        )
        .unwrap();
        xattr::set(upper.join("etc/conf.d"), "trusted.overlay.opaque", b"y").unwrap();
        let gz_path = dir.path().join("l.tar.gz");
        let written = write(&upper, &gz_path).unwrap();
        let mut tar_bytes = Vec::new();
        std::io::Read::read_to_end(
            &mut flate2::read::GzDecoder::new(std::fs::File::open(&gz_path).unwrap()),
            &mut tar_bytes,
        )
        .unwrap();
        let mut archive = tar::Archive::new(tar_bytes.as_slice());
        let names: Vec<(String, tar::EntryType)> = archive
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (
                    e.path().unwrap().display().to_string(),
                    e.header().entry_type(),
                )
            })
            .collect();
        assert_eq!(
            names,
            vec![
                ("etc".into(), tar::EntryType::Directory),
                ("etc/conf.d".into(), tar::EntryType::Directory),
                ("etc/conf.d/.wh..wh..opq".into(), tar::EntryType::Regular),
                ("etc/.wh.gone".into(), tar::EntryType::Regular),
                ("etc/link".into(), tar::EntryType::Symlink),
                ("etc/motd".into(), tar::EntryType::Regular),
                ("etc/motd2".into(), tar::EntryType::Link),
            ]
        );
        assert_eq!(written.entries, 6);
        assert_eq!(
            written.diff_id,
            format!("sha256:{}", hex::encode(sha2::Sha256::digest(&tar_bytes)))
        );
        let gz_bytes = std::fs::read(&gz_path).unwrap();
        assert_eq!(
            written.digest,
            format!("sha256:{}", hex::encode(sha2::Sha256::digest(&gz_bytes)))
        );
        assert_eq!(written.size, gz_bytes.len() as u64);
    }
}
