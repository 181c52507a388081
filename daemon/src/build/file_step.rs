//! A step that may change files (WORKDIR, COPY, ADD, RUN): taken from the cache, or done
//! on an overlay of the layers so far (`rootfs.rs`) by `copy.rs` or `run.rs`, and what
//! landed in the overlay's upper directory made a layer (`layer.rs`). Owns the step's
//! mount and layer; the cache's files are `cache.rs`'.

use std::path::PathBuf;
use std::time::Instant;

use serde_json::json;

use super::cache::chain;
use super::config::now_rfc3339;
use super::containerfile::Instruction;
use super::output::{human_bytes, say, short};
use super::rootfs::{self, StepRootfs};
use super::{copy, layer, run, BuildError, Builder, Image, Layer, OCI_LAYER_GZIP};
use crate::container::image::LayerBlob;

/// A step that changes files, with everything it depends on already worked out.
pub(super) enum Change {
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

impl Builder {
    /// A step that may change files: from the cache, or done on an overlay and its upper
    /// directory made a layer.
    pub(super) async fn file_step(
        &mut self,
        image: &mut Image,
        instruction: &Instruction,
        canonical: String,
        change: Change,
    ) -> Result<(), BuildError> {
        let key = chain(&image.chain, &canonical);
        if let Some(entry) = self.cached_step(&key) {
            match &entry.layer {
                Some(l) => say(&format!("--> Using cache {}", short(&l.diff_id))),
                None => say("--> Using cache (no change to the files)"),
            }
            self.cached += usize::from(entry.layer.is_some());
            self.add(image, entry.layer, instruction, key);
            return Ok(());
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
        self.remember_step(&key, &layer)?;
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
                    cgroup_parent: run::build_cgroup(&self.root),
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
    pub(super) fn mount(&self, image: &Image) -> Result<StepRootfs, BuildError> {
        let layers: Vec<PathBuf> = image
            .layers
            .iter()
            .map(|l| self.images.layer_dir(&l.diff_id))
            .collect();
        StepRootfs::mount(&self.root.join("steps"), &layers, &self.root.join("empty"))
            .map_err(|e| BuildError::Message(e.to_string()))
    }
}
