//! `kubelab image build DIR -t REF [--push]`: step 1 (and 2) of the workflow.
//!
//! Building runs containers (RUN) and mounts layers, which is the node's work, not a
//! client's: the CLI hands the build to `kubelabd build` (found beside `kubelab`, else on
//! PATH), whose output streams straight to the terminal. With `--push` it then pushes the
//! built image from the builder's OCI layout (`image::push_built`). It never talks to the
//! apiserver.

use std::path::PathBuf;

use anyhow::Context;

#[derive(Debug, clap::Args)]
pub struct BuildArgs {
    /// The build directory: the Containerfile (or Dockerfile) and the files it copies.
    pub dir: PathBuf,
    /// The image's name, e.g. 127.0.0.1:5000/site:1.
    #[arg(short = 't', long = "tag")]
    pub tag: String,
    /// Push the image to its registry once built.
    #[arg(long)]
    pub push: bool,
    /// The Containerfile, if not DIR/Containerfile or DIR/Dockerfile.
    #[arg(short = 'f', long = "file")]
    pub file: Option<PathBuf>,
    /// NAME=VALUE for an ARG (repeatable).
    #[arg(long = "build-arg")]
    pub build_args: Vec<String>,
    /// KEY=VALUE, a label added to the image (repeatable).
    #[arg(long = "label")]
    pub labels: Vec<String>,
    /// Make every layer again, using no cached step.
    #[arg(long)]
    pub no_cache: bool,
    /// Ask the registry for the FROM image even if it is here already.
    #[arg(long)]
    pub pull: bool,
    /// Where images, layers and the build cache are kept.
    #[arg(long, default_value = "/var/lib/kubelab/build")]
    pub root: PathBuf,
    /// A registry (HOST:PORT) to speak plain HTTP to. Loopback registries always are.
    #[arg(long = "insecure-registry")]
    pub insecure_registries: Vec<String>,
}

/// Runs the build; returns the process's exit code (kubelabd has said why it failed).
pub async fn run(args: BuildArgs) -> anyhow::Result<i32> {
    if args.push && !names_a_registry(&args.tag) {
        anyhow::bail!(
            "--push: {:?} names no registry, so it would mean Docker Hub (kubelab does not log in there): name the image HOST:PORT/NAME:TAG, e.g. 127.0.0.1:5000/{}",
            args.tag,
            args.tag
        );
    }
    let kubelabd = kubelabd()?;
    let mut command = tokio::process::Command::new(&kubelabd);
    command
        .arg("build")
        .arg(&args.dir)
        .args(["--tag", &args.tag])
        .arg("--root")
        .arg(&args.root);
    if let Some(file) = &args.file {
        command.arg("--file").arg(file);
    }
    for a in &args.build_args {
        command.args(["--build-arg", a]);
    }
    for l in &args.labels {
        command.args(["--label", l]);
    }
    for r in &args.insecure_registries {
        command.args(["--insecure-registry", r]);
    }
    if args.no_cache {
        command.arg("--no-cache");
    }
    if args.pull {
        command.arg("--pull");
    }
    // Ctrl-C reaches kubelabd too (same terminal): it stops the build and cleans up. Until
    // it has, this process waits instead of dying on the signal.
    let mut sigint = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
        .context("listening for Ctrl-C")?;
    let mut child = command
        .spawn()
        .with_context(|| format!("running {} build", kubelabd.display()))?;
    let status = loop {
        tokio::select! {
            status = child.wait() => break status.context("waiting for kubelabd build")?,
            _ = sigint.recv() => {}
        }
    };
    if !status.success() {
        return Ok(status.code().unwrap_or(1));
    }
    if args.push {
        println!("Pushing {}", args.tag);
        let digest =
            crate::image::push_built(&args.root.join("oci"), &args.tag, &args.insecure_registries)
                .await?;
        println!("pushed {}@{digest}", args.tag);
    }
    Ok(0)
}

/// Whether the image name starts with a registry host (`host.domain/`, `host:port/`,
/// `localhost/`), as Docker tells one from a Docker Hub path.
fn names_a_registry(name: &str) -> bool {
    match name.split_once('/') {
        Some((first, _)) => first.contains(['.', ':']) || first == "localhost",
        None => false,
    }
}

/// `kubelabd` beside this program (as `make` and the tests lay them out), else on PATH.
fn kubelabd() -> anyhow::Result<PathBuf> {
    if let Some(beside) = std::env::current_exe()
        .ok()
        .map(|exe| exe.with_file_name("kubelabd"))
        .filter(|p| p.is_file())
    {
        return Ok(beside);
    }
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .map(|dir| dir.join("kubelabd"))
        .find(|p| p.is_file())
        .context("kubelab image build runs `kubelabd build`, and kubelabd is neither beside kubelab nor on PATH: build it (cargo build --bins) or add it to PATH")
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_registry_host_is_told_from_a_docker_hub_path() {
        assert!(super::names_a_registry("127.0.0.1:5000/site:1"));
        assert!(super::names_a_registry("registry.example.org/a/b"));
        assert!(super::names_a_registry("localhost/x"));
        assert!(!super::names_a_registry("site:1"));
        assert!(!super::names_a_registry("library/site"));
    }
}
