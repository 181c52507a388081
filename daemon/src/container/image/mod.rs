//! The kubelet's ImageManager: makes sure a pod's image is on this node, unpacked.
//!
//! Owns `<agent root>/images`: one record per image reference (its manifest digest and
//! config) and one unpacked directory per layer, named by the layer's diff_id, shared by
//! every pod that uses it. It speaks the OCI distribution API through one shared
//! `oci_client::Client` per protocol (building one loads the CA store, which is slow), and
//! deduplicates concurrent pulls of one image. It never mounts or runs anything: the
//! RuntimeService stacks these layer directories into a rootfs.

pub mod unpack;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use serde::{Deserialize, Serialize};
use sha2::Digest;
use tokio::sync::OnceCell;

pub use unpack::UnpackError;

/// How long to wait for a registry to accept a connection, and for each read.
const REGISTRY_CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
const REGISTRY_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("invalid image reference {0:?}: {1}")]
    InvalidReference(String, String),
    #[error("{0}")]
    Registry(String),
    #[error("image {0:?} is not present on this node and imagePullPolicy is Never")]
    NeverPull(String),
    #[error("layer {digest}: downloaded blob has digest {actual}: refusing it (corrupted in transit or in the registry)")]
    DigestMismatch { digest: String, actual: String },
    #[error("layer {0}: {1}")]
    Unpack(String, UnpackError),
    #[error("image config: {0}")]
    Config(String),
    #[error("image store {0}: {1}")]
    Io(PathBuf, std::io::Error),
}

/// `imagePullPolicy`, with Kubernetes' meaning.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PullPolicy {
    Always,
    IfNotPresent,
    Never,
}

impl PullPolicy {
    pub fn parse(s: &str) -> PullPolicy {
        match s {
            "Always" => PullPolicy::Always,
            "Never" => PullPolicy::Never,
            _ => PullPolicy::IfNotPresent,
        }
    }
}

/// The parts of an OCI image config that decide how a container runs.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ImageConfig {
    #[serde(rename = "Entrypoint", default)]
    pub entrypoint: Option<Vec<String>>,
    #[serde(rename = "Cmd", default)]
    pub cmd: Option<Vec<String>>,
    #[serde(rename = "Env", default)]
    pub env: Option<Vec<String>>,
    #[serde(rename = "WorkingDir", default)]
    pub working_dir: Option<String>,
    #[serde(rename = "User", default)]
    pub user: Option<String>,
}

#[derive(Debug, Deserialize)]
struct ConfigFile {
    #[serde(default)]
    config: Option<ImageConfig>,
    rootfs: RootFs,
}

#[derive(Debug, Deserialize)]
struct RootFs {
    diff_ids: Vec<String>,
}

/// An image ready to run: its identity, its config, and its layer directories.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Image {
    pub reference: String,
    /// The manifest digest (what Kubernetes shows as imageID).
    pub digest: String,
    pub config: ImageConfig,
    /// diff_ids, bottom layer first.
    pub diff_ids: Vec<String>,
    pub size_bytes: u64,
    /// The layers as the registry holds them (compressed blobs), bottom first.
    #[serde(default)]
    pub layers: Vec<LayerBlob>,
    /// The digest of the image config blob.
    #[serde(default)]
    pub config_digest: String,
}

/// One layer blob of a manifest: what to ask a registry for, or find in a blob store.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerBlob {
    pub digest: String,
    pub media_type: String,
    pub size: u64,
}

/// How `ensure` got the image, for the pod's events.
#[derive(Debug)]
pub enum Outcome {
    AlreadyPresent,
    Pulled { seconds: f64, bytes: u64 },
}

pub struct ImageManager {
    root: PathBuf,
    insecure_registries: Vec<String>,
    /// The most a layer may inflate to once decompressed.
    max_layer_bytes: u64,
    https: OnceCell<Client>,
    http: OnceCell<Client>,
    /// One lock per image reference, so two pods asking for one image pull it once.
    pulls: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Where to keep the downloaded blobs (`sha256/HEX`), for the image builder, which
    /// pushes its base image's layers again. An agent keeps only the unpacked layers.
    blob_store: Option<PathBuf>,
}

/// One image's pull lock, held while the image is checked or pulled. The lock's entry
/// leaves the map with its last holder, so the map holds only images being pulled now,
/// not every image this agent ever pulled.
struct PullLock<'a> {
    pulls: &'a Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    key: String,
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl<'a> PullLock<'a> {
    async fn take(
        pulls: &'a Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
        key: String,
    ) -> PullLock<'a> {
        let lock = {
            let mut map = pulls.lock().unwrap_or_else(|e| e.into_inner());
            map.entry(key.clone()).or_default().clone()
        };
        let guard = lock.lock_owned().await;
        PullLock {
            pulls,
            key,
            guard: Some(guard),
        }
    }
}

impl Drop for PullLock<'_> {
    fn drop(&mut self) {
        self.guard.take();
        let mut map = self.pulls.lock().unwrap_or_else(|e| e.into_inner());
        // Only the map's own reference left: no one holds or waits for it (taking one
        // needs the map's lock, which we hold).
        if map
            .get(&self.key)
            .is_some_and(|l| Arc::strong_count(l) == 1)
        {
            map.remove(&self.key);
        }
    }
}

impl ImageManager {
    pub fn new(
        root: PathBuf,
        insecure_registries: Vec<String>,
        max_layer_bytes: u64,
    ) -> Result<Self, ImageError> {
        for dir in ["refs", "layers", "tmp"] {
            let d = root.join(dir);
            std::fs::create_dir_all(&d).map_err(|e| ImageError::Io(d, e))?;
        }
        // Half-finished downloads of a previous run are of no use.
        let tmp = root.join("tmp");
        if let Ok(entries) = std::fs::read_dir(&tmp) {
            for entry in entries.flatten() {
                let _ = std::fs::remove_dir_all(entry.path())
                    .or_else(|_| std::fs::remove_file(entry.path()));
            }
        }
        Ok(ImageManager {
            root,
            insecure_registries,
            max_layer_bytes,
            https: OnceCell::new(),
            http: OnceCell::new(),
            pulls: Mutex::new(HashMap::new()),
            blob_store: None,
        })
    }

    /// Keeps every blob pulled from now on in `dir/sha256/HEX` (an OCI layout's `blobs/`).
    pub fn keep_blobs_in(mut self, dir: PathBuf) -> Result<Self, ImageError> {
        let sha = dir.join("sha256");
        std::fs::create_dir_all(&sha).map_err(|e| ImageError::Io(sha, e))?;
        self.blob_store = Some(dir);
        Ok(self)
    }

    /// Where the blob store keeps a blob, when there is one.
    pub fn blob_path(&self, digest: &str) -> Option<PathBuf> {
        let (algorithm, hex) = digest.split_once(':')?;
        Some(self.blob_store.as_ref()?.join(algorithm).join(hex))
    }

    /// Adds a layer made on this machine (the image builder's): `dir` holds its files in
    /// overlayfs' form (whiteouts as 0/0 devices, opaque directories marked), as an
    /// unpacked layer does, and is moved into place.
    pub fn adopt_layer(&self, dir: &Path, diff_id: &str) -> Result<PathBuf, ImageError> {
        let target = self.layer_dir(diff_id);
        if !target.exists() {
            if let Err(e) = std::fs::rename(dir, &target) {
                if !target.exists() {
                    return Err(ImageError::Io(target, e));
                }
            }
        }
        Ok(target)
    }

    /// Forgets what this store knows of an image reference (its layers stay).
    pub fn forget(&self, image: &str) {
        if let Ok(reference) = oci_reference(image) {
            let _ = std::fs::remove_file(self.record_path(&reference));
        }
    }

    /// The directory holding a layer's unpacked files.
    pub fn layer_dir(&self, diff_id: &str) -> PathBuf {
        self.root.join("layers").join(diff_id.replace(':', "-"))
    }

    /// Returns the image, pulling it first if the policy says so. `on_pull` runs just
    /// before a pull starts (the agent records the `Pulling` event there).
    pub async fn ensure(
        &self,
        image: &str,
        policy: PullPolicy,
        on_pull: impl FnOnce(),
    ) -> Result<(Image, Outcome), ImageError> {
        let reference = oci_reference(image)
            .map_err(|e| ImageError::InvalidReference(image.to_string(), e.to_string()))?;
        let _pulling = PullLock::take(&self.pulls, reference.whole()).await;
        let local = self.read_record(&reference);
        tracing::debug!(
            image,
            ?policy,
            present = local.is_some(),
            "checking the image"
        );
        match (policy, local) {
            (PullPolicy::Never, Some(img)) | (PullPolicy::IfNotPresent, Some(img)) => {
                return Ok((img, Outcome::AlreadyPresent))
            }
            (PullPolicy::Never, None) => return Err(ImageError::NeverPull(image.to_string())),
            (PullPolicy::Always, Some(img)) => {
                // Always means "ask the registry", not "download again": same digest, same
                // image. It is still a pull, as the kubelet reports it (Pulling, Pulled).
                on_pull();
                let started = Instant::now();
                let digest = self
                    .client(&reference)
                    .await
                    .fetch_manifest_digest(&reference, &RegistryAuth::Anonymous)
                    .await
                    .map_err(|e| registry_error(&reference, e))?;
                if digest == img.digest {
                    let seconds = started.elapsed().as_secs_f64();
                    return Ok((img, Outcome::Pulled { seconds, bytes: 0 }));
                }
                return self.pull_timed(&reference, started).await;
            }
            _ => {}
        }
        on_pull();
        self.pull_timed(&reference, Instant::now()).await
    }

    async fn pull_timed(
        &self,
        reference: &Reference,
        started: Instant,
    ) -> Result<(Image, Outcome), ImageError> {
        let (img, bytes) = self.pull(reference).await?;
        Ok((
            img,
            Outcome::Pulled {
                seconds: started.elapsed().as_secs_f64(),
                bytes,
            },
        ))
    }

    #[tracing::instrument(skip_all, fields(image = %reference))]
    async fn pull(&self, reference: &Reference) -> Result<(Image, u64), ImageError> {
        let client = self.client(reference).await;
        let auth = RegistryAuth::Anonymous;
        let (manifest, digest, config) = client
            .pull_manifest_and_config(reference, &auth)
            .await
            .map_err(|e| registry_error(reference, e))?;
        let config_file: ConfigFile =
            serde_json::from_str(&config).map_err(|e| ImageError::Config(e.to_string()))?;
        let diff_ids = config_file.rootfs.diff_ids;
        if diff_ids.len() != manifest.layers.len() {
            return Err(ImageError::Config(format!(
                "manifest has {} layers but the config lists {} diff_ids",
                manifest.layers.len(),
                diff_ids.len()
            )));
        }
        let mut downloaded: u64 = 0;
        if let Some(path) = self.blob_path(&manifest.config.digest) {
            std::fs::write(&path, &config).map_err(|e| ImageError::Io(path, e))?;
        }
        for (layer, diff_id) in manifest.layers.iter().zip(&diff_ids) {
            let dir = self.layer_dir(diff_id);
            let blob_kept = self.blob_path(&layer.digest).is_none_or(|p| p.exists());
            if dir.exists() && blob_kept {
                tracing::debug!(%diff_id, "layer already unpacked");
                continue;
            }
            let tmp = tempfile::Builder::new()
                .prefix("blob-")
                .tempfile_in(self.root.join("tmp"))
                .map_err(|e| ImageError::Io(self.root.join("tmp"), e))?;
            let mut file = tokio::fs::File::from_std(
                tmp.reopen()
                    .map_err(|e| ImageError::Io(tmp.path().into(), e))?,
            );
            client
                .pull_blob(reference, layer, &mut file)
                .await
                .map_err(|e| registry_error(reference, e))?;
            // Sizes come from the registry's manifest: summed without overflow.
            downloaded = downloaded.saturating_add(layer.size.max(0) as u64);
            let unpack_to = self
                .root
                .join("tmp")
                .join(format!("layer-{}", uuid::Uuid::new_v4().simple()));
            let (blob_path, media_type, digest_want, diff_id_want) = (
                tmp.path().to_path_buf(),
                layer.media_type.clone(),
                layer.digest.clone(),
                diff_id.clone(),
            );
            let target = unpack_to.clone();
            let max_bytes = self.max_layer_bytes;
            tokio::task::spawn_blocking(move || -> Result<(), ImageError> {
                let actual =
                    sha256_file(&blob_path).map_err(|e| ImageError::Io(blob_path.clone(), e))?;
                if actual != digest_want {
                    return Err(ImageError::DigestMismatch {
                        digest: digest_want,
                        actual,
                    });
                }
                unpack::unpack_layer(&blob_path, &media_type, &diff_id_want, &target, max_bytes)
                    .map_err(|e| ImageError::Unpack(digest_want.clone(), e))
            })
            .await
            .map_err(|e| ImageError::Io(unpack_to.clone(), std::io::Error::other(e)))?
            .inspect_err(|_| {
                let _ = std::fs::remove_dir_all(&unpack_to);
            })?;
            if let Some(keep) = self.blob_path(&layer.digest) {
                tmp.persist(&keep)
                    .map_err(|e| ImageError::Io(keep.clone(), e.error))?;
            }
            // A rename is atomic: other readers see the whole layer or none of it.
            if let Err(e) = std::fs::rename(&unpack_to, &dir) {
                let _ = std::fs::remove_dir_all(&unpack_to);
                if !dir.exists() {
                    return Err(ImageError::Io(dir, e));
                }
            }
            tracing::debug!(%diff_id, "layer unpacked");
        }
        let size_bytes = manifest
            .layers
            .iter()
            .fold(0u64, |sum, l| sum.saturating_add(l.size.max(0) as u64));
        let img = Image {
            reference: reference.whole(),
            digest,
            config: config_file.config.unwrap_or_default(),
            diff_ids,
            size_bytes,
            layers: manifest
                .layers
                .iter()
                .map(|l| LayerBlob {
                    digest: l.digest.clone(),
                    media_type: l.media_type.clone(),
                    size: l.size.max(0) as u64,
                })
                .collect(),
            config_digest: manifest.config.digest.clone(),
        };
        self.write_record(reference, &img)?;
        Ok((img, downloaded))
    }

    fn record_path(&self, reference: &Reference) -> PathBuf {
        let name = hex::encode(sha2::Sha256::digest(reference.whole().as_bytes()));
        self.root.join("refs").join(format!("{name}.json"))
    }

    fn read_record(&self, reference: &Reference) -> Option<Image> {
        let bytes = std::fs::read(self.record_path(reference)).ok()?;
        let img: Image = serde_json::from_slice(&bytes).ok()?;
        // A record whose layers were removed by hand is no record.
        img.diff_ids
            .iter()
            .all(|d| self.layer_dir(d).exists())
            .then_some(img)
    }

    fn write_record(&self, reference: &Reference, img: &Image) -> Result<(), ImageError> {
        let path = self.record_path(reference);
        let tmp = path.with_extension("tmp");
        let bytes = serde_json::to_vec(img).map_err(|e| ImageError::Config(e.to_string()))?;
        std::fs::write(&tmp, bytes).map_err(|e| ImageError::Io(tmp.clone(), e))?;
        std::fs::rename(&tmp, &path).map_err(|e| ImageError::Io(path, e))
    }

    /// The shared client for this registry: plain HTTP for loopback registries (as Docker
    /// does for 127.0.0.0/8) and those named with --insecure-registry, HTTPS for the rest.
    async fn client(&self, reference: &Reference) -> &Client {
        let host = reference.resolve_registry();
        let plain = kubelab_proto::is_loopback_registry(host)
            || self.insecure_registries.iter().any(|r| r == host);
        self.client_for(plain).await
    }

    async fn client_for(&self, plain: bool) -> &Client {
        let (cell, protocol) = if plain {
            (&self.http, ClientProtocol::Http)
        } else {
            (&self.https, ClientProtocol::Https)
        };
        cell.get_or_init(|| async move {
            let config = move || ClientConfig {
                protocol: protocol.clone(),
                // A registry that stops answering must not hold a pod worker forever.
                connect_timeout: Some(REGISTRY_CONNECT_TIMEOUT),
                read_timeout: Some(REGISTRY_READ_TIMEOUT),
                ..Default::default()
            };
            let fallback = config.clone();
            // Building a client parses the system's CA store (~100 ms of CPU): keep it off
            // the async workers.
            // The registry client takes the process's TLS provider (ring).
            kubelab_proto::credential::init_tls();
            match tokio::task::spawn_blocking(move || Client::new(config())).await {
                Ok(client) => client,
                Err(_) => Client::new(fallback()),
            }
        })
        .await
    }

    /// Builds both clients now, at agent start, so that the first pod does not wait for it.
    pub async fn warm_up(&self) {
        self.client_for(true).await;
        self.client_for(false).await;
        tracing::debug!("registry clients ready");
    }
}

/// oci-client's form of a reference, read with our parser (`kubelab_proto::image_ref`:
/// oci-client's own regex would hold ~12 MB in every agent).
pub fn oci_reference(image: &str) -> Result<Reference, kubelab_proto::image_ref::RefError> {
    let r = kubelab_proto::image_ref::parse(image)?;
    Ok(match (r.tag, r.digest) {
        (Some(tag), Some(digest)) => {
            Reference::with_tag_and_digest(r.registry, r.repository, tag, digest)
        }
        (None, Some(digest)) => Reference::with_digest(r.registry, r.repository, digest),
        (tag, None) => Reference::with_tag(r.registry, r.repository, tag.unwrap_or_default()),
    })
}

fn registry_error(
    reference: &Reference,
    e: oci_client::errors::OciDistributionError,
) -> ImageError {
    let chain = kubelab_proto::error_chain(&e);
    // The fix, for the two failures a lab meets most.
    let hint = if chain.contains("manifest unknown") || chain.contains("name unknown") {
        " (the registry has no such image or tag: push it first, or check the name)"
    } else if chain.contains("Connection refused") {
        " (no registry answers there: start it, or check the host and port)"
    } else {
        ""
    };
    ImageError::Registry(format!("{}: {chain}{hint}", reference.whole()))
}

pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut hasher = sha2::Sha256::new();
    let mut file = std::fs::File::open(path)?;
    std::io::copy(&mut file, &mut hasher)?;
    Ok(format!("sha256:{}", hex::encode(hasher.finalize())))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pull locks serialise pulls of one image and leave no entry behind: the map does
    /// not grow with every image ever pulled.
    #[tokio::test]
    async fn pull_locks_are_pruned_when_released() {
        let pulls = Mutex::new(HashMap::new());
        let first = PullLock::take(&pulls, "a".into()).await;
        let waiting = PullLock::take(&pulls, "a".into());
        tokio::pin!(waiting);
        assert!(
            futures::poll!(&mut waiting).is_pending(),
            "a second pull of the same image waits"
        );
        drop(first);
        let second = waiting.await;
        assert_eq!(pulls.lock().map(|m| m.len()).unwrap_or(0), 1);
        drop(second);
        for i in 0..100 {
            drop(PullLock::take(&pulls, format!("image-{i}")).await);
        }
        assert_eq!(pulls.lock().map(|m| m.len()).unwrap_or(1), 0);
    }
}
