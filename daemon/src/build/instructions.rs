//! The instructions after FROM: ARG, ENV, LABEL, EXPOSE, ENTRYPOINT, CMD and USER change
//! the image's config; WORKDIR, COPY, ADD and RUN are worked out (variables expanded,
//! sources found and hashed, the cache key written) and handed to `file_step.rs` as a
//! `Change`. Mounts nothing itself but to look a USER name up.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::json;

use super::cache::chain;
use super::config::{config_str, env_of, now_rfc3339, object};
use super::containerfile::{self, Instruction, Kind};
use super::file_step::Change;
use super::output::say;
use super::{copy, rootfs, BuildError, Builder, Image};

impl Builder {
    /// ARG NAME[=default]: the --build-arg value, else the default, else (after FROM) the
    /// value the same ARG had before FROM.
    pub(super) fn declare_arg(
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

    pub(super) fn expand(&self, text: &str, image: Option<&Image>) -> Result<String, String> {
        containerfile::expand(text, &self.vars(image))
    }

    /// One instruction after FROM.
    pub(super) async fn step(
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
}
