//! Where built images are kept: an OCI image layout directory (the OCI image spec's own
//! on-disk format, which `skopeo`, `umoci` and `kubelab image build --push` read).
//!
//! `oci-layout` says which version, `blobs/sha256/HEX` holds every blob (layers, configs,
//! manifests) under its digest, and `index.json` lists the tagged manifests, each with its
//! name in the `org.opencontainers.image.ref.name` annotation. Owns those files only.

use std::path::{Path, PathBuf};

use serde_json::{json, Value};
use sha2::Digest;

/// The annotation that names a manifest in `index.json`.
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";

#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    #[error("{0}: {1}")]
    Io(PathBuf, std::io::Error),
    #[error("{0}: not a valid OCI layout index: {1}")]
    Index(PathBuf, String),
}

pub struct Layout {
    dir: PathBuf,
}

impl Layout {
    pub fn open(dir: PathBuf) -> Result<Layout, LayoutError> {
        let sha = dir.join("blobs").join("sha256");
        std::fs::create_dir_all(&sha).map_err(|e| LayoutError::Io(sha, e))?;
        let layout = Layout { dir };
        let marker = layout.dir.join("oci-layout");
        if !marker.exists() {
            write_atomic(&marker, br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        }
        if !layout.index_path().exists() {
            layout.write_index(&json!({"schemaVersion": 2, "manifests": []}))?;
        }
        Ok(layout)
    }

    /// The `blobs` directory (what an ImageManager keeps pulled blobs in).
    pub fn blobs(&self) -> PathBuf {
        self.dir.join("blobs")
    }

    pub fn blob_path(&self, digest: &str) -> PathBuf {
        let (algorithm, hex) = digest.split_once(':').unwrap_or(("sha256", digest));
        self.blobs().join(algorithm).join(hex)
    }

    /// Stores bytes as a blob; returns its digest and size.
    pub fn put(&self, bytes: &[u8]) -> Result<(String, u64), LayoutError> {
        let digest = format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)));
        let path = self.blob_path(&digest);
        if !path.exists() {
            write_atomic(&path, bytes)?;
        }
        Ok((digest, bytes.len() as u64))
    }

    /// Moves a file whose digest is known into the blob store.
    pub fn adopt(&self, file: &Path, digest: &str) -> Result<(), LayoutError> {
        let path = self.blob_path(digest);
        std::fs::rename(file, &path).map_err(|e| LayoutError::Io(path, e))
    }

    /// Names a manifest in the index, replacing what had that name before.
    pub fn tag(&self, name: &str, manifest: Value) -> Result<(), LayoutError> {
        let path = self.index_path();
        let mut index = self.read_index()?;
        let mut manifests: Vec<Value> = index["manifests"].as_array().cloned().unwrap_or_default();
        manifests.retain(|m| m["annotations"][REF_NAME] != name);
        let mut manifest = manifest;
        manifest["annotations"] = json!({ REF_NAME: name });
        manifests.push(manifest);
        index["manifests"] = Value::Array(manifests);
        self.write_index(&index)
            .map_err(|e| LayoutError::Index(path, e.to_string()))
    }

    fn index_path(&self) -> PathBuf {
        self.dir.join("index.json")
    }

    fn read_index(&self) -> Result<Value, LayoutError> {
        let path = self.index_path();
        let bytes = std::fs::read(&path).map_err(|e| LayoutError::Io(path.clone(), e))?;
        serde_json::from_slice(&bytes).map_err(|e| LayoutError::Index(path, e.to_string()))
    }

    fn write_index(&self, index: &Value) -> Result<(), LayoutError> {
        let bytes = serde_json::to_vec_pretty(index)
            .map_err(|e| LayoutError::Index(self.index_path(), e.to_string()))?;
        write_atomic(&self.index_path(), &bytes)
    }
}

/// Written under a temporary name and renamed: a reader sees the old file or the new one.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), LayoutError> {
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    std::fs::write(&tmp, bytes)
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|e| LayoutError::Io(path.to_path_buf(), e))
}
