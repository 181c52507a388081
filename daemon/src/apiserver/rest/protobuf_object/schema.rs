//! The fields kubelab reads from protobuf objects: for each message, field number (from
//! Kubernetes' `generated.proto`: k8s.io/api core/v1, apps/v1, batch/v1; apimachinery
//! meta/v1, api/resource, util/intstr, runtime), JSON name, shape, and whether a zero is
//! kept (`keep`: Go pointers and fields JSON always has) or left out (`omit_zero`).
//! Lists and maps are never written empty, so the choice does not matter for them.
//! Messages must not nest in a cycle: the table's depth bounds the reader's recursion.

use super::Shape::*;
use super::{keep, omit_zero, Message};

/// The kinds read, by `apiVersion` and `kind`.
pub(super) fn root(api_version: &str, kind: &str) -> Option<&'static Message> {
    match (api_version, kind) {
        ("v1", "Namespace") => Some(&NAMESPACE),
        ("v1", "Pod") => Some(&POD),
        ("v1", "Service") => Some(&SERVICE),
        ("apps/v1", "Deployment") => Some(&DEPLOYMENT),
        ("batch/v1", "Job") => Some(&JOB),
        _ => None,
    }
}

// runtime, api/resource, util/intstr: read into JSON first, then turned into their own.

pub(super) const UNKNOWN: Message = Message {
    name: "Unknown",
    fields: &[],
};

pub(super) const TYPE_META: Message = Message {
    name: "TypeMeta",
    fields: &[keep(1, "apiVersion", Str), keep(2, "kind", Str)],
};

pub(super) const TIME: Message = Message {
    name: "Time",
    fields: &[keep(1, "seconds", Int), keep(2, "nanos", Int)],
};

pub(super) const QUANTITY: Message = Message {
    name: "Quantity",
    fields: &[keep(1, "string", Str)],
};

pub(super) const INT_OR_STRING: Message = Message {
    name: "IntOrString",
    fields: &[
        keep(1, "type", Int),
        keep(2, "intVal", Int),
        keep(3, "strVal", Str),
    ],
};

// meta/v1

const OBJECT_META: Message = Message {
    name: "ObjectMeta",
    fields: &[
        omit_zero(1, "name", Str),
        omit_zero(2, "generateName", Str),
        omit_zero(3, "namespace", Str),
        omit_zero(4, "selfLink", Str),
        omit_zero(5, "uid", Str),
        omit_zero(6, "resourceVersion", Str),
        omit_zero(7, "generation", Int),
        omit_zero(8, "creationTimestamp", Time),
        keep(9, "deletionTimestamp", Time),
        keep(10, "deletionGracePeriodSeconds", Int),
        omit_zero(11, "labels", Map(&Str)),
        omit_zero(12, "annotations", Map(&Str)),
        omit_zero(13, "ownerReferences", List(&Msg(&OWNER_REFERENCE))),
        omit_zero(14, "finalizers", List(&Str)),
    ],
};

const OWNER_REFERENCE: Message = Message {
    name: "OwnerReference",
    fields: &[
        keep(5, "apiVersion", Str),
        keep(1, "kind", Str),
        keep(3, "name", Str),
        keep(4, "uid", Str),
        keep(6, "controller", Bool),
        keep(7, "blockOwnerDeletion", Bool),
    ],
};

const LABEL_SELECTOR: Message = Message {
    name: "LabelSelector",
    fields: &[
        omit_zero(1, "matchLabels", Map(&Str)),
        omit_zero(
            2,
            "matchExpressions",
            List(&Msg(&LABEL_SELECTOR_REQUIREMENT)),
        ),
    ],
};

const LABEL_SELECTOR_REQUIREMENT: Message = Message {
    name: "LabelSelectorRequirement",
    fields: &[
        keep(1, "key", Str),
        keep(2, "operator", Str),
        omit_zero(3, "values", List(&Str)),
    ],
};

const CONDITION: Message = Message {
    name: "Condition",
    fields: &[
        keep(1, "type", Str),
        keep(2, "status", Str),
        omit_zero(3, "observedGeneration", Int),
        keep(4, "lastTransitionTime", Time),
        keep(5, "reason", Str),
        keep(6, "message", Str),
    ],
};

// core/v1

const NAMESPACE: Message = Message {
    name: "Namespace",
    fields: &[
        omit_zero(1, "metadata", Msg(&OBJECT_META)),
        omit_zero(2, "spec", Msg(&NAMESPACE_SPEC)),
        omit_zero(3, "status", Msg(&NAMESPACE_STATUS)),
    ],
};

const NAMESPACE_SPEC: Message = Message {
    name: "NamespaceSpec",
    fields: &[omit_zero(1, "finalizers", List(&Str))],
};

const NAMESPACE_STATUS: Message = Message {
    name: "NamespaceStatus",
    fields: &[omit_zero(1, "phase", Str)],
};

/// The pod's status is not read: written zero it is skipped, otherwise refused.
const POD: Message = Message {
    name: "Pod",
    fields: &[
        omit_zero(1, "metadata", Msg(&OBJECT_META)),
        omit_zero(2, "spec", Msg(&POD_SPEC)),
    ],
};

const POD_TEMPLATE_SPEC: Message = Message {
    name: "PodTemplateSpec",
    fields: &[
        omit_zero(1, "metadata", Msg(&OBJECT_META)),
        omit_zero(2, "spec", Msg(&POD_SPEC)),
    ],
};

const POD_SPEC: Message = Message {
    name: "PodSpec",
    fields: &[
        omit_zero(20, "initContainers", List(&Msg(&CONTAINER))),
        omit_zero(2, "containers", List(&Msg(&CONTAINER))),
        omit_zero(3, "restartPolicy", Str),
        keep(4, "terminationGracePeriodSeconds", Int),
        keep(5, "activeDeadlineSeconds", Int),
        omit_zero(6, "dnsPolicy", Str),
        omit_zero(7, "nodeSelector", Map(&Str)),
        omit_zero(8, "serviceAccountName", Str),
        omit_zero(9, "serviceAccount", Str),
        keep(21, "automountServiceAccountToken", Bool),
        omit_zero(10, "nodeName", Str),
        omit_zero(11, "hostNetwork", Bool),
        omit_zero(12, "hostPID", Bool),
        omit_zero(13, "hostIPC", Bool),
        keep(27, "shareProcessNamespace", Bool),
        omit_zero(15, "imagePullSecrets", List(&Msg(&LOCAL_OBJECT_REFERENCE))),
        omit_zero(16, "hostname", Str),
        omit_zero(17, "subdomain", Str),
        omit_zero(19, "schedulerName", Str),
        omit_zero(22, "tolerations", List(&Msg(&TOLERATION))),
        omit_zero(24, "priorityClassName", Str),
        keep(25, "priority", Int),
        keep(29, "runtimeClassName", Str),
        keep(30, "enableServiceLinks", Bool),
        keep(31, "preemptionPolicy", Str),
        keep(35, "setHostnameAsFQDN", Bool),
        keep(37, "hostUsers", Bool),
    ],
};

const CONTAINER: Message = Message {
    name: "Container",
    fields: &[
        keep(1, "name", Str),
        omit_zero(2, "image", Str),
        omit_zero(3, "command", List(&Str)),
        omit_zero(4, "args", List(&Str)),
        omit_zero(5, "workingDir", Str),
        omit_zero(6, "ports", List(&Msg(&CONTAINER_PORT))),
        omit_zero(7, "env", List(&Msg(&ENV_VAR))),
        omit_zero(8, "resources", Msg(&RESOURCE_REQUIREMENTS)),
        keep(24, "restartPolicy", Str),
        omit_zero(13, "terminationMessagePath", Str),
        omit_zero(20, "terminationMessagePolicy", Str),
        omit_zero(14, "imagePullPolicy", Str),
        omit_zero(16, "stdin", Bool),
        omit_zero(17, "stdinOnce", Bool),
        omit_zero(18, "tty", Bool),
    ],
};

const CONTAINER_PORT: Message = Message {
    name: "ContainerPort",
    fields: &[
        omit_zero(1, "name", Str),
        omit_zero(2, "hostPort", Int),
        keep(3, "containerPort", Int),
        omit_zero(4, "protocol", Str),
        omit_zero(5, "hostIP", Str),
    ],
};

const ENV_VAR: Message = Message {
    name: "EnvVar",
    fields: &[keep(1, "name", Str), omit_zero(2, "value", Str)],
};

const RESOURCE_REQUIREMENTS: Message = Message {
    name: "ResourceRequirements",
    fields: &[
        omit_zero(1, "limits", Map(&Quantity)),
        omit_zero(2, "requests", Map(&Quantity)),
    ],
};

const LOCAL_OBJECT_REFERENCE: Message = Message {
    name: "LocalObjectReference",
    fields: &[omit_zero(1, "name", Str)],
};

const TOLERATION: Message = Message {
    name: "Toleration",
    fields: &[
        omit_zero(1, "key", Str),
        omit_zero(2, "operator", Str),
        omit_zero(3, "value", Str),
        omit_zero(4, "effect", Str),
        keep(5, "tolerationSeconds", Int),
    ],
};

/// kubectl writes the status as `{loadBalancer: {}}`: it reads as nothing.
const SERVICE: Message = Message {
    name: "Service",
    fields: &[
        omit_zero(1, "metadata", Msg(&OBJECT_META)),
        omit_zero(2, "spec", Msg(&SERVICE_SPEC)),
        omit_zero(3, "status", Msg(&SERVICE_STATUS)),
    ],
};

const SERVICE_SPEC: Message = Message {
    name: "ServiceSpec",
    fields: &[
        omit_zero(1, "ports", List(&Msg(&SERVICE_PORT))),
        omit_zero(2, "selector", Map(&Str)),
        omit_zero(3, "clusterIP", Str),
        omit_zero(18, "clusterIPs", List(&Str)),
        omit_zero(4, "type", Str),
        omit_zero(5, "externalIPs", List(&Str)),
        omit_zero(7, "sessionAffinity", Str),
        omit_zero(8, "loadBalancerIP", Str),
        omit_zero(9, "loadBalancerSourceRanges", List(&Str)),
        omit_zero(10, "externalName", Str),
        omit_zero(11, "externalTrafficPolicy", Str),
        omit_zero(12, "healthCheckNodePort", Int),
        omit_zero(13, "publishNotReadyAddresses", Bool),
        keep(14, "sessionAffinityConfig", Msg(&SESSION_AFFINITY_CONFIG)),
        omit_zero(19, "ipFamilies", List(&Str)),
        keep(17, "ipFamilyPolicy", Str),
        keep(20, "allocateLoadBalancerNodePorts", Bool),
        keep(21, "loadBalancerClass", Str),
        keep(22, "internalTrafficPolicy", Str),
        keep(23, "trafficDistribution", Str),
    ],
};

/// A zero `targetPort` (a Go value field) means unset: left out, as for `omitempty`.
const SERVICE_PORT: Message = Message {
    name: "ServicePort",
    fields: &[
        omit_zero(1, "name", Str),
        omit_zero(2, "protocol", Str),
        keep(6, "appProtocol", Str),
        keep(3, "port", Int),
        omit_zero(4, "targetPort", IntOrString),
        omit_zero(5, "nodePort", Int),
    ],
};

const SESSION_AFFINITY_CONFIG: Message = Message {
    name: "SessionAffinityConfig",
    fields: &[keep(1, "clientIP", Msg(&CLIENT_IP_CONFIG))],
};

const CLIENT_IP_CONFIG: Message = Message {
    name: "ClientIPConfig",
    fields: &[keep(1, "timeoutSeconds", Int)],
};

const SERVICE_STATUS: Message = Message {
    name: "ServiceStatus",
    fields: &[
        omit_zero(1, "loadBalancer", Msg(&LOAD_BALANCER_STATUS)),
        omit_zero(2, "conditions", List(&Msg(&CONDITION))),
    ],
};

const LOAD_BALANCER_STATUS: Message = Message {
    name: "LoadBalancerStatus",
    fields: &[omit_zero(1, "ingress", List(&Msg(&LOAD_BALANCER_INGRESS)))],
};

const LOAD_BALANCER_INGRESS: Message = Message {
    name: "LoadBalancerIngress",
    fields: &[
        omit_zero(1, "ip", Str),
        omit_zero(2, "hostname", Str),
        keep(3, "ipMode", Str),
        omit_zero(4, "ports", List(&Msg(&PORT_STATUS))),
    ],
};

const PORT_STATUS: Message = Message {
    name: "PortStatus",
    fields: &[
        keep(1, "port", Int),
        keep(2, "protocol", Str),
        keep(3, "error", Str),
    ],
};

// apps/v1

const DEPLOYMENT: Message = Message {
    name: "Deployment",
    fields: &[
        omit_zero(1, "metadata", Msg(&OBJECT_META)),
        omit_zero(2, "spec", Msg(&DEPLOYMENT_SPEC)),
        omit_zero(3, "status", Msg(&DEPLOYMENT_STATUS)),
    ],
};

const DEPLOYMENT_SPEC: Message = Message {
    name: "DeploymentSpec",
    fields: &[
        keep(1, "replicas", Int),
        keep(2, "selector", Msg(&LABEL_SELECTOR)),
        keep(3, "template", Msg(&POD_TEMPLATE_SPEC)),
        omit_zero(4, "strategy", Msg(&DEPLOYMENT_STRATEGY)),
        omit_zero(5, "minReadySeconds", Int),
        keep(6, "revisionHistoryLimit", Int),
        omit_zero(7, "paused", Bool),
        keep(9, "progressDeadlineSeconds", Int),
    ],
};

const DEPLOYMENT_STRATEGY: Message = Message {
    name: "DeploymentStrategy",
    fields: &[
        omit_zero(1, "type", Str),
        keep(2, "rollingUpdate", Msg(&ROLLING_UPDATE_DEPLOYMENT)),
    ],
};

const ROLLING_UPDATE_DEPLOYMENT: Message = Message {
    name: "RollingUpdateDeployment",
    fields: &[
        keep(1, "maxUnavailable", IntOrString),
        keep(2, "maxSurge", IntOrString),
    ],
};

/// Conditions are not read: a status with some is refused.
const DEPLOYMENT_STATUS: Message = Message {
    name: "DeploymentStatus",
    fields: &[
        omit_zero(1, "observedGeneration", Int),
        omit_zero(2, "replicas", Int),
        omit_zero(3, "updatedReplicas", Int),
        omit_zero(7, "readyReplicas", Int),
        omit_zero(4, "availableReplicas", Int),
        omit_zero(5, "unavailableReplicas", Int),
        keep(9, "terminatingReplicas", Int),
        keep(8, "collisionCount", Int),
    ],
};

// batch/v1

const JOB: Message = Message {
    name: "Job",
    fields: &[
        omit_zero(1, "metadata", Msg(&OBJECT_META)),
        omit_zero(2, "spec", Msg(&JOB_SPEC)),
        omit_zero(3, "status", Msg(&JOB_STATUS)),
    ],
};

/// Not read: podFailurePolicy (11), successPolicy (16).
const JOB_SPEC: Message = Message {
    name: "JobSpec",
    fields: &[
        keep(1, "parallelism", Int),
        keep(2, "completions", Int),
        keep(3, "activeDeadlineSeconds", Int),
        keep(7, "backoffLimit", Int),
        keep(12, "backoffLimitPerIndex", Int),
        keep(13, "maxFailedIndexes", Int),
        keep(4, "selector", Msg(&LABEL_SELECTOR)),
        keep(5, "manualSelector", Bool),
        keep(6, "template", Msg(&POD_TEMPLATE_SPEC)),
        keep(8, "ttlSecondsAfterFinished", Int),
        keep(9, "completionMode", Str),
        keep(10, "suspend", Bool),
        keep(14, "podReplacementPolicy", Str),
        keep(15, "managedBy", Str),
    ],
};

/// Not read: conditions (1), uncountedTerminatedPods (8).
const JOB_STATUS: Message = Message {
    name: "JobStatus",
    fields: &[
        keep(2, "startTime", Time),
        keep(3, "completionTime", Time),
        omit_zero(4, "active", Int),
        omit_zero(5, "succeeded", Int),
        omit_zero(6, "failed", Int),
        keep(11, "terminating", Int),
        omit_zero(7, "completedIndexes", Str),
        keep(10, "failedIndexes", Str),
        keep(9, "ready", Int),
    ],
};
