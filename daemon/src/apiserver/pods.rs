//! Pods in the API: the rules of a pod's life, whatever way the request came in.
//!
//! Owns who may do what to a pod (the admin creates, relabels and deletes; the scheduler
//! binds; a node reads and writes only the pods bound to it), the admission of new pods
//! (validation, defaults, Pod Security) and when a pod is really removed. It never runs
//! containers: deleting a bound pod only marks it, and the agent of its node finishes
//! the delete once the containers are stopped. Logs and exec go to the agent through
//! `agent_proxy`.

use std::sync::Arc;

use kubelab_proto::k8s::defaults::{self, DEFAULT_TOLERATION_SECONDS};
use kubelab_proto::now_ms;
use kubelab_proto::v1::{Namespace, Node, Pod, PodSpec, PodStatus, Toleration};

use super::agent_proxy::AgentProxy;
use super::auth::{Authenticator, Identity};
use super::pod_security::{self, Level, Policy};
use super::registry::{
    selected, update_object, watch_store, DeleteOptions, ListOptions, Registry, WatchEvents,
    Written,
};
use super::store::{check_version, key, prefix, Store};
use super::validation::{check_annotations, check_grace_period, check_labels};
use super::validation::{check_supported, validate_and_default_pod};
use super::ApiError;

pub struct PodsService {
    store: Arc<Store>,
    /// The Pod Security level of namespaces without the labels (`--pod-security-default`).
    pod_security_default: Level,
    default_tolerations: DefaultTolerations,
    pub proxy: AgentProxy,
}

/// How long pods stay on a node that is not ready or unreachable unless they say
/// otherwise (kube-apiserver's DefaultTolerationSeconds admission).
#[derive(Clone, Copy, Debug)]
pub struct DefaultTolerations {
    pub not_ready: i64,
    pub unreachable: i64,
}

impl DefaultTolerations {
    /// Adds the tolerations the pod lacks, when the lab chose other seconds than
    /// Kubernetes' 300; those of 300 are added when a pod is written out
    /// (`defaults::tolerations`), so they cost no bytes in the store.
    fn add_to(&self, spec: &mut PodSpec) {
        if self.not_ready == DEFAULT_TOLERATION_SECONDS
            && self.unreachable == DEFAULT_TOLERATION_SECONDS
        {
            return; // the usual case, on every create: nothing to store
        }
        let missing: Vec<String> = defaults::tolerations(&spec.tolerations)
            .filter_map(|t| t.key)
            .collect();
        for key in missing {
            let seconds = if key == super::node_lifecycle::NOT_READY {
                self.not_ready
            } else {
                self.unreachable
            };
            if seconds != DEFAULT_TOLERATION_SECONDS {
                spec.tolerations.push(Toleration {
                    key,
                    operator: "Exists".into(),
                    value: String::new(),
                    effect: "NoExecute".into(),
                    toleration_seconds: Some(seconds),
                });
            }
        }
    }
}

impl PodsService {
    pub fn new(
        store: Arc<Store>,
        auth: Arc<Authenticator>,
        pod_security_default: Level,
        default_tolerations: DefaultTolerations,
    ) -> Self {
        PodsService {
            proxy: AgentProxy::new(store.clone(), auth),
            store,
            pod_security_default,
            default_tolerations,
        }
    }

    /// PodSecurity: the pod's namespace's levels (its labels, else the cluster default);
    /// refused below enforce, a warning (returned) below warn. A namespace without an
    /// object (kubelab's implicit namespaces) has the cluster default.
    fn admit(&self, pod: &Pod) -> Result<Option<String>, ApiError> {
        let namespace = pod
            .metadata
            .as_ref()
            .map(|m| namespace_or_default(&m.namespace))
            .unwrap_or("default");
        let labels = self
            .store
            .get::<Namespace>(&key::<Namespace>("", namespace))?
            .and_then(|n| n.metadata)
            .map(|m| m.labels)
            .unwrap_or_default();
        let policy = Policy::from_labels(&labels, self.pod_security_default);
        pod_security::admit(policy, pod)
    }
}

pub fn namespace_or_default(ns: &str) -> &str {
    if ns.is_empty() {
        "default"
    } else {
        ns
    }
}

pub fn pod_key(namespace: &str, name: &str) -> String {
    key::<Pod>(namespace_or_default(namespace), name)
}

/// How Kubernetes names a pod in its messages: `pods "web"`.
pub fn pod_ref(name: &str) -> String {
    format!("pods {name:?}")
}

/// Node restriction: a node reads and writes only the pods bound to it.
fn own_pod(who: &Identity, pod: &Pod, name: &str) -> Result<(), ApiError> {
    let Identity::Node(node) = who else {
        return Ok(());
    };
    let bound_to = pod
        .spec
        .as_ref()
        .map(|s| s.node_name.as_str())
        .unwrap_or("");
    if bound_to == node {
        Ok(())
    } else {
        Err(ApiError::Forbidden(format!(
            "{} is forbidden: {who} may only act on pods bound to it",
            pod_ref(name)
        )))
    }
}

fn may_see(who: &Identity, pod: &Pod, name: &str) -> Result<(), ApiError> {
    match who {
        Identity::Admin | Identity::Scheduler | Identity::ControllerManager => Ok(()),
        Identity::Node(_) => own_pod(who, pod, name),
        Identity::Bootstrap | Identity::ClusterDns => Err(who.denied("read pods")),
    }
}

/// A node lists and watches only its own pods (the field selector `spec.nodeName` set to
/// itself).
fn may_list(who: &Identity, options: &ListOptions) -> Result<(), ApiError> {
    match who {
        Identity::Admin | Identity::Scheduler | Identity::ControllerManager => Ok(()),
        Identity::Node(node) if options.fields.required("spec.nodeName") == Some(node) => Ok(()),
        Identity::Node(_) => {
            Err(who
                .denied("list pods other than its own (select them with spec.nodeName=<its name>)"))
        }
        Identity::Bootstrap | Identity::ClusterDns => Err(who.denied("list pods")),
    }
}

/// The pod a write applies to: it must exist and, when the caller names a uid, be that
/// pod and not a newer one of the same name.
fn existing(current: Option<Pod>, name: &str, uid: &str) -> Result<Pod, ApiError> {
    let pod = current.ok_or_else(|| ApiError::NotFound(pod_ref(name)))?;
    let current_uid = pod
        .metadata
        .as_ref()
        .map(|m| m.uid.as_str())
        .unwrap_or_default();
    if !uid.is_empty() && uid != current_uid {
        return Err(ApiError::Conflict(format!(
            "Precondition failed: UID in precondition: {uid}, UID in object meta: {current_uid}"
        )));
    }
    Ok(pod)
}

/// Five characters from Kubernetes' alphabet for generated names (no vowels, no look-alikes).
fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    uuid::Uuid::new_v4()
        .as_bytes()
        .iter()
        .take(5)
        .map(|b| ALPHABET[usize::from(*b) % ALPHABET.len()] as char)
        .collect()
}

/// `generateName` asked for a name: the prefix and five random characters.
pub fn generate_name(meta: &mut kubelab_proto::v1::ObjectMeta) {
    if meta.name.is_empty() && !meta.generate_name.is_empty() {
        meta.name = format!("{}{}", meta.generate_name, random_suffix());
    }
}

impl Registry for PodsService {
    type Object = Pod;
    const NAMESPACED: bool = true;
    const FIELDS: &'static [&'static str] = &[
        "metadata.name",
        "metadata.namespace",
        "spec.nodeName",
        "spec.restartPolicy",
        "spec.schedulerName",
        "status.phase",
        "status.podIP",
    ];

    fn field(pod: &Pod, field: &str) -> String {
        let spec = pod.spec.clone().unwrap_or_default();
        let status = pod.status.clone().unwrap_or_default();
        match field {
            "spec.nodeName" => spec.node_name,
            "spec.restartPolicy" => spec.restart_policy,
            "spec.schedulerName" => "default-scheduler".into(),
            "status.phase" => status.phase,
            "status.podIP" => status.pod_ip,
            _ => String::new(),
        }
    }

    async fn get(&self, who: &Identity, namespace: &str, name: &str) -> Result<Pod, ApiError> {
        let key = pod_key(namespace, name);
        let pod = self
            .store
            .get_durable::<Pod>(&key)
            .await?
            .ok_or_else(|| ApiError::NotFound(pod_ref(name)))?;
        may_see(who, &pod, name)?;
        Ok(pod)
    }

    async fn list(
        &self,
        who: &Identity,
        namespace: &str,
        options: &ListOptions,
    ) -> Result<(Vec<Pod>, u64), ApiError> {
        may_list(who, options)?;
        let (mut items, revision) = self.store.list::<Pod>(&prefix::<Pod>(namespace)).await?;
        items.retain(|p| selected(p, options, Self::field));
        Ok((items, revision))
    }

    async fn watch(
        &self,
        who: &Identity,
        namespace: &str,
        from_revision: u64,
        options: ListOptions,
    ) -> Result<WatchEvents<Pod>, ApiError> {
        may_list(who, &options)?;
        // The store skips other nodes' pods without decoding them.
        let node = options
            .fields
            .required("spec.nodeName")
            .unwrap_or_default()
            .to_string();
        watch_store(
            &self.store,
            from_revision,
            prefix::<Pod>(namespace),
            node,
            options,
            Self::field,
        )
        .await
    }

    async fn create(
        &self,
        who: &Identity,
        pod: Pod,
        dry_run: bool,
    ) -> Result<Written<Pod>, ApiError> {
        who.require_workloads("create pods")?;
        let mut pod = pod;
        generate_name(pod.metadata.get_or_insert_with(Default::default));
        let mut pod = validate_and_default_pod(pod)?;
        self.default_tolerations
            .add_to(pod.spec.get_or_insert_with(Default::default));
        check_annotations(&pod.metadata.clone().unwrap_or_default().annotations)?;
        let warning = self.admit(&pod)?;
        check_supported(&pod)?;
        let meta = pod.metadata.get_or_insert_with(Default::default);
        if meta.resource_version != 0 {
            return Err(ApiError::Invalid(
                "metadata.resourceVersion: Invalid value: must be empty on create (resourceVersion should not be set on objects to be created)".into(),
            ));
        }
        let key = pod_key(&meta.namespace, &meta.name);
        let name = meta.name.clone();
        meta.uid = uuid::Uuid::new_v4().to_string();
        meta.creation_timestamp_ms = now_ms();
        meta.deletion_timestamp_ms = 0;
        meta.deletion_grace_period_seconds = 0;
        meta.generation = 1;
        pod.status = Some(PodStatus {
            phase: "Pending".into(),
            ..Default::default()
        });
        let pod = if dry_run {
            if self.store.get::<Pod>(&key)?.is_some() {
                return Err(ApiError::AlreadyExists(pod_ref(&name)));
            }
            pod
        } else {
            let pod = self
                .store
                .update::<Pod, _>(&key, |current| match current {
                    Some(_) => Err(ApiError::AlreadyExists(pod_ref(&name))),
                    None => Ok(Some(pod)),
                })
                .await?;
            tracing::info!(pod = %key, "created");
            pod
        };
        Ok(Written {
            object: pod,
            warnings: warning.into_iter().collect(),
        })
    }

    async fn update(
        &self,
        who: &Identity,
        pod: Pod,
        dry_run: bool,
    ) -> Result<Written<Pod>, ApiError> {
        who.require_workloads("update pods")?;
        let given = pod.metadata.clone().unwrap_or_default();
        let key = pod_key(&given.namespace, &given.name);
        let name = given.name.clone();
        check_labels(&given.labels)?;
        check_annotations(&given.annotations)?;
        let apply = |current: Option<Pod>| -> Result<Pod, ApiError> {
            let mut stored = existing(current, &name, &given.uid)?;
            check_version(&stored, given.resource_version, &pod_ref(&name))?;
            // The spec as the client sent it must be the stored one, defaults and all.
            let mut proposed = pod.clone();
            proposed.metadata = stored.metadata.clone();
            let proposed = validate_and_default_pod(proposed)?;
            let mut expected = stored.spec.clone().unwrap_or_default();
            let mut sent = proposed.spec.clone().unwrap_or_default();
            self.default_tolerations.add_to(&mut sent);
            // The scheduler's binding is not the client's to change or keep.
            sent.node_name = expected.node_name.clone();
            expected.tolerations.sort_by(|a, b| a.key.cmp(&b.key));
            sent.tolerations.sort_by(|a, b| a.key.cmp(&b.key));
            // Compared as Kubernetes writes them: an unset field and its default are one.
            let written = kubelab_proto::k8s::pod_spec;
            if written(&sent) != written(&expected) {
                return Err(ApiError::Invalid(
                    "spec: Forbidden: pod updates may not change fields of the spec (kubelab does not change a pod's containers in place, images included: delete and re-create the pod)".into(),
                ));
            }
            let meta = stored.metadata.get_or_insert_with(Default::default);
            super::registry::take_metadata(meta, &given);
            Ok(stored)
        };
        let (pod, written) = update_object(&self.store, &key, dry_run, apply).await?;
        if written {
            tracing::info!(pod = %key, "metadata updated");
        }
        Ok(Written::new(pod))
    }

    async fn delete(
        &self,
        who: &Identity,
        namespace: &str,
        name: &str,
        options: DeleteOptions,
    ) -> Result<Pod, ApiError> {
        let key = pod_key(namespace, name);
        if let Some(seconds) = options.grace_period_seconds {
            check_grace_period(seconds)?;
        }
        // Forced with grace period 0: removed at once (`kubectl delete --force --grace-period=0`),
        // the agent stopping the containers afterwards.
        let immediate = options.force && options.grace_period_seconds == Some(0);
        // A node only finishes the deletes of its own pods (forced, once they are stopped).
        match who {
            Identity::Admin | Identity::ControllerManager => {}
            Identity::Node(_) if immediate => {}
            _ => return Err(who.denied("delete pods")),
        }
        let mut removed = false;
        let decide = |current: Option<Pod>, removed: &mut bool| -> Result<Option<Pod>, ApiError> {
            let mut pod = existing(current, name, &options.uid)?;
            own_pod(who, &pod, name)?;
            check_version(&pod, options.resource_version, &pod_ref(name))?;
            let bound = pod.spec.as_ref().is_some_and(|s| !s.node_name.is_empty());
            // An unbound pod has no containers to stop; a forced delete skips the wait.
            if !bound || immediate {
                *removed = true;
                return Ok(Some(pod));
            }
            let grace = options
                .grace_period_seconds
                .unwrap_or_else(|| {
                    pod.spec
                        .as_ref()
                        .map(|s| s.termination_grace_period_seconds)
                        .unwrap_or(30)
                })
                .max(0);
            let meta = pod.metadata.get_or_insert_with(Default::default);
            if meta.deletion_timestamp_ms == 0 || grace < meta.deletion_grace_period_seconds {
                // As in Kubernetes, a second delete may shorten the grace period, never lengthen it.
                meta.deletion_timestamp_ms = now_ms();
                meta.deletion_grace_period_seconds = grace;
            }
            Ok(Some(pod))
        };
        if options.dry_run {
            let pod = decide(self.store.get::<Pod>(&key)?, &mut removed)?;
            return pod.ok_or_else(|| ApiError::NotFound(pod_ref(name)));
        }
        let pod = self
            .store
            .update::<Pod, _>(&key, |current| {
                let decided = decide(current, &mut removed)?;
                Ok(if removed { None } else { decided })
            })
            .await?;
        if removed {
            // The store answers a delete with the object as it was, as kube-apiserver does.
            tracing::info!(pod = %key, "removed");
            return Ok(pod);
        }
        tracing::info!(pod = %key, "marked for deletion: the agent stops its containers");
        Ok(pod)
    }
}

impl PodsService {
    /// The scheduler's one write: `spec.nodeName`, set once.
    pub async fn bind(
        &self,
        who: &Identity,
        namespace: &str,
        name: &str,
        node_name: &str,
        uid: &str,
        resource_version: u64,
    ) -> Result<Pod, ApiError> {
        who.require_cluster("bind pods to nodes")?;
        if self
            .store
            .get::<Node>(&key::<Node>("", node_name))?
            .is_none()
        {
            return Err(ApiError::NotFound(format!("nodes {node_name:?}")));
        }
        self.store
            .update::<Pod, _>(&pod_key(namespace, name), |current| {
                let mut pod = existing(current, name, uid)?;
                check_version(&pod, resource_version, &pod_ref(name))?;
                let spec = pod.spec.get_or_insert_with(Default::default);
                if !spec.node_name.is_empty() {
                    return Err(ApiError::Conflict(format!(
                        "Operation cannot be fulfilled on {}: pod {name} is already assigned to node {:?}",
                        pod_ref(name),
                        spec.node_name
                    )));
                }
                if pod
                    .metadata
                    .as_ref()
                    .is_some_and(|m| m.deletion_timestamp_ms != 0)
                {
                    return Err(ApiError::FailedPrecondition(format!(
                        "{} is being deleted",
                        pod_ref(name)
                    )));
                }
                spec.node_name = node_name.to_string();
                Ok(Some(pod))
            })
            .await
    }

    /// The agents' one write: the status of a pod bound to their node.
    pub async fn update_status(
        &self,
        who: &Identity,
        namespace: &str,
        name: &str,
        uid: &str,
        resource_version: u64,
        status: Option<PodStatus>,
    ) -> Result<Pod, ApiError> {
        if !matches!(who, Identity::Node(_)) {
            return Err(who.denied("write pod status (only the pod's node does)"));
        }
        let key = pod_key(namespace, name);
        self.store
            .update::<Pod, _>(&key, |current| {
                let mut pod = existing(current, name, uid)?;
                own_pod(who, &pod, name)?;
                check_version(&pod, resource_version, &pod_ref(name))?;
                pod.status = status.clone();
                Ok(Some(pod))
            })
            .await
    }
}
