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
//! Layout of `--root`: `images/` (ImageManager: unpacked layers, pulled references),
//! `oci/` (the OCI layout: every blob, and the tags), `cache/` (step key → layer),
//! `steps/` (scratch of the running steps), `runtime/` (libcontainer's state).
//! It never talks to the apiserver.

pub mod containerfile;
mod copy;
mod ignore;
mod layer;
mod layout;
mod rootfs;
mod run;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use sha2::Digest;

use crate::agent::image::{ImageManager, LayerBlob, PullPolicy};
use containerfile::{Instruction, Kind};
use rootfs::StepRootfs;

const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
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
    Image(#[from] crate::agent::image::ImageError),
    #[error(transparent)]
    Layout(#[from] layout::LayoutError),
    #[error("interrupted (Ctrl-C)")]
    Interrupted,
}

/// What the cache remembers of a file-changing step: the layer it made, if any.
#[derive(Serialize, Deserialize)]
struct CacheEntry {
    layer: Option<Layer>,
}

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

/// A step that changes files, with everything it depends on already worked out.
enum Change {
    Copy {
        add: bool,
        sources: Vec<PathBuf>,
        dest: String,
        workdir: String,
        chown: Option<String>,
        chmod: Option<u32>,
    },
    /// RUN; `user` as USER left it (a number, resolved against the rootfs).
    Run {
        argv: Vec<String>,
        env: Vec<String>,
        cwd: String,
        user: String,
    },
    Mkdir(String),
}

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

pub async fn run(args: BuildArgs) -> Result<(), BuildError> {
    let started = Instant::now();
    if !nix::unistd::geteuid().is_root() {
        return Err(BuildError::Message(
            "building mounts layers and runs RUN steps in containers: run it as root (sudo kubelab image build ...)".into(),
        ));
    }
    let context = std::fs::canonicalize(&args.context).map_err(|e| {
        BuildError::Message(format!("build directory {}: {e}", args.context.display()))
    })?;
    let file = match &args.file {
        Some(f) => f.clone(),
        None => ["Containerfile", "Dockerfile"]
            .iter()
            .map(|n| context.join(n))
            .find(|p| p.is_file())
            .ok_or_else(|| {
                BuildError::Message(format!(
                    "no Containerfile or Dockerfile in {} (name another file with -f)",
                    context.display()
                ))
            })?,
    };
    let source = std::fs::read_to_string(&file).map_err(|e| BuildError::Io(file.clone(), e))?;
    let instructions =
        containerfile::parse(&source).map_err(|error| BuildError::Containerfile {
            file: file.clone(),
            error,
        })?;
    if let Err(e) = kubelab_proto::image_ref::parse(&args.tag) {
        return Err(BuildError::Message(format!(
            "invalid image name {:?} for -t: {e} (example: 127.0.0.1:5000/site:1)",
            args.tag
        )));
    }
    let mut build_args = BTreeMap::new();
    for pair in &args.build_args {
        match pair.split_once('=') {
            Some((k, v)) => build_args.insert(k.to_string(), v.to_string()),
            None => build_args.insert(pair.clone(), std::env::var(pair).unwrap_or_default()),
        };
    }
    let root = args.root.clone();
    for d in ["cache", "steps", "runtime", "empty"] {
        let dir = root.join(d);
        std::fs::create_dir_all(&dir).map_err(|e| BuildError::Io(dir, e))?;
    }
    // One build at a time per root: they share the tags and the scratch directory.
    let _lock = lock(&root)?;
    clean_scratch(&root);
    let layout = layout::Layout::open(root.join("oci"))?;
    // A base image is as untrusted as a pod's: the agent's default limit on how far one
    // layer may inflate holds here too.
    let images = ImageManager::new(
        root.join("images"),
        args.insecure_registries.clone(),
        16 << 30,
    )?
    .keep_blobs_in(layout.blobs())?;
    // Ctrl-C stops the build between steps, or kills a RUN's container, and the build
    // then cleans up after itself (mounts, the container's cgroup) before it exits.
    let (interrupt, interrupted) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        while tokio::signal::ctrl_c().await.is_ok() {
            let _ = interrupt.send(true);
        }
    });
    let mut builder = Builder {
        interrupted,
        file,
        ignore: ignore::Ignore::load(&context),
        context,
        root,
        images,
        layout,
        no_cache: args.no_cache,
        pull: args.pull,
        build_args,
        used_build_args: Default::default(),
        global_args: BTreeMap::new(),
        args: BTreeMap::new(),
        made: 0,
        cached: 0,
    };
    let result = builder.build(&instructions, &args, started).await;
    run::remove_build_cgroups();
    result
}

impl Builder {
    async fn build(
        &mut self,
        instructions: &[Instruction],
        args: &BuildArgs,
        started: Instant,
    ) -> Result<(), BuildError> {
        let total = instructions.len();
        let mut image: Option<Image> = None;
        for (n, instruction) in instructions.iter().enumerate() {
            if *self.interrupted.borrow() {
                return Err(BuildError::Interrupted);
            }
            say(&format!("STEP {}/{total}: {}", n + 1, instruction.text));
            let file = self.file.clone();
            let step_error = |message: String| BuildError::Step {
                file: file.clone(),
                line: instruction.line,
                text: abbreviated(&instruction.text),
                message,
            };
            match (&instruction.kind, image.as_mut()) {
                (Kind::Arg(text), None) => {
                    let (name, value) = self.declare_arg(text, true).map_err(step_error)?;
                    self.global_args.insert(name, value);
                }
                (Kind::From(name), None) => {
                    let name = self.expand(name, None).map_err(step_error)?;
                    image = Some(self.from(&name).await.map_err(|e| match e {
                        BuildError::Message(m) => step_error(m),
                        other => step_error(other.to_string()),
                    })?);
                }
                (_, Some(img)) => self.step(img, instruction).await.map_err(|e| match e {
                    BuildError::Message(m) => step_error(m),
                    other => other,
                })?,
                (_, None) => unreachable!("containerfile::parse puts FROM first"),
            }
        }
        let Some(image) = image else {
            return Err(BuildError::Message("no FROM".into()));
        };
        let unused: Vec<&String> = self
            .build_args
            .keys()
            .filter(|k| !self.used_build_args.contains(*k))
            .collect();
        if !unused.is_empty() {
            say(&format!(
                "[Warning] one or more build-args {unused:?} were not consumed (no ARG declares them)"
            ));
        }
        self.commit(image, args, started)
    }

    /// ARG NAME[=default]: the --build-arg value, else the default, else (after FROM) the
    /// value the same ARG had before FROM.
    fn declare_arg(
        &mut self,
        text: &str,
        global: bool,
    ) -> Result<(String, Option<String>), String> {
        let vars = self.vars(None);
        let words = containerfile::words(text, &vars)?;
        let [word] = words.as_slice() else {
            return Err("ARG declares one NAME or NAME=DEFAULT".into());
        };
        let (name, default) = match word.split_once('=') {
            Some((n, d)) => (n.to_string(), Some(d.to_string())),
            None => (word.clone(), None),
        };
        let value = match self.build_args.get(&name) {
            Some(v) => {
                self.used_build_args.insert(name.clone());
                Some(v.clone())
            }
            None if default.is_some() => default,
            None if !global => self.global_args.get(&name).cloned().flatten(),
            None => None,
        };
        Ok((name, value))
    }

    /// The variables a step sees: ARGs so far, then the image's ENV (which wins).
    fn vars(&self, image: Option<&Image>) -> BTreeMap<String, String> {
        let args = if image.is_some() {
            &self.args
        } else {
            &self.global_args
        };
        let mut vars: BTreeMap<String, String> = args
            .iter()
            .filter_map(|(k, v)| Some((k.clone(), v.clone()?)))
            .collect();
        if let Some(image) = image {
            for entry in env_of(&image.config) {
                if let Some((k, v)) = entry.split_once('=') {
                    vars.insert(k.to_string(), v.to_string());
                }
            }
        }
        vars
    }

    fn expand(&self, text: &str, image: Option<&Image>) -> Result<String, String> {
        containerfile::expand(text, &self.vars(image))
    }

    /// FROM: the base image's layers, config and history; or nothing for `scratch`.
    async fn from(&mut self, name: &str) -> Result<Image, BuildError> {
        let arch = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            other => other,
        };
        if name == "scratch" {
            say("--> an empty image (scratch)");
            return Ok(Image {
                layers: Vec::new(),
                config: Map::from_iter([("Env".to_string(), json!([DEFAULT_PATH]))]),
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
            "--> {} {} ({} layers, {}){}",
            if pulled { "pulled" } else { "using" },
            short(&base.digest),
            base.layers.len(),
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
    fn has_blobs(&self, image: &crate::agent::image::Image) -> bool {
        let recorded = !image.layers.is_empty() || image.diff_ids.is_empty();
        recorded
            && image
                .layers
                .iter()
                .map(|l| &l.digest)
                .chain(std::iter::once(&image.config_digest))
                .all(|d| self.layout.blob_path(d).exists())
    }

    /// One instruction after FROM.
    async fn step(
        &mut self,
        image: &mut Image,
        instruction: &Instruction,
    ) -> Result<(), BuildError> {
        let message = BuildError::Message;
        let vars = self.vars(Some(image));
        let expand = |t: &str| containerfile::expand(t, &vars).map_err(message);
        let workdir = match config_str(&image.config, "WorkingDir") {
            "" => "/".to_string(),
            w => w.to_string(),
        };
        let text = &instruction.text;
        match &instruction.kind {
            Kind::From(_) => unreachable!("containerfile::parse refuses a second FROM"),
            Kind::Arg(arg) => {
                let (name, value) = self.declare_arg(arg, false).map_err(message)?;
                self.args.insert(name.clone(), value.clone());
                self.config_step(image, text, &format!("ARG {name}={value:?}"));
            }
            Kind::Env(env) => {
                let pairs = containerfile::pairs(env, &vars, true).map_err(message)?;
                let mut list = env_of(&image.config);
                for (k, v) in &pairs {
                    list.retain(|e| e.split_once('=').map(|(n, _)| n) != Some(k.as_str()));
                    list.push(format!("{k}={v}"));
                }
                image.config.insert("Env".into(), json!(list));
                self.config_step(image, text, &format!("ENV {pairs:?}"));
            }
            Kind::Label(labels) => {
                let pairs = containerfile::pairs(labels, &vars, false).map_err(message)?;
                let map = object(&mut image.config, "Labels");
                for (k, v) in &pairs {
                    map.insert(k.clone(), json!(v));
                }
                self.config_step(image, text, &format!("LABEL {pairs:?}"));
            }
            Kind::Expose(ports) => {
                let words = containerfile::words(ports, &vars).map_err(message)?;
                let map = object(&mut image.config, "ExposedPorts");
                for word in &words {
                    let (port, protocol) = word.split_once('/').unwrap_or((word, "tcp"));
                    let protocol = protocol.to_ascii_lowercase();
                    if !matches!(port.parse::<u16>(), Ok(p) if p > 0)
                        || !matches!(protocol.as_str(), "tcp" | "udp" | "sctp")
                    {
                        return Err(message(format!(
                            "{word:?} is not a port (examples: 80, 8080/tcp, 53/udp)"
                        )));
                    }
                    map.insert(format!("{port}/{protocol}"), json!({}));
                }
                self.config_step(image, text, &format!("EXPOSE {words:?}"));
            }
            Kind::Entrypoint(command) => {
                image
                    .config
                    .insert("Entrypoint".into(), json!(command.argv()));
                if image.cmd_from_base {
                    image.config.remove("Cmd");
                }
                self.config_step(image, text, &format!("ENTRYPOINT {:?}", command.argv()));
            }
            Kind::Cmd(command) => {
                image.config.insert("Cmd".into(), json!(command.argv()));
                image.cmd_from_base = false;
                self.config_step(image, text, &format!("CMD {:?}", command.argv()));
            }
            Kind::User(user) => {
                let user = expand(user)?;
                // kubelab runs images as numbers: a name is looked up in the image now.
                let both_numbers = user
                    .split_once(':')
                    .is_some_and(|(u, g)| u.parse::<u32>().is_ok() && g.parse::<u32>().is_ok());
                let numeric = if both_numbers {
                    rootfs::lookup_user(Path::new("/nonexistent"), &user).map_err(message)?
                } else {
                    let view = self.mount(image)?;
                    rootfs::lookup_user(&view.merged, &user).map_err(message)?
                };
                let value = format!("{}:{}", numeric.0, numeric.1);
                if value != user {
                    say(&format!("--> user {user} is {value}"));
                }
                image.config.insert("User".into(), json!(value));
                self.config_step(image, text, &format!("USER {value}"));
            }
            Kind::Workdir(dir) => {
                let dir = expand(dir)?;
                let dir = if dir.starts_with('/') {
                    dir
                } else {
                    format!("{}/{dir}", workdir.trim_end_matches('/'))
                };
                image.config.insert("WorkingDir".into(), json!(dir));
                self.file_step(
                    image,
                    instruction,
                    format!("WORKDIR {dir}"),
                    Change::Mkdir(dir.clone()),
                )
                .await?;
            }
            Kind::Copy {
                add,
                chown,
                chmod,
                args,
            } => {
                let mut words = containerfile::words(args, &vars).map_err(message)?;
                if words.len() < 2 {
                    return Err(message(
                        "needs at least one source and a destination".into(),
                    ));
                }
                let dest = words.pop().unwrap_or_default();
                let sources = copy::sources(&self.context, &self.ignore, &words, *add)
                    .map_err(|e| message(e.to_string()))?;
                let digest = copy::content_digest(&sources, &self.ignore)
                    .map_err(|e| message(e.to_string()))?;
                let chmod = match chmod {
                    Some(m) => Some(u32::from_str_radix(m, 8).map_err(|_| {
                        message(format!(
                            "--chmod={m}: not an octal mode (example: --chmod=644)"
                        ))
                    })?),
                    None => None,
                };
                let chown = chown.as_deref().map(expand).transpose()?;
                let key = format!(
                    "{} {chown:?} {chmod:?} {words:?} {dest} in {workdir} files {digest}",
                    if *add { "ADD" } else { "COPY" }
                );
                let change = Change::Copy {
                    add: *add,
                    sources,
                    dest,
                    workdir,
                    chown,
                    chmod,
                };
                self.file_step(image, instruction, key, change).await?;
            }
            Kind::Run(command) => {
                let mut env = env_of(&image.config);
                // ARG values are in a RUN's environment (not in the image's).
                for (k, v) in vars.iter().filter(|(k, _)| self.args.contains_key(*k)) {
                    if !env
                        .iter()
                        .any(|e| e.split_once('=').map(|(n, _)| n) == Some(k.as_str()))
                    {
                        env.push(format!("{k}={v}"));
                    }
                }
                let user = config_str(&image.config, "User").to_string();
                let argv = command.argv();
                let key = format!("RUN {argv:?} env {env:?} user {user} in {workdir}");
                let change = Change::Run {
                    argv,
                    env,
                    cwd: workdir,
                    user,
                };
                self.file_step(image, instruction, key, change).await?;
            }
        }
        Ok(())
    }

    /// A step that changes only the config: no layer, but it is part of every later
    /// step's cache key.
    fn config_step(&mut self, image: &mut Image, text: &str, canonical: &str) {
        image.chain = chain(&image.chain, canonical);
        image
            .history
            .push(json!({"created": now_rfc3339(), "created_by": text, "empty_layer": true}));
    }

    /// A step that may change files: from the cache, or done on an overlay and its upper
    /// directory made a layer.
    async fn file_step(
        &mut self,
        image: &mut Image,
        instruction: &Instruction,
        canonical: String,
        change: Change,
    ) -> Result<(), BuildError> {
        let key = chain(&image.chain, &canonical);
        let cache_file = self.root.join("cache").join(format!("{key}.json"));
        if !self.no_cache {
            if let Some(entry) = std::fs::read(&cache_file)
                .ok()
                .and_then(|b| serde_json::from_slice::<CacheEntry>(&b).ok())
                .filter(|e| self.layer_is_here(e.layer.as_ref()))
            {
                match &entry.layer {
                    Some(l) => say(&format!("--> Using cache {}", short(&l.diff_id))),
                    None => say("--> Using cache (no change to the files)"),
                }
                self.cached += usize::from(entry.layer.is_some());
                self.add(image, entry.layer, instruction, key);
                return Ok(());
            }
        }
        let t = Instant::now();
        let mut step = self.mount(image)?;
        tracing::debug!(layers = image.layers.len(), merged = %step.merged.display(), "overlay mounted");
        let scaffolding = self.apply(&step, change).await?;
        tracing::debug!(ms = t.elapsed().as_millis() as u64, "step done; unmounting");
        step.unmount()
            .map_err(|e| BuildError::Message(e.to_string()))?;
        run::remove_scaffolding(&step.upper, &scaffolding);
        tracing::debug!(ms = t.elapsed().as_millis() as u64, "unmounted");
        let layer = if layer::is_empty(&step.upper)
            .map_err(|e| BuildError::Message(e.to_string()))?
        {
            say(&format!(
                "--> no change to the files ({} ms)",
                t.elapsed().as_millis()
            ));
            None
        } else {
            let gz = step.dir().join("layer.tar.gz");
            let written =
                layer::write(&step.upper, &gz).map_err(|e| BuildError::Message(e.to_string()))?;
            tracing::debug!(ms = t.elapsed().as_millis() as u64, diff_id = %written.diff_id, "layer written");
            self.layout.adopt(&gz, &written.digest)?;
            // The upper directory is in overlayfs' own form, as an unpacked layer is: it
            // becomes the layer's directory as it is (no unpacking of what was just packed).
            self.images.adopt_layer(&step.upper, &written.diff_id)?;
            tracing::debug!(ms = t.elapsed().as_millis() as u64, "layer stored");
            say(&format!(
                "--> layer {} ({} entries, {}) in {} ms",
                short(&written.diff_id),
                written.entries,
                human_bytes(written.size),
                t.elapsed().as_millis()
            ));
            Some(Layer {
                diff_id: written.diff_id,
                blob: LayerBlob {
                    digest: written.digest,
                    media_type: OCI_LAYER_GZIP.into(),
                    size: written.size,
                },
            })
        };
        drop(step);
        self.made += usize::from(layer.is_some());
        let entry = serde_json::to_vec(&CacheEntry {
            layer: layer.clone(),
        })
        .unwrap_or_default();
        let tmp = cache_file.with_extension("tmp");
        std::fs::write(&tmp, entry)
            .and_then(|()| std::fs::rename(&tmp, &cache_file))
            .map_err(|e| BuildError::Io(cache_file.clone(), e))?;
        self.add(image, layer, instruction, key);
        Ok(())
    }

    /// Does what a file step does, on the step's mounted rootfs. Returns what a RUN's
    /// runtime made there that is not the step's own doing (`run::scaffolding`).
    async fn apply(
        &mut self,
        step: &StepRootfs,
        change: Change,
    ) -> Result<Vec<PathBuf>, BuildError> {
        let mut scaffolding = Vec::new();
        match change {
            Change::Mkdir(dir) => {
                rootfs::make_dirs(&step.merged, &dir, (0, 0))
                    .map_err(|e| BuildError::Message(e.to_string()))?;
            }
            Change::Copy {
                add,
                sources,
                dest,
                workdir,
                chown,
                chmod,
            } => {
                let owner = match &chown {
                    Some(c) => rootfs::lookup_user(&step.merged, c).map_err(BuildError::Message)?,
                    None => (0, 0),
                };
                copy::apply(
                    &step.merged,
                    &copy::CopyStep {
                        add,
                        sources: &sources,
                        dest: &dest,
                        workdir: &workdir,
                        owner,
                        mode: chmod,
                        ignore: &self.ignore,
                    },
                )
                .map_err(|e| BuildError::Message(e.to_string()))?;
            }
            Change::Run {
                argv,
                env,
                cwd,
                user,
            } => {
                let user = match user.as_str() {
                    "" => (0, 0),
                    u => rootfs::lookup_user(&step.merged, u).map_err(BuildError::Message)?,
                };
                // The working directory exists before the command runs, as in Docker.
                rootfs::make_dirs(&step.merged, &cwd, (0, 0))
                    .map_err(|e| BuildError::Message(e.to_string()))?;
                let run_step = run::RunStep {
                    argv,
                    env,
                    cwd,
                    user,
                };
                let state = self.root.join("runtime");
                let scratch = step.dir().to_path_buf();
                scaffolding = run::scaffolding(&step.merged);
                let exit = match run::run(
                    &step.merged,
                    &scratch,
                    &state,
                    &run_step,
                    &mut self.interrupted,
                )
                .await
                {
                    Ok(exit) => exit,
                    Err(run::RunError::Interrupted) => {
                        say("--> interrupted: the container was killed");
                        return Err(BuildError::Interrupted);
                    }
                    Err(e) => return Err(BuildError::Message(e.to_string())),
                };
                if exit.exit_code != 0 {
                    return Err(BuildError::Message(match exit.signal {
                        0 => format!("the command exited with code {}", exit.exit_code),
                        s => format!("the command was killed by signal {s}"),
                    }));
                }
            }
        }
        Ok(scaffolding)
    }

    fn layer_is_here(&self, layer: Option<&Layer>) -> bool {
        layer.is_none_or(|l| {
            self.images.layer_dir(&l.diff_id).exists()
                && self.layout.blob_path(&l.blob.digest).exists()
        })
    }

    fn add(
        &mut self,
        image: &mut Image,
        layer: Option<Layer>,
        instruction: &Instruction,
        key: String,
    ) {
        image.chain = key;
        image.history.push(json!({
            "created": now_rfc3339(),
            "created_by": instruction.text,
            "empty_layer": layer.is_none(),
        }));
        image.layers.extend(layer);
    }

    /// The image's layers so far, mounted for one step.
    fn mount(&self, image: &Image) -> Result<StepRootfs, BuildError> {
        let layers: Vec<PathBuf> = image
            .layers
            .iter()
            .map(|l| self.images.layer_dir(&l.diff_id))
            .collect();
        StepRootfs::mount(&self.root.join("steps"), &layers, &self.root.join("empty"))
            .map_err(|e| BuildError::Message(e.to_string()))
    }

    /// Writes the config and the manifest, and tags the image in the layout.
    fn commit(
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
            "--> {} layers ({} made now, {} from the cache, {} from the base image), {}",
            image.layers.len(),
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

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// An instruction as an error names it: the first 60 characters (the line says the rest).
fn abbreviated(text: &str) -> String {
    match text.char_indices().nth(60) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text.to_string(),
    }
}

/// A string field of the config ("" when missing).
fn config_str<'a>(config: &'a Map<String, Value>, key: &str) -> &'a str {
    config.get(key).and_then(Value::as_str).unwrap_or("")
}

/// The object under `key` in the config (made if missing or not an object).
fn object<'a>(config: &'a mut Map<String, Value>, key: &str) -> &'a mut Map<String, Value> {
    let value = config.entry(key).or_insert_with(|| json!({}));
    if !value.is_object() {
        *value = json!({});
    }
    match value {
        Value::Object(map) => map,
        _ => unreachable!("made an object just above"),
    }
}

fn env_of(config: &Map<String, Value>) -> Vec<String> {
    config
        .get("Env")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(bytes))
}

/// The next cache key: everything before, and this step.
fn chain(previous: &str, step: &str) -> String {
    sha256_hex(format!("{previous}\n{step}").as_bytes())
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

/// The first 12 hex digits, as `docker images` shows them.
fn short(digest: &str) -> &str {
    let hex = digest.split_once(':').map(|(_, h)| h).unwrap_or(digest);
    &hex[..hex.len().min(12)]
}

fn human_bytes(n: u64) -> String {
    match n {
        n if n >= 1 << 20 => format!("{:.1} MB", n as f64 / 1e6),
        n if n >= 1 << 10 => format!("{:.1} kB", n as f64 / 1e3),
        n => format!("{n} B"),
    }
}

fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Takes the root's lock for the whole build (released when the file is closed).
fn lock(root: &Path) -> Result<nix::fcntl::Flock<std::fs::File>, BuildError> {
    let path = root.join("lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| BuildError::Io(path.clone(), e))?;
    match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock) {
        Ok(lock) => Ok(lock),
        Err((file, _)) => {
            say(&format!(
                "waiting for another build using {}",
                root.display()
            ));
            nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
                .map_err(|(_, e)| BuildError::Io(path, e.into()))
        }
    }
}

/// What an interrupted build (Ctrl-C) left: its steps' mounts and scratch directories,
/// libcontainer's state of its RUN containers, their empty cgroups. Called with the
/// root's lock held, so no build of this root is running.
fn clean_scratch(root: &Path) {
    for entry in std::fs::read_dir(root.join("steps"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let merged = entry.path().join("merged");
        let _ = nix::mount::umount2(&merged, nix::mount::MntFlags::MNT_DETACH);
        let _ = std::fs::remove_dir_all(entry.path());
    }
    for entry in std::fs::read_dir(root.join("runtime"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let _ = std::fs::remove_dir_all(entry.path());
    }
    run::remove_build_cgroups();
}
