//! `kubelabd controller-manager`: kube-controller-manager's role. Controllers that keep
//! workloads as their specs say, each a client of the Kubernetes REST API like kubectl,
//! with its own credential (`controller-manager.conf`, the identity
//! `system:kube-controller-manager`).
//!
//! Layout: `client` (typed REST calls), `informer` (list + watch into a cache, changes
//! handed on), `queue` (work queue, expectations), `events` (the recorder),
//! `pod_state` (what a controller reads of a pod), `rollout` (a Deployment's
//! arithmetic), `pod_control` (making and deleting a workload's pods), `proportion` (a rollout
//! resized), `job_status`;
//! the controllers: `deployment`, `replicaset`, `job`, `ttl_after_finished`,
//! `endpointslice`, `garbage_collector`, `taint_eviction`. Every controller reads its informers' caches and writes through
//! the API; none touches the store, and none runs a container.

pub mod client;
mod deployment;
mod deployment_status;
mod endpointslice;
mod events;
mod garbage_collector;
pub mod informer;
mod job;
mod job_status;
mod pod_control;
mod pod_state;
mod proportion;
mod queue;
mod replicaset;
mod rollout;
mod taint_eviction;
mod ttl_after_finished;

use std::path::PathBuf;

use futures::FutureExt;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kubelab_proto::credential::Credential;

use client::{Api, Client};
use informer::Informer;

#[derive(Debug, clap::Args)]
pub struct ControllerManagerArgs {
    /// The controller manager's credential, as the apiserver wrote it.
    #[arg(
        long,
        default_value = "/var/lib/kubelab/apiserver/controller-manager.conf"
    )]
    pub kubeconfig: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    #[error(transparent)]
    Credential(#[from] kubelab_proto::credential::CredentialError),
    #[error(transparent)]
    Client(#[from] client::ClientError),
    #[error("a controller stopped: {0}")]
    Stopped(String),
}

/// Runs the informers and the controllers until `shutdown`.
pub async fn run(
    args: ControllerManagerArgs,
    shutdown: crate::Shutdown,
) -> Result<(), ControllerError> {
    let credential = Credential::load(&args.kubeconfig)?;
    let client = Client::new(&credential)?;
    let pods = Informer::<Pod>::new();
    let replicasets = Informer::<ReplicaSet>::new();
    let deployments = Informer::<Deployment>::new();
    let nodes = Informer::<Node>::new();
    let jobs = Informer::<Job>::new();
    let services = Informer::<Service>::new();
    let slices = Informer::<EndpointSlice>::new();
    let endpointslice_controller = endpointslice::EndpointSliceController::new(
        client.clone(),
        services.clone(),
        pods.clone(),
        slices.clone(),
    );
    let deployment_controller = deployment::DeploymentController::new(
        client.clone(),
        deployments.clone(),
        replicasets.clone(),
        pods.clone(),
    );
    let replicaset_controller =
        replicaset::ReplicaSetController::new(client.clone(), replicasets.clone(), pods.clone());
    let garbage_collector = garbage_collector::GarbageCollector::new(
        client.clone(),
        pods.clone(),
        replicasets.clone(),
        deployments.clone(),
        jobs.clone(),
    );
    let taint_eviction =
        taint_eviction::TaintEvictionController::new(client.clone(), pods.clone(), nodes.clone());
    let job_controller = job::JobController::new(client.clone(), jobs.clone(), pods.clone());
    let ttl_controller =
        ttl_after_finished::TtlAfterFinishedController::new(client.clone(), jobs.clone());
    let mut tasks = tokio::task::JoinSet::new();
    // Each informer lists and watches its kind for ever; each controller loops for ever:
    // one that returns stops the controller manager, saying which.
    let run = |what: &'static str| move |()| what;
    tasks.spawn(pods.run(Api::all(client.clone())).map(run("pod informer")));
    tasks.spawn(
        replicasets
            .run(Api::all(client.clone()))
            .map(run("replicaset informer")),
    );
    tasks.spawn(
        deployments
            .run(Api::all(client.clone()))
            .map(run("deployment informer")),
    );
    tasks.spawn(
        nodes
            .run(Api::all(client.clone()))
            .map(run("node informer")),
    );
    tasks.spawn(jobs.run(Api::all(client.clone())).map(run("job informer")));
    tasks.spawn(
        services
            .run(Api::all(client.clone()))
            .map(run("service informer")),
    );
    tasks.spawn(
        slices
            .run(Api::all(client.clone()))
            .map(run("endpointslice informer")),
    );
    tasks.spawn(
        endpointslice_controller
            .run()
            .map(run("endpointslice controller")),
    );
    tasks.spawn(job_controller.run().map(run("job controller")));
    tasks.spawn(
        ttl_controller
            .run()
            .map(run("ttl-after-finished controller")),
    );
    tasks.spawn(taint_eviction.run().map(run("taint eviction controller")));
    tasks.spawn(
        deployment_controller
            .run()
            .map(run("deployment controller")),
    );
    tasks.spawn(
        replicaset_controller
            .run()
            .map(run("replicaset controller")),
    );
    tasks.spawn(garbage_collector.run().map(run("garbage collector")));
    tracing::info!(
        "controller manager running: deployment, replicaset, job, ttl-after-finished, endpointslice, garbage collector, taint eviction"
    );
    tokio::select! {
        _ = shutdown => Ok(()),
        ended = tasks.join_next() => {
            let why = match ended {
                Some(Ok(what)) => format!("the {what} returned"),
                Some(Err(e)) => crate::supervise::task_end::<()>(Err(e)),
                None => "nothing was running".to_string(),
            };
            Err(ControllerError::Stopped(why))
        }
    }
}
