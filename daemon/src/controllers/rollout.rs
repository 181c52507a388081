//! The arithmetic of a Deployment's rollout, as kube-controller-manager's
//! `deployment/util` does it: the pod-template-hash that names a ReplicaSet, `maxSurge`
//! and `maxUnavailable` resolved against the replicas (percentages rounded as Kubernetes
//! rounds them), how far a new ReplicaSet may grow and the old ones shrink, and the
//! revision annotations. Pure functions: no client, no cache.

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

pub const REVISION: &str = "deployment.kubernetes.io/revision";
pub const DESIRED_REPLICAS: &str = "deployment.kubernetes.io/desired-replicas";
pub const MAX_REPLICAS: &str = "deployment.kubernetes.io/max-replicas";
pub const POD_TEMPLATE_HASH: &str = "pod-template-hash";

/// The characters Kubernetes writes generated names with (no vowels, no look-alikes).
const ALPHANUMS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// The hash of a template (and the collision count), as a label value: FNV-1a over the
/// template's JSON, its decimal digits mapped onto `ALPHANUMS` as Kubernetes encodes it.
pub fn template_hash(template: &PodTemplateSpec, collision_count: Option<i32>) -> String {
    let mut hash: u32 = 0x811c_9dc5;
    let mut feed = |bytes: &[u8]| {
        for b in bytes {
            hash ^= u32::from(*b);
            hash = hash.wrapping_mul(0x0100_0193);
        }
    };
    feed(&serde_json::to_vec(template).unwrap_or_default());
    if let Some(count) = collision_count {
        feed(&count.to_le_bytes());
    }
    hash.to_string()
        .bytes()
        .map(|b| char::from(ALPHANUMS[usize::from(b) % ALPHANUMS.len()]))
        .collect()
}

/// A template without its pod-template-hash label: what a ReplicaSet's template is
/// compared by.
pub fn without_hash(template: &PodTemplateSpec) -> PodTemplateSpec {
    let mut t = template.clone();
    if let Some(labels) = t.metadata.as_mut().and_then(|m| m.labels.as_mut()) {
        labels.remove(POD_TEMPLATE_HASH);
    }
    t
}

/// `value` of `total`: a number, or a percentage rounded up or down.
fn scaled(value: Option<&IntOrString>, total: i32, round_up: bool, default: i32) -> i32 {
    match value {
        None => default,
        Some(IntOrString::Int(n)) => (*n).max(0),
        Some(IntOrString::String(text)) => {
            let percent = text
                .trim_end_matches('%')
                .parse::<i64>()
                .unwrap_or(0)
                .clamp(0, 100);
            let product = percent * i64::from(total.max(0));
            let result = if round_up {
                (product + 99) / 100
            } else {
                product / 100
            };
            i32::try_from(result).unwrap_or(i32::MAX)
        }
    }
}

/// `(maxSurge, maxUnavailable)` in pods. Surge rounds up, unavailability down; both 0
/// would never progress, so unavailability is then 1 (Kubernetes' rule).
pub fn fenceposts(d: &Deployment) -> (i32, i32) {
    let replicas = d.spec.replicas.unwrap_or(1);
    let rolling = d
        .spec
        .strategy
        .as_ref()
        .and_then(|s| s.rolling_update.clone())
        .unwrap_or_default();
    let surge = scaled(rolling.max_surge.as_ref(), replicas, true, 0);
    let unavailable = scaled(rolling.max_unavailable.as_ref(), replicas, false, 0);
    if surge == 0 && unavailable == 0 {
        (0, 1)
    } else {
        (surge, unavailable)
    }
}

pub fn is_recreate(d: &Deployment) -> bool {
    d.spec.strategy.as_ref().and_then(|s| s.type_.as_deref()) == Some("Recreate")
}

pub fn spec_replicas(rs: &ReplicaSet) -> i32 {
    rs.spec.replicas.unwrap_or(1)
}

fn available(rs: &ReplicaSet) -> i32 {
    rs.status
        .as_ref()
        .and_then(|s| s.available_replicas)
        .unwrap_or(0)
}

/// The replicas the new ReplicaSet should have now (`NewRSNewReplicas`): for a rolling
/// update, grown as far as `maxSurge` allows above the desired total.
pub fn new_rs_replicas(d: &Deployment, all: &[&ReplicaSet], new: &ReplicaSet) -> i32 {
    let replicas = d.spec.replicas.unwrap_or(1);
    if is_recreate(d) {
        return replicas;
    }
    let (surge, _) = fenceposts(d);
    let current: i32 = all.iter().map(|rs| spec_replicas(rs)).sum();
    let max_total = replicas.saturating_add(surge);
    if current >= max_total {
        return spec_replicas(new);
    }
    let grow = (max_total - current)
        .min(replicas - spec_replicas(new))
        .max(0);
    spec_replicas(new) + grow
}

/// How many old pods a rolling update may take down now (`maxScaledDown`), keeping at
/// least `replicas - maxUnavailable` available, and counting the new ReplicaSet's
/// unavailable pods as already down.
pub fn old_scale_down_room(d: &Deployment, all: &[&ReplicaSet], new: Option<&ReplicaSet>) -> i32 {
    let replicas = d.spec.replicas.unwrap_or(1);
    let (_, unavailable) = fenceposts(d);
    let min_available = replicas - unavailable;
    let all_pods: i32 = all.iter().map(|rs| spec_replicas(rs)).sum();
    let new_unavailable = new.map_or(0, |rs| (spec_replicas(rs) - available(rs)).max(0));
    all_pods - min_available - new_unavailable
}

/// Available pods beyond the minimum, which old ReplicaSets may give up.
pub fn available_surplus(d: &Deployment, all: &[&ReplicaSet]) -> i32 {
    let replicas = d.spec.replicas.unwrap_or(1);
    let (_, unavailable) = fenceposts(d);
    let available: i32 = all.iter().map(|rs| available(rs)).sum();
    available - (replicas - unavailable)
}

/// A ReplicaSet's revision annotation (0 when it has none).
pub fn revision(rs: &ReplicaSet) -> i64 {
    rs.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(REVISION))
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::{DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment};

    /// A RollingUpdate Deployment (also the proportional scaling tests').
    pub(in crate::controllers) fn deployment(
        replicas: i32,
        surge: IntOrString,
        unavailable: IntOrString,
    ) -> Deployment {
        Deployment {
            spec: DeploymentSpec {
                replicas: Some(replicas),
                strategy: Some(DeploymentStrategy {
                    type_: Some("RollingUpdate".into()),
                    rolling_update: Some(RollingUpdateDeployment {
                        max_surge: Some(surge),
                        max_unavailable: Some(unavailable),
                    }),
                }),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn percentages_round_as_kubernetes_rounds_them() {
        let pct = |s: &str| IntOrString::String(s.into());
        // 25% of 10: surge 2.5 → 3 (up), unavailable 2.5 → 2 (down).
        assert_eq!(fenceposts(&deployment(10, pct("25%"), pct("25%"))), (3, 2));
        // 25% of 1: surge 1, unavailable 0.
        assert_eq!(fenceposts(&deployment(1, pct("25%"), pct("25%"))), (1, 0));
        // Both 0: unavailability 1, or nothing could ever change.
        assert_eq!(
            fenceposts(&deployment(3, IntOrString::Int(0), pct("10%"))),
            (0, 1)
        );
    }

    #[test]
    fn a_template_hash_is_stable_and_made_of_safe_characters() {
        let t = PodTemplateSpec::default();
        let h = template_hash(&t, None);
        assert_eq!(h, template_hash(&t, None));
        assert_ne!(h, template_hash(&t, Some(1)));
        assert!(h.bytes().all(|b| ALPHANUMS.contains(&b)), "{h}");
    }
}
