//! The end of a build: the image's OCI config (with the build-time labels and `--label`s)
//! and manifest written as blobs into the layout, and the tag. A build whose steps all
//! came from the cache keeps the image (and digest) of the build that made them.

use std::time::Instant;

use serde_json::{json, Value};

use super::cache::sha256_hex;
use super::config::{now_rfc3339, object};
use super::output::{human_bytes, say};
use super::{BuildArgs, BuildError, Builder, Image, BUILD_SECONDS_LABEL, BUILT_LABEL};

const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";

impl Builder {
    /// Writes the config and the manifest, and tags the image in the layout.
    pub(super) fn commit(
        &mut self,
        mut image: Image,
        args: &BuildArgs,
        started: Instant,
    ) -> Result<(), BuildError> {
        say(&format!("COMMIT {}", args.tag));
        let labels = object(&mut image.config, "Labels");
        for pair in &args.labels {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            labels.insert(k.to_string(), json!(v));
        }
        let diff_ids: Vec<&String> = image.layers.iter().map(|l| &l.diff_id).collect();
        // What the image is, leaving out when it was built. A build whose steps all come
        // from the cache is the same image as the build that made them, as in Docker: it
        // keeps that build's digest (and its build time), instead of a new one that
        // differs only in the time.
        let untimed_history: Vec<Value> = image
            .history
            .iter()
            .map(|h| {
                let mut h = h.clone();
                if let Some(h) = h.as_object_mut() {
                    h.remove("created");
                }
                h
            })
            .collect();
        let identity = sha256_hex(
            &serde_json::to_vec(&json!([
                image.architecture,
                image.config,
                diff_ids,
                untimed_history
            ]))
            .unwrap_or_default(),
        );
        let known = self
            .root
            .join("cache")
            .join(format!("image-{identity}.json"));
        let earlier = std::fs::read(&known)
            .ok()
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
            .filter(|m| {
                !self.no_cache
                    && m["digest"]
                        .as_str()
                        .is_some_and(|d| self.layout.blob_path(d).exists())
            });
        let manifest = match earlier {
            Some(manifest) => {
                say("--> every step as before: the same image as the build that made them");
                manifest
            }
            None => {
                let manifest = self.write_image(&mut image, started)?;
                let bytes = serde_json::to_vec(&manifest).unwrap_or_default();
                std::fs::write(&known, bytes).map_err(|e| BuildError::Io(known.clone(), e))?;
                manifest
            }
        };
        let digest = manifest["digest"].as_str().unwrap_or_default().to_string();
        self.layout.tag(&args.tag, manifest)?;
        let total: u64 = image.layers.iter().map(|l| l.blob.size).sum();
        say(&format!(
            "--> {} ({} made now, {} from the cache, {} from the base image), {}",
            super::output::count(image.layers.len(), "layer"),
            self.made,
            self.cached,
            image.layers.len().saturating_sub(self.made + self.cached),
            human_bytes(total)
        ));
        say(&format!(
            "--> built in {:.2} s: {digest}",
            started.elapsed().as_secs_f64()
        ));
        say(&format!("Successfully tagged {}", args.tag));
        Ok(())
    }

    /// Writes the image's config (with the build-time labels) and manifest as blobs;
    /// returns the manifest's descriptor.
    fn write_image(&self, image: &mut Image, started: Instant) -> Result<Value, BuildError> {
        let now = now_rfc3339();
        let labels = object(&mut image.config, "Labels");
        labels.insert(BUILT_LABEL.into(), json!(now));
        labels.insert(
            BUILD_SECONDS_LABEL.into(),
            json!(format!("{:.3}", started.elapsed().as_secs_f64())),
        );
        let config = json!({
            "created": now,
            "architecture": image.architecture,
            "os": "linux",
            "config": image.config,
            "rootfs": {
                "type": "layers",
                "diff_ids": image.layers.iter().map(|l| &l.diff_id).collect::<Vec<_>>(),
            },
            "history": image.history,
        });
        let config_bytes = serde_json::to_vec(&config).unwrap_or_default();
        let (config_digest, config_size) = self.layout.put(&config_bytes)?;
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": MANIFEST_MEDIA_TYPE,
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": config_digest,
                "size": config_size,
            },
            "layers": image.layers.iter().map(|l| json!({
                "mediaType": l.blob.media_type,
                "digest": l.blob.digest,
                "size": l.blob.size,
            })).collect::<Vec<_>>(),
        });
        let manifest_bytes = serde_json::to_vec(&manifest).unwrap_or_default();
        let (digest, size) = self.layout.put(&manifest_bytes)?;
        Ok(json!({"mediaType": MANIFEST_MEDIA_TYPE, "digest": digest, "size": size}))
    }
}
