//! The build from start to end: checks `kubelabd build`'s arguments, takes the root (its
//! lock, what an interrupted build left), then runs the instructions in order and
//! commits the image. Owns the order of the steps; what each step does is in
//! `instructions.rs`, `base.rs` and `file_step.rs`.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use super::containerfile::{self, Instruction, Kind};
use super::output::{abbreviated, say};
use super::{ignore, layout, BuildArgs, BuildError, Builder, Image};
use crate::container::image::ImageManager;

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
    super::run::remove_build_cgroups(&builder.root);
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

/// Whether `dir` is a build's root (`--root`: its lock and its steps' scratch).
pub fn is_build_root(dir: &Path) -> bool {
    dir.join("lock").is_file() && dir.join("oci").is_dir()
}

/// `kubelabd reset`: what a build of `root` that was killed hard left — its RUN
/// containers and their shims, its steps' mounts, scratch and cgroups. One line if there
/// was anything; an error, touching nothing, while a build of `root` runs. Images and the
/// step cache stay.
pub fn reset(root: &Path) -> Result<Option<String>, BuildError> {
    let path = root.join("lock");
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .map_err(|e| BuildError::Io(path.clone(), e))?;
    let _lock = nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock)
        .map_err(|_| {
            BuildError::Message(format!(
                "a build is running with --root {}: let it finish (or Ctrl-C it), then run kubelabd reset again",
                root.display()
            ))
        })?;
    let cgroup = super::run::build_cgroup(root);
    let mut pids = crate::container::cgroups::processes(&cgroup);
    pids.extend(crate::agent::runtime::processes_mentioning(&format!(
        "{}/",
        root.display()
    )));
    crate::agent::runtime::kill_and_wait(&pids);
    let steps = std::fs::read_dir(root.join("steps"))
        .map(|d| d.count())
        .unwrap_or(0);
    clean_scratch(root);
    Ok((steps > 0 || !pids.is_empty()).then(|| {
        format!(
            "build root {}: {} process(es) stopped; {steps} step(s)' mounts and scratch removed",
            root.display(),
            pids.len()
        )
    }))
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
    super::run::remove_build_cgroups(root);
}
