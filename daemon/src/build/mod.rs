//! `kubelabd build` (what `kubelab image build` runs): step 1 of the workflow, building an
//! image from a Containerfile.
//!
//! Each instruction is one step. FROM starts from an image in a registry (pulled by the
//! agent's ImageManager, which here also keeps the blobs) or from nothing (`scratch`).
//! ENV, ARG, WORKDIR, USER, EXPOSE, LABEL, ENTRYPOINT and CMD change the image's config.
//! COPY, ADD and RUN change files: the step runs on an overlay of the layers so far
//! (`rootfs.rs`), COPY and ADD write into it (`copy.rs`), RUN runs a container on it
//! through the shim and libcontainer (`run.rs`), and what landed in the overlay's upper
//! directory becomes the step's layer (`layer.rs`). A step whose inputs were seen before
//! (everything above it, its own text, the files it copies) takes its layer from the
//! cache. The image ends in an OCI image layout (`layout.rs`) under `--root`, tagged with
//! `-t`; `kubelab image build --push` pushes it from there.
//!
//! The build's own files: `start.rs` (the arguments, the root, the steps in order),
//! `base.rs` (FROM), `instructions.rs` (each instruction after FROM), `file_step.rs`
//! (a step that changes files), `cache.rs` (the step cache), `commit.rs` (the config,
//! manifest and tag), `config.rs` (editing the image's config), `output.rs` (what the
//! build prints). The steps' tools: `containerfile.rs` (parsing), `ignore.rs`, `copy.rs`,
//! `rootfs.rs`, `run.rs`, `layer.rs`, `layout.rs`. This file holds the arguments, the
//! errors and the state the steps share (`Builder`, `Image`).
//!
//! Layout of `--root`: `images/` (ImageManager: unpacked layers, pulled references),
//! `oci/` (the OCI layout: every blob, and the tags), `cache/` (step key → layer),
//! `steps/` (scratch of the running steps), `runtime/` (libcontainer's state).
//! It never talks to the apiserver.

mod base;
mod cache;
mod commit;
mod config;
pub mod containerfile;
mod copy;
mod file_step;
mod ignore;
mod instructions;
mod layer;
mod layout;
mod output;
mod rootfs;
mod run;
mod start;

pub use start::{is_build_root, reset, run};

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::container::image::{ImageManager, LayerBlob};

const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// Labels every built image carries: when it was built and how long that took (read by
/// `kubelab trace`).
pub const BUILT_LABEL: &str = "io.kubelab.image.built";
pub const BUILD_SECONDS_LABEL: &str = "io.kubelab.image.build-seconds";

#[derive(Debug, clap::Args)]
pub struct BuildArgs {
    /// The build directory: the Containerfile (or Dockerfile) and the files it copies.
    pub context: PathBuf,
    /// The image's name, e.g. 127.0.0.1:5000/site:1.
    #[arg(short = 't', long = "tag")]
    pub tag: String,
    /// The Containerfile, if not DIR/Containerfile or DIR/Dockerfile.
    #[arg(short = 'f', long = "file")]
    pub file: Option<PathBuf>,
    /// NAME=VALUE for an ARG (NAME alone takes the value from the environment).
    #[arg(long = "build-arg")]
    pub build_args: Vec<String>,
    /// KEY=VALUE, a label added to the image.
    #[arg(long = "label")]
    pub labels: Vec<String>,
    /// Make every layer again, using no cached step.
    #[arg(long)]
    pub no_cache: bool,
    /// Ask the registry for the FROM image even if it is here already.
    #[arg(long)]
    pub pull: bool,
    /// Where images, layers and the cache are kept.
    #[arg(long, default_value = "/var/lib/kubelab/build")]
    pub root: PathBuf,
    /// A registry (HOST:PORT) to speak plain HTTP to. Loopback registries always are.
    #[arg(long = "insecure-registry")]
    pub insecure_registries: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// Why, in one line; inside a step it is given the step's file, line and text.
    #[error("{0}")]
    Message(String),
    #[error("{file}: {error}")]
    Containerfile {
        file: PathBuf,
        error: containerfile::ParseError,
    },
    /// A step that could not be carried out: its line, its text, and why.
    #[error("{file}: line {line}: {text}: {message}")]
    Step {
        file: PathBuf,
        line: usize,
        text: String,
        message: String,
    },
    #[error("{0}: {1}")]
    Io(PathBuf, std::io::Error),
    #[error(transparent)]
    Image(#[from] crate::container::image::ImageError),
    #[error(transparent)]
    Layout(#[from] layout::LayoutError),
    #[error("interrupted (Ctrl-C)")]
    Interrupted,
}

/// A layer of the image: its diff_id (the tar's digest) and its blob in the layout.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Layer {
    diff_id: String,
    blob: LayerBlob,
}

/// The image as it stands after the steps so far.
struct Image {
    layers: Vec<Layer>,
    /// The OCI config's `config` object (Env, Cmd, Labels, ...), kept as JSON so that a
    /// base image's fields kubelab does not know pass through untouched.
    config: Map<String, Value>,
    history: Vec<Value>,
    architecture: String,
    /// The cache key of everything so far: each step's key is the hash of this and itself.
    chain: String,
    /// CMD came from the base image (an ENTRYPOINT here then clears it, as in Docker).
    cmd_from_base: bool,
}

/// The build's state: its inputs, where it keeps things, the ARGs so far, and counts.
struct Builder {
    file: PathBuf,
    context: PathBuf,
    /// What COPY and ADD leave out of the build directory.
    ignore: ignore::Ignore,
    root: PathBuf,
    images: ImageManager,
    layout: layout::Layout,
    no_cache: bool,
    pull: bool,
    /// --build-arg values, and which of them an ARG used.
    build_args: BTreeMap<String, String>,
    used_build_args: std::collections::BTreeSet<String>,
    /// ARGs declared before FROM (usable in FROM), and after it.
    global_args: BTreeMap<String, Option<String>>,
    args: BTreeMap<String, Option<String>>,
    /// Layers made by this build, and taken from the cache.
    made: usize,
    cached: usize,
    /// Turns true on Ctrl-C: the build stops at the next step, a RUN at once.
    interrupted: tokio::sync::watch::Receiver<bool>,
}
