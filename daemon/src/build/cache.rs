//! The step cache under `--root/cache`: a step's key is the hash of everything before it
//! and the step itself (its text, the files it copies), and the cache maps a key to the
//! layer the step made (or to none, for a step that changed no file). Owns those files;
//! the layers themselves live in the ImageManager and the layout.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use sha2::Digest;

use super::{BuildError, Builder, Layer};

/// What the cache remembers of a file-changing step: the layer it made, if any.
#[derive(Serialize, Deserialize)]
pub(super) struct CacheEntry {
    pub(super) layer: Option<Layer>,
}

impl Builder {
    /// What the cache holds for the step `key`, if it may be used: not with --no-cache,
    /// nor when the layer it names is gone.
    pub(super) fn cached_step(&self, key: &str) -> Option<CacheEntry> {
        if self.no_cache {
            return None;
        }
        std::fs::read(self.cache_file(key))
            .ok()
            .and_then(|b| serde_json::from_slice::<CacheEntry>(&b).ok())
            .filter(|e| self.layer_is_here(e.layer.as_ref()))
    }

    /// Records what the step `key` made (written whole, or not at all).
    pub(super) fn remember_step(&self, key: &str, layer: &Option<Layer>) -> Result<(), BuildError> {
        let cache_file = self.cache_file(key);
        let entry = serde_json::to_vec(&CacheEntry {
            layer: layer.clone(),
        })
        .unwrap_or_default();
        let tmp = cache_file.with_extension("tmp");
        std::fs::write(&tmp, entry)
            .and_then(|()| std::fs::rename(&tmp, &cache_file))
            .map_err(|e| BuildError::Io(cache_file.clone(), e))
    }

    fn cache_file(&self, key: &str) -> PathBuf {
        self.root.join("cache").join(format!("{key}.json"))
    }

    fn layer_is_here(&self, layer: Option<&Layer>) -> bool {
        layer.is_none_or(|l| {
            self.images.layer_dir(&l.diff_id).exists()
                && self.layout.blob_path(&l.blob.digest).exists()
        })
    }
}

/// The SHA-256 of `bytes`, in hex.
pub(super) fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(bytes))
}

/// The next cache key: everything before, and this step.
pub(super) fn chain(previous: &str, step: &str) -> String {
    sha256_hex(format!("{previous}\n{step}").as_bytes())
}
