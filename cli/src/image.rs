//! Pushing images to a registry: `kubelab image push` and `kubelab image build --push`.
//!
//! `image push` packs directories as OCI image layers: each directory becomes one
//! gzip-compressed tar layer (the first is the bottom), with owners set to root and times
//! fixed so that the same tree gives the same digest; the image config carries
//! Entrypoint, Cmd, Env and the layers' diff_ids. `push_built` pushes an image that
//! `kubelabd build` left in its OCI layout, blob by blob, skipping the blobs the registry
//! has, then the manifest byte for byte (so the registry's digest is the build's). It
//! speaks the OCI distribution API through oci-client; plain HTTP for loopback and
//! --insecure-registry.

use std::io::Write;
use std::path::{Path, PathBuf};

use oci_client::client::{ClientConfig, ClientProtocol, Config, ImageLayer};
use oci_client::manifest::{self, OciImageManifest};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use sha2::Digest;

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("invalid image reference {0:?}: {1} (example: 127.0.0.1:5000/busybox:1)")]
    Reference(String, String),
    #[error("{0} is not a directory: give the root filesystem to pack")]
    NotADirectory(PathBuf),
    #[error("packing {0}: {1}")]
    Pack(PathBuf, std::io::Error),
    #[error("pushing to {0}: {1}")]
    Push(String, String),
    #[error("asking the registry about {0}: {1}")]
    Inspect(String, String),
}

/// The manifest and media types to push: OCI's, or Docker's schema 2 (what older tools make).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ImageFormat {
    Oci,
    Docker,
}

/// `kubelab image push DIR REF [--layer DIR]... [--entrypoint W]... [--cmd W]... ...`
#[derive(Debug, clap::Args)]
pub struct PushArgs {
    /// The root filesystem to pack (the bottom layer).
    pub dir: PathBuf,
    /// Where to push it, e.g. 127.0.0.1:5000/busybox:1.
    pub reference: String,
    /// More directories, each one layer on top (in order).
    #[arg(long = "layer")]
    pub layers: Vec<PathBuf>,
    /// The image's Entrypoint (repeat for each word).
    #[arg(long, allow_hyphen_values = true)]
    pub entrypoint: Vec<String>,
    /// The image's Cmd (repeat for each word).
    #[arg(long, allow_hyphen_values = true)]
    pub cmd: Vec<String>,
    /// NAME=VALUE for the image's environment.
    #[arg(long)]
    pub env: Vec<String>,
    /// The image's working directory.
    #[arg(long)]
    pub workdir: Option<String>,
    /// A registry (HOST:PORT) to speak plain HTTP to. Loopback registries always are.
    #[arg(long = "insecure-registry")]
    pub insecure_registries: Vec<String>,
    /// Manifest format: oci, or docker (Docker's schema 2).
    #[arg(long, value_enum, default_value = "oci")]
    pub format: ImageFormat,
}

impl PushArgs {
    /// The layer directories, bottom first.
    fn layer_dirs(&self) -> impl Iterator<Item = &PathBuf> {
        std::iter::once(&self.dir).chain(&self.layers)
    }
}

/// Packs one directory as an uncompressed tar with deterministic headers.
fn pack(dir: &Path) -> Result<Vec<u8>, ImageError> {
    let err = |e| ImageError::Pack(dir.to_path_buf(), e);
    if !dir.is_dir() {
        return Err(ImageError::NotADirectory(dir.to_path_buf()));
    }
    let mut builder = tar::Builder::new(Vec::new());
    builder.follow_symlinks(false);
    let mut stack = vec![PathBuf::new()];
    while let Some(relative) = stack.pop() {
        let mut entries: Vec<_> = std::fs::read_dir(dir.join(&relative))
            .map_err(err)?
            .collect::<Result<_, _>>()
            .map_err(err)?;
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let rel = relative.join(entry.file_name());
            let meta = entry.path().symlink_metadata().map_err(err)?;
            let mut header = tar::Header::new_gnu();
            header.set_metadata_in_mode(&meta, tar::HeaderMode::Deterministic);
            // Set explicitly: the files belong to root inside the image, whoever packed them.
            header.set_uid(0);
            header.set_gid(0);
            header.set_mtime(0);
            if meta.file_type().is_symlink() {
                let target = std::fs::read_link(entry.path()).map_err(err)?;
                header.set_size(0);
                builder
                    .append_link(&mut header, &rel, &target)
                    .map_err(err)?;
            } else if meta.is_dir() {
                header.set_size(0);
                builder
                    .append_data(&mut header, &rel, std::io::empty())
                    .map_err(err)?;
                stack.push(rel);
            } else if meta.is_file() {
                let file = std::fs::File::open(entry.path()).map_err(err)?;
                builder.append_data(&mut header, &rel, file).map_err(err)?;
            }
        }
    }
    builder.into_inner().map_err(err)
}

fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(data)))
}

pub async fn push(options: PushArgs) -> Result<String, ImageError> {
    let reference = parse_reference(&options.reference)?;
    let mut layers = Vec::new();
    let mut diff_ids = Vec::new();
    for dir in options.layer_dirs() {
        let tar = pack(dir)?;
        diff_ids.push(sha256(&tar));
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&tar)
            .map_err(|e| ImageError::Pack(dir.clone(), e))?;
        let data = gz.finish().map_err(|e| ImageError::Pack(dir.clone(), e))?;
        let media_type = match options.format {
            ImageFormat::Oci => manifest::IMAGE_LAYER_GZIP_MEDIA_TYPE,
            ImageFormat::Docker => manifest::IMAGE_DOCKER_LAYER_GZIP_MEDIA_TYPE,
        };
        layers.push(ImageLayer::new(data, media_type.to_string(), None));
    }
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    let mut container_config = serde_json::Map::new();
    if !options.entrypoint.is_empty() {
        container_config.insert("Entrypoint".into(), options.entrypoint.clone().into());
    }
    if !options.cmd.is_empty() {
        container_config.insert("Cmd".into(), options.cmd.clone().into());
    }
    let mut env = vec![kubelab_proto::default_path_env()];
    env.extend(options.env.iter().cloned());
    container_config.insert("Env".into(), env.into());
    if let Some(w) = &options.workdir {
        container_config.insert("WorkingDir".into(), w.clone().into());
    }
    let config = serde_json::json!({
        "architecture": arch,
        "os": "linux",
        "config": container_config,
        "rootfs": { "type": "layers", "diff_ids": diff_ids },
        "history": options.layer_dirs().map(|d| serde_json::json!({"created_by": format!("kubelab image push {}", d.display())})).collect::<Vec<_>>(),
    });
    let config_media_type = match options.format {
        ImageFormat::Oci => manifest::IMAGE_CONFIG_MEDIA_TYPE,
        ImageFormat::Docker => manifest::IMAGE_DOCKER_CONFIG_MEDIA_TYPE,
    };
    let config = Config::new(
        serde_json::to_vec(&config)
            .map_err(|e| ImageError::Push(reference.whole(), e.to_string()))?,
        config_media_type.to_string(),
        None,
    );
    let mut manifest = OciImageManifest::build(&layers, &config, None);
    manifest.media_type = Some(
        match options.format {
            ImageFormat::Oci => manifest::OCI_IMAGE_MEDIA_TYPE,
            ImageFormat::Docker => manifest::IMAGE_MANIFEST_MEDIA_TYPE,
        }
        .to_string(),
    );
    let client = client_for(&reference, &options.insecure_registries);
    let response = client
        .push(
            &reference,
            &layers,
            config,
            &RegistryAuth::Anonymous,
            Some(manifest),
        )
        .await
        .map_err(|e| ImageError::Push(reference.whole(), kubelab_proto::error_chain(&e)))?;
    Ok(response.manifest_url)
}

/// oci-client's form of a reference, read with kubelab's parser (oci-client's own is a
/// regex that costs ~40 ms to compile, once per CLI run).
fn parse_reference(name: &str) -> Result<Reference, ImageError> {
    let r = kubelab_proto::image_ref::parse(name)
        .map_err(|e| ImageError::Reference(name.to_string(), e.to_string()))?;
    Ok(match (r.tag, r.digest) {
        (Some(tag), Some(digest)) => {
            Reference::with_tag_and_digest(r.registry, r.repository, tag, digest)
        }
        (None, Some(digest)) => Reference::with_digest(r.registry, r.repository, digest),
        (tag, None) => Reference::with_tag(r.registry, r.repository, tag.unwrap_or_default()),
    })
}

/// A client for the reference's registry: plain HTTP for loopback registries (as Docker
/// does for 127.0.0.0/8) and those named with --insecure-registry, HTTPS for the rest.
fn client_for(reference: &Reference, insecure_registries: &[String]) -> Client {
    let host = reference.resolve_registry().to_string();
    let plain = kubelab_proto::is_loopback_registry(&host) || insecure_registries.contains(&host);
    // The registry client takes the process's TLS provider (ring).
    kubelab_proto::credential::init_tls();
    Client::new(ClientConfig {
        protocol: if plain {
            ClientProtocol::Http
        } else {
            ClientProtocol::Https
        },
        ..Default::default()
    })
}

/// Pushes the image tagged `name` in the OCI layout at `layout` (what `kubelabd build`
/// writes) to the registry `name` names; returns the manifest's digest.
pub async fn push_built(
    layout: &Path,
    name: &str,
    insecure_registries: &[String],
) -> Result<String, ImageError> {
    let reference = parse_reference(name)?;
    let failed = |message: String| ImageError::Push(name.to_string(), message);
    let read = |path: PathBuf| {
        std::fs::read(&path).map_err(|e| failed(format!("reading {}: {e}", path.display())))
    };
    let blob_path = |digest: &str| {
        let (algorithm, hex) = digest.split_once(':').unwrap_or(("sha256", digest));
        layout.join("blobs").join(algorithm).join(hex)
    };
    let index: serde_json::Value = serde_json::from_slice(&read(layout.join("index.json"))?)
        .map_err(|e| failed(format!("{}: {e}", layout.join("index.json").display())))?;
    let entry = index["manifests"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == name)
        .ok_or_else(|| {
            failed(format!(
                "no image {name} in {} (build it first)",
                layout.display()
            ))
        })?;
    let digest = entry["digest"].as_str().unwrap_or_default().to_string();
    let manifest_bytes = read(blob_path(&digest))?;
    let manifest: serde_json::Value = serde_json::from_slice(&manifest_bytes)
        .map_err(|e| failed(format!("manifest {digest}: {e}")))?;
    let blobs: Vec<String> = manifest["layers"]
        .as_array()
        .into_iter()
        .flatten()
        .chain(std::iter::once(&manifest["config"]))
        .filter_map(|d| d["digest"].as_str().map(String::from))
        .collect();
    let client = client_for(&reference, insecure_registries);
    let auth = RegistryAuth::Anonymous;
    client
        .store_auth_if_needed(reference.resolve_registry(), &auth)
        .await;
    let registry_error =
        |e: oci_client::errors::OciDistributionError| failed(kubelab_proto::error_chain(&e));
    for blob in &blobs {
        let hex = blob.split_once(':').map_or(blob.as_str(), |(_, h)| h);
        let short = hex.get(..12).unwrap_or(hex);
        if client
            .blob_exists(&reference, blob)
            .await
            .map_err(registry_error)?
        {
            println!("Copying blob {short} skipped: already exists");
            continue;
        }
        let data = read(blob_path(blob))?;
        client
            .push_blob(&reference, data, blob)
            .await
            .map_err(registry_error)?;
        println!("Copying blob {short} done");
    }
    let content_type = manifest["mediaType"]
        .as_str()
        .unwrap_or(manifest::OCI_IMAGE_MEDIA_TYPE)
        .parse::<http::HeaderValue>()
        .map_err(|e| failed(e.to_string()))?;
    client
        .push_manifest_raw(&reference, manifest_bytes, content_type)
        .await
        .map_err(registry_error)?;
    println!("Writing manifest {digest}");
    Ok(digest)
}

/// What a registry says of an image for `kubelab trace`: its config's labels, its layer
/// count and compressed size. `digest` pins the very image a pod ran, when known.
pub struct ImageFacts {
    pub labels: std::collections::BTreeMap<String, String>,
    pub layers: usize,
    pub size: u64,
}

pub async fn facts(image: &str, digest: Option<&str>) -> Result<ImageFacts, ImageError> {
    let mut reference = parse_reference(image)?;
    if let Some(d) = digest.filter(|d| d.starts_with("sha256:")) {
        reference = reference.clone_with_digest(d.to_string());
    }
    let client = client_for(&reference, &[]);
    let (manifest, _, config) = client
        .pull_manifest_and_config(&reference, &RegistryAuth::Anonymous)
        .await
        .map_err(|e| ImageError::Inspect(image.to_string(), kubelab_proto::error_chain(&e)))?;
    let config: serde_json::Value = serde_json::from_str(&config).unwrap_or_default();
    let labels = config["config"]["Labels"]
        .as_object()
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default();
    Ok(ImageFacts {
        labels,
        layers: manifest.layers.len(),
        size: manifest.layers.iter().map(|l| l.size.max(0) as u64).sum(),
    })
}
