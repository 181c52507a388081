//! FROM: the image a build starts from, pulled into the ImageManager (which keeps its
//! blobs in the build's layout, for pushing later), or nothing for `scratch`. Reads the
//! base image's config; builds nothing.

use std::time::Instant;

use serde_json::{json, Map, Value};

use super::cache::sha256_hex;
use super::output::{human_bytes, say, short};
use super::{BuildError, Builder, Image, Layer, OCI_LAYER_GZIP};
use crate::container::image::{LayerBlob, PullPolicy};

impl Builder {
    /// FROM: the base image's layers, config and history; or nothing for `scratch`.
    pub(super) async fn from(&mut self, name: &str) -> Result<Image, BuildError> {
        let arch = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            other => other,
        };
        if name == "scratch" {
            say("--> an empty image (scratch)");
            return Ok(Image {
                layers: Vec::new(),
                config: Map::from_iter([(
                    "Env".to_string(),
                    json!([kubelab_proto::default_path_env()]),
                )]),
                history: Vec::new(),
                architecture: arch.to_string(),
                chain: sha256_hex(b"FROM scratch"),
                cmd_from_base: false,
            });
        }
        let policy = if self.pull {
            PullPolicy::Always
        } else {
            PullPolicy::IfNotPresent
        };
        let t = Instant::now();
        let mut pulled = false;
        let mut interrupted = self.interrupted.clone();
        let (mut base, _) = tokio::select! {
            pulled = self.images.ensure(name, policy, || pulled = true) => pulled?,
            _ = interrupted.wait_for(|stop| *stop) => return Err(BuildError::Interrupted),
        };
        // The blobs are needed to push the image later; a store emptied by hand lacks them.
        if !self.has_blobs(&base) {
            self.images.forget(name);
            pulled = true;
            base = self
                .images
                .ensure(name, PullPolicy::IfNotPresent, || {})
                .await?
                .0;
        }
        let config_path = self.layout.blob_path(&base.config_digest);
        let config: Value = std::fs::read(&config_path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or_else(|| {
                BuildError::Message(format!(
                    "the config of {name} is missing from {}",
                    config_path.display()
                ))
            })?;
        say(&format!(
            "--> {} {} ({}, {}){}",
            if pulled { "pulled" } else { "using" },
            short(&base.digest),
            super::output::count(base.layers.len(), "layer"),
            human_bytes(base.size_bytes),
            if pulled {
                format!(" in {:.2} s", t.elapsed().as_secs_f64())
            } else {
                String::new()
            }
        ));
        let layers = base
            .diff_ids
            .iter()
            .zip(&base.layers)
            .map(|(diff_id, blob)| Layer {
                diff_id: diff_id.clone(),
                blob: LayerBlob {
                    media_type: oci_media_type(&blob.media_type),
                    ..blob.clone()
                },
            })
            .collect();
        Ok(Image {
            layers,
            config: config["config"].as_object().cloned().unwrap_or_default(),
            history: config["history"].as_array().cloned().unwrap_or_default(),
            architecture: config["architecture"].as_str().unwrap_or(arch).to_string(),
            chain: sha256_hex(format!("FROM {}", base.digest).as_bytes()),
            cmd_from_base: true,
        })
    }

    /// Whether the layout holds every blob of a pulled image (its layers and config).
    fn has_blobs(&self, image: &crate::container::image::Image) -> bool {
        let recorded = !image.layers.is_empty() || image.diff_ids.is_empty();
        recorded
            && image
                .layers
                .iter()
                .map(|l| &l.digest)
                .chain(std::iter::once(&image.config_digest))
                .all(|d| self.layout.blob_path(d).exists())
    }
}

/// Docker's layer media types name the same bytes as OCI's; an OCI manifest uses OCI's.
fn oci_media_type(media_type: &str) -> String {
    match media_type {
        "application/vnd.docker.image.rootfs.diff.tar.gzip" => OCI_LAYER_GZIP.into(),
        "application/vnd.docker.image.rootfs.diff.tar" => {
            "application/vnd.oci.image.layer.v1.tar".into()
        }
        other => other.into(),
    }
}
