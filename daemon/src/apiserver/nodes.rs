//! The Nodes service: agents join (bootstrap credential in, node credential out), register
//! their node and heartbeat, each for its own node only; everyone else reads.
//!
//! Owns Node objects only. A heartbeat makes a node Ready; the node lifecycle controller
//! (`node_lifecycle`) makes a silent one NotReady. Nothing here talks to an agent.

use std::sync::Arc;

use kubelab_proto::now_ms;
use kubelab_proto::v1::{JoinRequest, JoinResponse, Node, Taint};

use super::auth::{Authenticator, Identity};
use super::node_ipam::{allocate, Cidr};
use super::node_lifecycle::{announce_ready, mark_ready};
use super::registry::{
    selected, update_object, watch_store, DeleteOptions, ListOptions, Registry, WatchEvents,
    Written,
};
use super::store::{check_version, key, prefix, Store};
use super::validation::{check_annotations, check_dns_subdomain, check_labels};
use super::ApiError;

pub struct NodesService {
    store: Arc<Store>,
    auth: Arc<Authenticator>,
    cluster_cidr: Cidr,
    node_prefix: u8,
    /// One registration at a time picks a pod CIDR, so that two never get the same.
    allocating: tokio::sync::Mutex<()>,
}

/// Nodes are read by everyone in the cluster (not by the bootstrap credential).
fn may_read(who: &Identity) -> Result<(), ApiError> {
    if *who == Identity::Bootstrap {
        return Err(who.denied("read nodes"));
    }
    Ok(())
}

fn node_ref(name: &str) -> String {
    format!("nodes {name:?}")
}

impl NodesService {
    pub fn new(
        store: Arc<Store>,
        auth: Arc<Authenticator>,
        cluster_cidr: Cidr,
        node_prefix: u8,
    ) -> Self {
        NodesService {
            store,
            auth,
            cluster_cidr,
            node_prefix,
            allocating: tokio::sync::Mutex::new(()),
        }
    }
}

impl NodesService {
    /// A node joins with the bootstrap credential and gets its own.
    pub async fn join(&self, who: &Identity, r: JoinRequest) -> Result<JoinResponse, ApiError> {
        who.require(
            &[Identity::Bootstrap],
            "join nodes (that takes the bootstrap credential)",
        )?;
        let name = r.node_name;
        check_dns_subdomain("node name", &name)?;
        let issued = self
            .auth
            .issue_node_credential(&name, !r.without_serving_certificate)
            .map_err(|e| ApiError::Internal(e.to_string()))?;
        tracing::info!(node = %name, "node joined: credential issued");
        Ok(JoinResponse {
            token: issued.token,
            peer_token: issued.peer_token,
            serving_cert: issued.serving_cert,
            serving_key: issued.serving_key,
        })
    }

    /// An agent registers its node (again, after a restart).
    pub async fn register(&self, who: &Identity, node: Node) -> Result<Node, ApiError> {
        let mut node = node;
        let meta = node.metadata.get_or_insert_with(Default::default);
        check_dns_subdomain("node name", &meta.name)?;
        if *who != Identity::Node(meta.name.clone()) {
            return Err(who.denied(&format!(
                "register node {:?} (only that node may)",
                meta.name
            )));
        }
        meta.namespace.clear();
        check_labels(&meta.labels)?;
        for taint in node.spec.iter().flat_map(|s| &s.taints) {
            check_taint(taint)?;
        }
        check_resources(node.status.as_ref())?;
        let meta = node.metadata.get_or_insert_with(Default::default);
        let key = key::<Node>("", &meta.name);
        let _allocating = self.allocating.lock().await;
        let (nodes, _) = self.store.list::<Node>(&prefix::<Node>("")).await?;
        let taken: Vec<String> = nodes
            .iter()
            .filter(|n| n.metadata.as_ref().is_some_and(|m| m.name != meta.name))
            .filter_map(|n| n.spec.as_ref().map(|s| s.pod_cidr.clone()))
            .collect();
        let (cluster, node_prefix) = (self.cluster_cidr, self.node_prefix);
        let mut came_back = false;
        let mut no_cidr = false;
        let node = self
            .store
            .update::<Node, _>(&key, |current| {
                let now = now_ms();
                let meta = node.metadata.get_or_insert_with(Default::default);
                match current {
                    // An agent restarting keeps its node's identity, age and spec (what the
                    // cluster decided about the node is not the agent's to reset).
                    Some(old) => {
                        let old_meta = old.metadata.unwrap_or_default();
                        meta.uid = old_meta.uid;
                        meta.creation_timestamp_ms = old_meta.creation_timestamp_ms;
                        // Labels an admin set stay; the agent's own are added.
                        for (k, v) in old_meta.labels {
                            meta.labels.entry(k).or_insert(v);
                        }
                        node.spec = old.spec;
                        let old_status = old.status.unwrap_or_default();
                        came_back = !old_status.ready;
                        node.status.get_or_insert_with(Default::default).conditions =
                            old_status.conditions;
                    }
                    None => {
                        if let Some(spec) = node.spec.as_mut() {
                            stamp_taints(&mut spec.taints, &[], now);
                        }
                        meta.uid = uuid::Uuid::new_v4().to_string();
                        meta.creation_timestamp_ms = now;
                        // The pod CIDR is the apiserver's to give, never a node's to claim
                        // (it could otherwise take another node's range).
                        if let Some(spec) = node.spec.as_mut() {
                            spec.pod_cidr.clear();
                        }
                    }
                }
                let spec = node.spec.get_or_insert_with(Default::default);
                if spec.pod_cidr.is_empty() {
                    // Out of ranges, the node still registers, without a pod CIDR, as in
                    // Kubernetes (hollow nodes need none; a real agent's pods then say
                    // the node has no pod CIDR).
                    match allocate(cluster, node_prefix, &taken) {
                        Some(range) => spec.pod_cidr = range.to_string(),
                        None => no_cidr = true,
                    }
                }
                mark_ready(&mut node, now);
                Ok(Some(node))
            })
            .await?;
        tracing::info!(node = %key, "registered");
        if no_cidr {
            tracing::warn!(node = %key, %cluster, node_prefix, "no pod CIDR left for the node: start the apiserver with a larger --cluster-cidr or --node-cidr-mask-size");
            super::node_lifecycle::announce_cidr_not_available(&self.store, &node).await;
        }
        if came_back {
            announce_ready(&self.store, &node).await;
        }
        Ok(node)
    }

    /// An agent says its node is alive.
    pub async fn heartbeat(&self, who: &Identity, name: String) -> Result<Node, ApiError> {
        if *who != Identity::Node(name.clone()) {
            return Err(who.denied(&format!("heartbeat for node {name:?} (only that node may)")));
        }
        let key = key::<Node>("", &name);
        let mut came_back = false;
        let node = self
            .store
            .update::<Node, _>(&key, |current| {
                let Some(mut node) = current else {
                    return Err(ApiError::NotFound(format!(
                        "node {name:?} (register it first)"
                    )));
                };
                came_back = mark_ready(&mut node, now_ms());
                Ok(Some(node))
            })
            .await?;
        if came_back {
            tracing::info!(node = %name, "heartbeat again: node is Ready");
            announce_ready(&self.store, &node).await;
        }
        Ok(node)
    }
}

impl Registry for NodesService {
    type Object = Node;
    const NAMESPACED: bool = false;
    const FIELDS: &'static [&'static str] = &["metadata.name", "spec.unschedulable"];

    fn field(node: &Node, field: &str) -> String {
        match field {
            "spec.unschedulable" => node
                .spec
                .as_ref()
                .is_some_and(|s| s.unschedulable)
                .to_string(),
            _ => String::new(),
        }
    }

    async fn get(&self, who: &Identity, _namespace: &str, name: &str) -> Result<Node, ApiError> {
        may_read(who)?;
        self.store
            .get_durable::<Node>(&key::<Node>("", name))
            .await?
            .ok_or_else(|| ApiError::NotFound(node_ref(name)))
    }

    async fn list(
        &self,
        who: &Identity,
        _namespace: &str,
        options: &ListOptions,
    ) -> Result<(Vec<Node>, u64), ApiError> {
        may_read(who)?;
        let (mut items, revision) = self.store.list::<Node>(&prefix::<Node>("")).await?;
        items.retain(|n| selected(n, options, Self::field));
        Ok((items, revision))
    }

    async fn watch(
        &self,
        who: &Identity,
        _namespace: &str,
        from_revision: u64,
        options: ListOptions,
    ) -> Result<WatchEvents<Node>, ApiError> {
        may_read(who)?;
        watch_store(
            &self.store,
            from_revision,
            prefix::<Node>(""),
            String::new(),
            options,
            Self::field,
        )
        .await
    }

    async fn create(
        &self,
        who: &Identity,
        _node: Node,
        _dry_run: bool,
    ) -> Result<Written<Node>, ApiError> {
        Err(who.denied(
            "create nodes: a node is registered by its agent (kubelabd agent, or kubelabd up --agents N)",
        ))
    }

    /// What an admin changes of a node: labels, annotations, `unschedulable` (cordon) and
    /// taints. Its pod CIDR stays as allocated; its status is its agent's.
    async fn update(
        &self,
        who: &Identity,
        node: Node,
        dry_run: bool,
    ) -> Result<Written<Node>, ApiError> {
        who.require(&[Identity::Admin], "change nodes (cordon, labels, taints)")?;
        let given = node.metadata.clone().unwrap_or_default();
        check_labels(&given.labels)?;
        check_annotations(&given.annotations)?;
        let spec = node.spec.unwrap_or_default();
        for taint in &spec.taints {
            check_taint(taint)?;
        }
        let name = given.name.clone();
        let key = key::<Node>("", &name);
        let apply = |current: Option<Node>| -> Result<Node, ApiError> {
            let Some(mut node) = current else {
                return Err(ApiError::NotFound(node_ref(&name)));
            };
            check_version(&node, given.resource_version, &node_ref(&name))?;
            let meta = node.metadata.get_or_insert_with(Default::default);
            super::registry::take_metadata(meta, &given);
            let current = node.spec.get_or_insert_with(Default::default);
            current.unschedulable = spec.unschedulable;
            let mut taints = spec.taints.clone();
            stamp_taints(&mut taints, &current.taints, now_ms());
            current.taints = taints;
            Ok(node)
        };
        let (node, written) = update_object(&self.store, &key, dry_run, apply).await?;
        if written {
            tracing::info!(node = %name, "updated by the admin");
        }
        Ok(Written::new(node))
    }

    async fn delete(
        &self,
        who: &Identity,
        _namespace: &str,
        _name: &str,
        _options: DeleteOptions,
    ) -> Result<Node, ApiError> {
        Err(who.denied(
            "delete nodes: kubelab's nodes leave when their agent stops for good; drain one with kubectl drain",
        ))
    }
}

/// A taint as Kubernetes accepts it.
fn check_taint(taint: &Taint) -> Result<(), ApiError> {
    let one = std::collections::HashMap::from([(taint.key.clone(), taint.value.clone())]);
    check_labels(&one).map_err(|e| ApiError::Invalid(format!("taint: {e}")))?;
    match taint.effect.as_str() {
        "NoSchedule" | "PreferNoSchedule" | "NoExecute" => Ok(()),
        other => Err(ApiError::Invalid(format!(
            "spec.taints[{}].effect: Unsupported value: {other:?}: supported values: \"NoExecute\", \"NoSchedule\", \"PreferNoSchedule\"",
            taint.key
        ))),
    }
}

/// A NoExecute taint carries when it was added (a pod's tolerationSeconds count from
/// then): kept from the node's same taint, else now, as kube-apiserver stamps it.
fn stamp_taints(taints: &mut [Taint], before: &[Taint], now: i64) {
    for taint in taints.iter_mut() {
        if taint.effect != "NoExecute" {
            taint.time_added_ms = 0;
            continue;
        }
        if taint.time_added_ms == 0 {
            taint.time_added_ms = before
                .iter()
                .find(|t| t.key == taint.key && t.effect == taint.effect)
                .map(|t| t.time_added_ms)
                .filter(|ms| *ms > 0)
                .unwrap_or(now);
        }
    }
}

/// What a node reports it has: no negative amounts (Kubernetes' "must be greater than or
/// equal to 0"); the scheduler adds them up in i128, so any i64 is safe beyond that.
fn check_resources(status: Option<&kubelab_proto::v1::NodeStatus>) -> Result<(), ApiError> {
    let Some(status) = status else { return Ok(()) };
    for (what, r) in [
        ("status.capacity", status.capacity.as_ref()),
        ("status.allocatable", status.allocatable.as_ref()),
    ] {
        let Some(r) = r else { continue };
        for (name, value) in [
            ("cpu", r.cpu_millis),
            ("memory", r.memory_bytes),
            ("pods", r.pods),
        ] {
            if value < 0 {
                return Err(ApiError::Invalid(format!(
                    "{what}.{name}: Invalid value: {value}: must be greater than or equal to 0"
                )));
            }
        }
    }
    Ok(())
}
