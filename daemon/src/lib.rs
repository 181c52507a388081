//! kubelab's daemons as a library: the `kubelabd` binary (`src/bin/kubelabd.rs`) is a thin
//! command-line front over it, and tests and fuzz targets use its modules by name.
//!
//! Layout:
//! - `apiserver` — the gRPC API and its sled store; the only owner of cluster state.
//! - `scheduler` — binds unbound pods to nodes, through the API only.
//! - `controllers` — the controller manager: ReplicaSets and the garbage collector, as
//!   clients of the Kubernetes REST API.
//! - `dns` — the cluster DNS (CoreDNS's role): Services' names, as a REST client; its own
//!   binary, `kubelab-dns` (`src/bin/kubelab-dns.rs`), so that the DNS library is not in
//!   every daemon's pages. `daemon` — what both binaries do at start and stop.
//! - `agent` — the kubelet: pulls images, runs containers through shims, reports status.
//! - `container` — under the agent and the builder: images, confinement, cgroups, and the
//!   shim (one single-threaded process per container; with `exec-helper`, one per
//!   `kubelab exec` or exec probe, the only callers of libcontainer).
//! - `build` — `kubelab image build`'s builder: Containerfile steps as layers, RUN
//!   through the shim; images kept in an OCI layout.
//! - `up` — apiserver + scheduler + agents, for a lab in one command; `reset` — what a
//!   killed lab left on the machine, removed.
//! - `hollow` — hollow nodes (kubemark's idea): no containers, for scale tests and benchmarks.
//! - `client` — the API client the scheduler and agents share; `net` — socket plumbing;
//!   `deadline` — deadlines from outside durations without overflow; `blocking` — disk
//!   work kept off the async threads; `backoff` — every retry's doubling wait; `supervise` — how a
//!   task that should run forever ended.

#![forbid(unsafe_code)]

/// What stops a daemon (Ctrl-C, SIGTERM, or a test's own), boxed: the daemons' entry
/// points are not generic, one copy of each in this library whatever the caller's future.
pub type Shutdown = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

pub mod agent;
pub mod apiserver;
pub mod backoff;
pub mod blocking;
pub mod build;
pub mod client;
pub mod container;
pub mod controllers;
pub mod cri_log;
pub mod daemon;
pub mod deadline;
pub mod dns;
pub mod hollow;
pub mod net;
pub mod reset;
pub mod scheduler;
pub mod supervise;
pub mod up;
