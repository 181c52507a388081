//! Each resource as the REST API serves it: its names in URLs and discovery, its JSON
//! shape (a `k8s-openapi` type, through `kubelab_proto::k8s`) and its table. One small
//! `Kind` per resource; the handlers in `handlers.rs` are the same for all.

use k8s_openapi::api::apps::v1 as apps;
use k8s_openapi::api::core::v1 as core;
use k8s_openapi::api::events::v1 as events_v1;
use kubelab_proto::k8s::{self as convert, printers, ConvertError};
use kubelab_proto::v1 as api;
use serde_json::Value;

use crate::apiserver::events::EventsService;
use crate::apiserver::namespaces::NamespacesService;
use crate::apiserver::native::{self, NativeRegistry};
use crate::apiserver::nodes::NodesService;
use crate::apiserver::pods::PodsService;
use crate::apiserver::registry::Registry;
use crate::apiserver::services::{self, endpointslices};
use crate::apiserver::workloads::{self, deployments, jobs, replicasets};

/// A resource in one group and version of the REST API.
pub trait Kind: Send + Sync + 'static {
    type Registry: Registry;
    type K8s: k8s_openapi::Resource
        + serde::Serialize
        + serde::de::DeserializeOwned
        + Send
        + 'static;
    /// In URLs: `pods`.
    const PLURAL: &'static str;
    const SINGULAR: &'static str;
    const SHORT_NAMES: &'static [&'static str];
    /// `kubectl get all` includes it.
    const IN_ALL: bool = false;
    /// What discovery says may be done.
    const VERBS: &'static [&'static str];
    /// The subresources served, with their verbs.
    const SUBRESOURCES: &'static [(&'static str, &'static [&'static str])] = &[];
    /// What a delete does to dependents when the client does not say (batch/v1 Jobs
    /// orphan their pods, as in Kubernetes; kubectl always says Background).
    const DEFAULT_PROPAGATION: &'static str = "Background";

    fn to_k8s(object: &<Self::Registry as Registry>::Object) -> Self::K8s;
    fn from_k8s(object: Self::K8s) -> Result<<Self::Registry as Registry>::Object, ConvertError>;
    fn columns() -> &'static [printers::Column];
    fn row(object: &<Self::Registry as Registry>::Object, now_ms: i64) -> Vec<Value>;
}

const READ_WRITE: &[&str] = &[
    "create", "delete", "get", "list", "patch", "update", "watch",
];

pub struct Pods;
impl Kind for Pods {
    type Registry = PodsService;
    type K8s = core::Pod;
    const PLURAL: &'static str = "pods";
    const SINGULAR: &'static str = "pod";
    const SHORT_NAMES: &'static [&'static str] = &["po"];
    const IN_ALL: bool = true;
    const VERBS: &'static [&'static str] = READ_WRITE;
    const SUBRESOURCES: &'static [(&'static str, &'static [&'static str])] = &[
        ("status", &["get", "patch", "update"]),
        ("log", &["get"]),
        ("exec", &["create", "get"]),
        ("binding", &["create"]),
    ];

    fn to_k8s(pod: &api::Pod) -> core::Pod {
        convert::pod(pod)
    }
    fn from_k8s(pod: core::Pod) -> Result<api::Pod, ConvertError> {
        convert::pod_from_k8s(pod)
    }
    fn columns() -> &'static [printers::Column] {
        printers::POD_COLUMNS
    }
    fn row(pod: &api::Pod, now_ms: i64) -> Vec<Value> {
        printers::pod_row(pod, now_ms)
    }
}

pub struct Nodes;
impl Kind for Nodes {
    type Registry = NodesService;
    type K8s = core::Node;
    const PLURAL: &'static str = "nodes";
    const SINGULAR: &'static str = "node";
    const SHORT_NAMES: &'static [&'static str] = &["no"];
    const VERBS: &'static [&'static str] = &["get", "list", "patch", "update", "watch"];
    const SUBRESOURCES: &'static [(&'static str, &'static [&'static str])] =
        &[("status", &["get"])];

    fn to_k8s(node: &api::Node) -> core::Node {
        convert::node(node)
    }
    fn from_k8s(node: core::Node) -> Result<api::Node, ConvertError> {
        convert::node_from_k8s(node)
    }
    fn columns() -> &'static [printers::Column] {
        printers::NODE_COLUMNS
    }
    fn row(node: &api::Node, now_ms: i64) -> Vec<Value> {
        printers::node_row(node, now_ms)
    }
}

pub struct Namespaces;
impl Kind for Namespaces {
    type Registry = NamespacesService;
    type K8s = core::Namespace;
    const PLURAL: &'static str = "namespaces";
    const SINGULAR: &'static str = "namespace";
    const SHORT_NAMES: &'static [&'static str] = &["ns"];
    const VERBS: &'static [&'static str] = &["create", "get", "list", "patch", "update", "watch"];
    const SUBRESOURCES: &'static [(&'static str, &'static [&'static str])] =
        &[("status", &["get"])];

    fn to_k8s(ns: &api::Namespace) -> core::Namespace {
        convert::namespace(ns)
    }
    fn from_k8s(ns: core::Namespace) -> Result<api::Namespace, ConvertError> {
        convert::namespace_from_k8s(ns)
    }
    fn columns() -> &'static [printers::Column] {
        printers::NAMESPACE_COLUMNS
    }
    fn row(ns: &api::Namespace, now_ms: i64) -> Vec<Value> {
        printers::namespace_row(ns, now_ms)
    }
}

pub struct Events;
impl Kind for Events {
    type Registry = EventsService;
    type K8s = core::Event;
    const PLURAL: &'static str = "events";
    const SINGULAR: &'static str = "event";
    const SHORT_NAMES: &'static [&'static str] = &["ev"];
    const VERBS: &'static [&'static str] = &["create", "delete", "get", "list", "watch"];

    fn to_k8s(event: &api::Event) -> core::Event {
        convert::event(event)
    }
    fn from_k8s(event: core::Event) -> Result<api::Event, ConvertError> {
        convert::event_from_k8s(event)
    }
    fn columns() -> &'static [printers::Column] {
        printers::EVENT_COLUMNS
    }
    fn row(event: &api::Event, now_ms: i64) -> Vec<Value> {
        printers::event_row(event, now_ms)
    }
}

/// The same events in events.k8s.io/v1's shape (`kubectl events` reads these).
pub struct EventsV1;
impl Kind for EventsV1 {
    type Registry = EventsService;
    type K8s = events_v1::Event;
    const PLURAL: &'static str = "events";
    const SINGULAR: &'static str = "event";
    const SHORT_NAMES: &'static [&'static str] = &["ev"];
    const VERBS: &'static [&'static str] = &["create", "delete", "get", "list", "watch"];

    fn to_k8s(event: &api::Event) -> events_v1::Event {
        convert::event_v1(event)
    }
    fn from_k8s(event: events_v1::Event) -> Result<api::Event, ConvertError> {
        convert::event_v1_from_k8s(event)
    }
    fn columns() -> &'static [printers::Column] {
        printers::EVENT_COLUMNS
    }
    fn row(event: &api::Event, now_ms: i64) -> Vec<Value> {
        printers::event_row(event, now_ms)
    }
}

/// The subresources of a workload: its status (written by its controller) and its scale.
const WORKLOAD_SUBRESOURCES: &[(&str, &[&str])] = &[
    ("status", &["get", "patch", "update"]),
    ("scale", &["get", "patch", "update"]),
];

pub struct ReplicaSets;
impl Kind for ReplicaSets {
    type Registry = NativeRegistry<replicasets::ReplicaSetStrategy>;
    type K8s = apps::ReplicaSet;
    const PLURAL: &'static str = "replicasets";
    const SINGULAR: &'static str = "replicaset";
    const SHORT_NAMES: &'static [&'static str] = &["rs"];
    const IN_ALL: bool = true;
    const VERBS: &'static [&'static str] = READ_WRITE;
    const SUBRESOURCES: &'static [(&'static str, &'static [&'static str])] = WORKLOAD_SUBRESOURCES;

    fn to_k8s(rs: &workloads::ReplicaSetObject) -> apps::ReplicaSet {
        native::to_k8s(rs)
    }
    fn from_k8s(rs: apps::ReplicaSet) -> Result<workloads::ReplicaSetObject, ConvertError> {
        native::from_k8s(rs)
    }
    fn columns() -> &'static [printers::Column] {
        replicasets::COLUMNS
    }
    fn row(rs: &workloads::ReplicaSetObject, now_ms: i64) -> Vec<Value> {
        replicasets::row(rs, now_ms)
    }
}

pub struct Deployments;
impl Kind for Deployments {
    type Registry = NativeRegistry<deployments::DeploymentStrategy>;
    type K8s = apps::Deployment;
    const PLURAL: &'static str = "deployments";
    const SINGULAR: &'static str = "deployment";
    const SHORT_NAMES: &'static [&'static str] = &["deploy"];
    const IN_ALL: bool = true;
    const VERBS: &'static [&'static str] = READ_WRITE;
    const SUBRESOURCES: &'static [(&'static str, &'static [&'static str])] = WORKLOAD_SUBRESOURCES;

    fn to_k8s(d: &workloads::DeploymentObject) -> apps::Deployment {
        native::to_k8s(d)
    }
    fn from_k8s(d: apps::Deployment) -> Result<workloads::DeploymentObject, ConvertError> {
        native::from_k8s(d)
    }
    fn columns() -> &'static [printers::Column] {
        deployments::COLUMNS
    }
    fn row(d: &workloads::DeploymentObject, now_ms: i64) -> Vec<Value> {
        deployments::row(d, now_ms)
    }
}

pub struct Jobs;
impl Kind for Jobs {
    type Registry = NativeRegistry<jobs::JobStrategy>;
    type K8s = k8s_openapi::api::batch::v1::Job;
    const PLURAL: &'static str = "jobs";
    const SINGULAR: &'static str = "job";
    const SHORT_NAMES: &'static [&'static str] = &[];
    const IN_ALL: bool = true;
    const VERBS: &'static [&'static str] = READ_WRITE;
    const SUBRESOURCES: &'static [(&'static str, &'static [&'static str])] =
        &[("status", &["get", "patch", "update"])];
    const DEFAULT_PROPAGATION: &'static str = "Orphan";

    fn to_k8s(job: &workloads::JobObject) -> Self::K8s {
        native::to_k8s(job)
    }
    fn from_k8s(job: Self::K8s) -> Result<workloads::JobObject, ConvertError> {
        native::from_k8s(job)
    }
    fn columns() -> &'static [printers::Column] {
        jobs::COLUMNS
    }
    fn row(job: &workloads::JobObject, now_ms: i64) -> Vec<Value> {
        jobs::row(job, now_ms)
    }
}

pub struct Services;
impl Kind for Services {
    type Registry = NativeRegistry<services::ServiceStrategy>;
    type K8s = k8s_openapi::api::core::v1::Service;
    const PLURAL: &'static str = "services";
    const SINGULAR: &'static str = "service";
    const SHORT_NAMES: &'static [&'static str] = &["svc"];
    const IN_ALL: bool = true;
    const VERBS: &'static [&'static str] = READ_WRITE;
    const SUBRESOURCES: &'static [(&'static str, &'static [&'static str])] =
        &[("status", &["get", "patch", "update"])];

    fn to_k8s(svc: &services::ServiceObject) -> Self::K8s {
        native::to_k8s(svc)
    }
    fn from_k8s(svc: Self::K8s) -> Result<services::ServiceObject, ConvertError> {
        native::from_k8s(svc)
    }
    fn columns() -> &'static [printers::Column] {
        services::COLUMNS
    }
    fn row(svc: &services::ServiceObject, now_ms: i64) -> Vec<Value> {
        services::row(svc, now_ms)
    }
}

pub struct EndpointSlices;
impl Kind for EndpointSlices {
    type Registry = NativeRegistry<endpointslices::EndpointSliceStrategy>;
    type K8s = k8s_openapi::api::discovery::v1::EndpointSlice;
    const PLURAL: &'static str = "endpointslices";
    const SINGULAR: &'static str = "endpointslice";
    const SHORT_NAMES: &'static [&'static str] = &[];
    const VERBS: &'static [&'static str] = READ_WRITE;

    fn to_k8s(slice: &endpointslices::EndpointSliceObject) -> Self::K8s {
        native::to_k8s(slice)
    }
    fn from_k8s(slice: Self::K8s) -> Result<endpointslices::EndpointSliceObject, ConvertError> {
        native::from_k8s(slice)
    }
    fn columns() -> &'static [printers::Column] {
        endpointslices::COLUMNS
    }
    fn row(slice: &endpointslices::EndpointSliceObject, now_ms: i64) -> Vec<Value> {
        endpointslices::row(slice, now_ms)
    }
}
