//! The container layer, under both the agent (kubelet) and the image builder: what it
//! takes to turn an image and a command into a running, confined container on this host.
//!
//! - `image` — the ImageManager: pulls images from registries (OCI distribution API),
//!   unpacks their layers once per diff_id (`image/unpack.rs`).
//! - `security` — the default confinement (containerd's capability set, the
//!   RuntimeDefault seccomp profile) and a securityContext turned into OCI settings.
//! - `cgroups` — listing and removing what is left in a cgroup subtree.
//! - `shim` — the `kubelabd shim` process: the only caller of libcontainer for a
//!   container's life; `shim_client` — starting one and its create/start protocol.
//!
//! Nothing here knows about pods' lifecycles, the API or builds: the agent's
//! RuntimeService and the builder's RUN steps are its two users.

pub mod cgroups;
pub mod image;
pub mod security;
pub mod shim;
pub mod shim_client;

pub use shim::ExitRecord;
