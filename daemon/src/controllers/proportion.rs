//! Scaling a Deployment in the middle of a rollout (kube-controller-manager's
//! `DeploymentController.scale` and `GetProportion`): the change in `replicas` is shared
//! among the active ReplicaSets in proportion to their sizes, so a rollout scaled from 10
//! to 30 while half done keeps its halves. Each ReplicaSet's share is its size times
//! the new `replicas + maxSurge` over the old one (the `max-replicas` annotation it was
//! last scaled with), rounded; what rounding leaves over goes to the largest. One active
//! ReplicaSet simply takes the new size; a saturated new one leaves the old at 0. Pure.

use std::cmp::Ordering;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};

use super::rollout::{self, spec_replicas, DESIRED_REPLICAS, MAX_REPLICAS};

fn annotation(rs: &ReplicaSet, key: &str) -> Option<i32> {
    rs.metadata.annotations.as_ref()?.get(key)?.parse().ok()
}

fn created_ms(rs: &ReplicaSet) -> i64 {
    kubelab_proto::k8s::time_ms(&rs.metadata.creation_timestamp)
}

/// Whether `replicas` changed since an active ReplicaSet was last scaled for it.
pub fn is_scaling_event(d: &Deployment, all: &[ReplicaSet]) -> bool {
    let replicas = d.spec.replicas.unwrap_or(1);
    all.iter()
        .filter(|rs| spec_replicas(rs) > 0)
        .any(|rs| annotation(rs, DESIRED_REPLICAS).is_some_and(|want| want != replicas))
}

/// The size each ReplicaSet (indexed as `all`) should have after a change of `replicas`.
pub fn sizes(d: &Deployment, all: &[ReplicaSet], new: Option<usize>) -> Vec<i32> {
    let replicas = d.spec.replicas.unwrap_or(1);
    let mut sizes: Vec<i32> = all.iter().map(spec_replicas).collect();
    let active: Vec<usize> = (0..all.len()).filter(|i| sizes[*i] > 0).collect();
    match active.len() {
        0 => {
            // None active: the new one, else the newest, takes them all.
            let newest = new.or_else(|| (0..all.len()).max_by_key(|i| created_ms(&all[*i])));
            if let Some(i) = newest {
                sizes[i] = replicas;
            }
            return sizes;
        }
        1 => {
            sizes[active[0]] = replicas;
            return sizes;
        }
        _ => {}
    }
    if let Some(i) = new.filter(|i| saturated(d, &all[*i])) {
        for j in active.into_iter().filter(|j| *j != i) {
            sizes[j] = 0;
        }
        return sizes;
    }
    if rollout::is_recreate(d) {
        return sizes;
    }
    let (surge, _) = rollout::fenceposts(d);
    let allowed = if replicas > 0 {
        replicas.saturating_add(surge)
    } else {
        0
    };
    let current: i32 = active.iter().map(|i| sizes[*i]).sum();
    let to_add = allowed - current;
    if to_add == 0 {
        return sizes;
    }
    // Larger first; among equals, newer first when growing, older first when shrinking.
    let mut order = active;
    order.sort_by(|a, b| {
        let by_age = created_ms(&all[*a]).cmp(&created_ms(&all[*b]));
        sizes[*b]
            .cmp(&sizes[*a])
            .then(if to_add > 0 { by_age.reverse() } else { by_age })
    });
    let mut added = 0;
    for &i in &order {
        let share = proportion(d, &all[i], allowed, to_add, added);
        sizes[i] += share;
        added += share;
    }
    let largest = order[0];
    sizes[largest] = (sizes[largest] + to_add - added).max(0);
    sizes
}

/// The new ReplicaSet holds every replica and all are available.
fn saturated(d: &Deployment, rs: &ReplicaSet) -> bool {
    let replicas = d.spec.replicas.unwrap_or(1);
    let available = rs
        .status
        .as_ref()
        .and_then(|s| s.available_replicas)
        .unwrap_or(0);
    annotation(rs, DESIRED_REPLICAS) == Some(replicas)
        && spec_replicas(rs) == replicas
        && available == replicas
}

/// One ReplicaSet's share of `to_add`, never past what is left to add.
fn proportion(d: &Deployment, rs: &ReplicaSet, allowed: i32, to_add: i32, added: i32) -> i32 {
    let size = spec_replicas(rs);
    if size == 0 || to_add == added {
        return 0;
    }
    let fraction = if d.spec.replicas == Some(0) {
        -size
    } else {
        let before = annotation(rs, MAX_REPLICAS)
            .filter(|m| *m > 0)
            .or_else(|| {
                d.status
                    .as_ref()
                    .and_then(|s| s.replicas)
                    .filter(|r| *r > 0)
            })
            .unwrap_or(size);
        let scaled = f64::from(size) * f64::from(allowed) / f64::from(before);
        // Rounded half away from zero, as Go's math.Round.
        (scaled.round() as i32) - size
    };
    let left = to_add - added;
    match to_add.cmp(&0) {
        Ordering::Greater => fraction.min(left),
        _ => fraction.max(left),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::{ReplicaSetSpec, ReplicaSetStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

    /// Surge as given, no unavailability.
    fn deployment(replicas: i32, surge: i32) -> Deployment {
        super::super::rollout::tests::deployment(
            replicas,
            IntOrString::Int(surge),
            IntOrString::Int(0),
        )
    }

    fn rs(size: i32, created_ms: i64, max_replicas: i32) -> ReplicaSet {
        ReplicaSet {
            metadata: ObjectMeta {
                creation_timestamp: kubelab_proto::k8s::time(created_ms),
                annotations: Some(
                    [(MAX_REPLICAS.to_string(), max_replicas.to_string())]
                        .into_iter()
                        .collect(),
                ),
                ..Default::default()
            },
            spec: ReplicaSetSpec {
                replicas: Some(size),
                ..Default::default()
            },
            status: Some(ReplicaSetStatus::default()),
        }
    }

    #[test]
    fn a_rollout_scaled_up_keeps_its_proportions() {
        // 10 replicas, surge 3: old 8 and new 5 (13 = 10 + 3); scaled to 20 (23 allowed).
        let t = 1_700_000_000_000;
        let all = [rs(8, t, 13), rs(5, t + 1_000, 13)];
        let sizes = sizes(&deployment(20, 3), &all, Some(1));
        assert_eq!(sizes.iter().sum::<i32>(), 23);
        assert_eq!(sizes, [14, 9]); // 8·23/13 = 14.2, 5·23/13 = 8.8
    }

    #[test]
    fn scaled_down_the_older_gives_first_and_nothing_goes_negative() {
        let t = 1_700_000_000_000;
        let all = [rs(3, t, 6), rs(3, t + 1_000, 6)];
        let sizes = sizes(&deployment(1, 1), &all, Some(1));
        assert_eq!(sizes.iter().sum::<i32>(), 2);
        assert!(sizes.iter().all(|s| *s >= 0), "{sizes:?}");
        // One active: it takes the new size.
        let one = [rs(0, t, 6), rs(4, t + 1_000, 6)];
        assert_eq!(super::sizes(&deployment(7, 1), &one, Some(1)), [0, 7]);
    }
}
