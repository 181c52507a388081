//! `kubelab trace pod NAME`: the pod's path through the seven steps of the workflow, each
//! with its time (from the pod's creation), how long it took, and what happened. A pod a
//! ReplicaSet made starts earlier: with the Deployment's scaling of that ReplicaSet and
//! the ReplicaSet controller's creation of the pod (their events).
//!
//! Reads only what the components already record — the pod's metadata and status, its
//! events, and the image's labels in the registry (`kubelab image build` records when it
//! built the image and how long that took) — and never asks an agent. A step with no
//! record says so.

use std::time::Duration;

use kubelab_proto::v1::{Event, Pod};

use super::check_pod_kind;
use crate::api::{Api, Connection};
use crate::image::ImageFacts;
use crate::output::Table;

/// The labels `kubelabd build` puts on every image it builds.
const BUILT_LABEL: &str = "io.kubelab.image.built";
const BUILD_SECONDS_LABEL: &str = "io.kubelab.image.build-seconds";
/// How long to wait for the registry before tracing without the image's labels.
const REGISTRY_TIMEOUT: Duration = Duration::from_secs(3);

pub async fn run(
    server: &Connection,
    namespace: &str,
    kind: &str,
    name: &str,
) -> anyhow::Result<()> {
    check_pod_kind(kind)?;
    let mut api = Api::connect(server).await?;
    let (pod, events) = api.pod_and_events(namespace, name).await?;
    // The first container's image, pinned to the digest the agent ran if it said.
    let spec = pod.spec.clone().unwrap_or_default();
    let facts = match spec.containers.first() {
        Some(c) => {
            let digest = pod
                .status
                .as_ref()
                .and_then(|s| s.container_statuses.iter().find(|cs| cs.name == c.name))
                .map(|cs| cs.image_id.clone())
                .filter(|d| !d.is_empty());
            match tokio::time::timeout(
                REGISTRY_TIMEOUT,
                crate::image::facts(&c.image, digest.as_deref()),
            )
            .await
            {
                Ok(Ok(facts)) => Ok(facts),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err(format!("the registry of {} did not answer", c.image)),
            }
        }
        None => Err("the pod has no container".into()),
    };
    let origin = origin(&mut api, &pod).await?;
    print!("{}", trace(&pod, &events, &facts, origin.as_ref()));
    Ok(())
}

/// Who made a workload's pod, from the events its makers recorded.
pub struct Origin {
    pub replicaset: String,
    /// The ReplicaSet controller's `SuccessfulCreate` naming this pod.
    pub created: Option<Event>,
    /// The Deployment controller's last `ScalingReplicaSet` of that ReplicaSet before it.
    pub scaled: Option<Event>,
}

/// The origin of a pod whose controller is a ReplicaSet; none for a bare pod.
async fn origin(api: &mut Api, pod: &Pod) -> anyhow::Result<Option<Origin>> {
    let meta = pod.metadata.clone().unwrap_or_default();
    let Some(owner) = meta
        .owner_references
        .iter()
        .find(|o| o.controller && o.kind == "ReplicaSet")
    else {
        return Ok(None);
    };
    let created = api
        .events_of(&meta.namespace, &owner.uid)
        .await?
        .into_iter()
        .find(|e| {
            e.reason == "SuccessfulCreate" && e.message.ends_with(&format!(": {}", meta.name))
        });
    let scaled = api
        .events_of(&meta.namespace, "")
        .await?
        .into_iter()
        .filter(|e| {
            e.reason == "ScalingReplicaSet"
                && e.message.contains(&format!("replica set {} ", owner.name))
                && e.timestamp_ms <= created.as_ref().map_or(i64::MAX, |c| c.timestamp_ms)
        })
        .max_by_key(|e| e.timestamp_ms);
    Ok(Some(Origin {
        replicaset: owner.name.clone(),
        created,
        scaled,
    }))
}

/// One step's line: when (ms since the pod's creation, if known) and what happened.
struct Step {
    what: &'static str,
    at_ms: Option<i64>,
    /// How long the step took, when it is known apart from the step before it.
    took_ms: Option<i64>,
    detail: String,
}

/// The seven steps as a table. Times are relative to the pod's creation; the duration of a
/// step is the time since the previous step that has a time, unless the step knows its own.
pub fn trace(
    pod: &Pod,
    events: &[Event],
    image: &Result<ImageFacts, String>,
    origin: Option<&Origin>,
) -> String {
    let meta = pod.metadata.clone().unwrap_or_default();
    let spec = pod.spec.clone().unwrap_or_default();
    let status = pod.status.clone().unwrap_or_default();
    let created = meta.creation_timestamp_ms;
    let since = |ms: i64| (ms > 0).then(|| ms - created);
    let first = |reason: &str| events.iter().find(|e| e.reason == reason);
    let all = |reason: &'static str| events.iter().filter(move |e| e.reason == reason);
    let images: Vec<&str> = spec.containers.iter().map(|c| c.image.as_str()).collect();
    let mut steps = image_steps(&images, image, created);
    if let Some(scaled) = origin.and_then(|o| o.scaled.as_ref()) {
        let deployment = scaled
            .involved_object
            .as_ref()
            .map(|o| o.name.clone())
            .unwrap_or_default();
        steps.push(Step {
            what: "3 deployment scaled",
            at_ms: Some(scaled.timestamp_ms - created),
            took_ms: None,
            detail: format!(
                "deployment {deployment} (deployment-controller): {}",
                scaled.message
            ),
        });
    }
    let made_by = match origin {
        Some(Origin {
            replicaset,
            created: Some(e),
            ..
        }) => {
            format!(
                "; made by replica set {replicaset} (replicaset-controller: {})",
                e.message
            )
        }
        Some(Origin { replicaset, .. }) => format!("; made by replica set {replicaset}"),
        None => String::new(),
    };
    steps.extend([Step {
        what: "3 pod created",
        at_ms: Some(0),
        took_ms: None,
        detail: format!(
            "the apiserver stored {}/{}, Pending{made_by}",
            meta.namespace, meta.name
        ),
    }]);
    steps.push(match first("Scheduled") {
        Some(e) => Step {
            what: "4 scheduled",
            at_ms: since(e.timestamp_ms),
            took_ms: None,
            detail: e.message.clone(),
        },
        None => Step {
            what: "4 scheduled",
            at_ms: None,
            took_ms: None,
            detail: match first("FailedScheduling") {
                Some(e) => format!("not yet: {}", e.message),
                None => "not yet (is the scheduler running?)".into(),
            },
        },
    });
    steps.push(Step {
        what: "5 accepted by the agent",
        at_ms: since(status.start_time_ms),
        took_ms: None,
        detail: if status.start_time_ms > 0 {
            format!(
                "the agent of {} took the pod (status.startTime)",
                spec.node_name
            )
        } else if spec.node_name.is_empty() {
            "not yet: no node".into()
        } else {
            format!("not yet: is the agent of {} running?", spec.node_name)
        },
    });
    let pulled: Vec<&Event> = all("Pulled").collect();
    let pulling = first("Pulling");
    steps.push(Step {
        what: "6 image pulled",
        at_ms: pulled.last().and_then(|e| since(e.timestamp_ms)),
        took_ms: None,
        detail: if pulled.is_empty() {
            match (first("Failed"), pulling) {
                (Some(e), _) => format!("failed: {}", e.message),
                (None, Some(e)) => format!("in progress: {}", e.message),
                (None, None) => "not yet".into(),
            }
        } else {
            messages(&pulled)
        },
    });
    let started: Vec<&Event> = all("Started").collect();
    let ready = status
        .conditions
        .iter()
        .find(|c| c.r#type == "Ready" && c.status == "True")
        .and_then(|c| since(c.last_transition_time_ms));
    let mut detail = if started.is_empty() {
        "not yet".to_string()
    } else {
        messages(&started)
    };
    if let Some(ready) = ready {
        detail.push_str(&format!("; Ready at +{}", ms(ready)));
    }
    if let Some(e) = first("Created") {
        if let Some(at) = since(e.timestamp_ms) {
            detail = format!("created at +{}; {detail}", ms(at));
        }
    }
    steps.push(Step {
        what: "7 container started",
        at_ms: started.last().and_then(|e| since(e.timestamp_ms)),
        took_ms: None,
        detail,
    });
    let mut rows = vec![["STEP", "AT", "TOOK", "WHAT HAPPENED"]
        .map(String::from)
        .to_vec()];
    let mut previous = None;
    for step in &steps {
        let (at, took) = match step.at_ms {
            Some(at) => {
                let took = match (step.took_ms, previous) {
                    (Some(took), _) => ms(took),
                    (None, Some(p)) => ms(at - p),
                    (None, None) => "-".into(),
                };
                // Before the pod existed (the build) is not the start of step 3.
                if at >= 0 {
                    previous = Some(at);
                }
                (
                    format!("{}{}", if at < 0 { "-" } else { "+" }, ms(at.abs())),
                    took,
                )
            }
            None => ("-".into(), "-".into()),
        };
        rows.push(vec![step.what.into(), at, took, step.detail.clone()]);
    }
    let mut out = format!(
        "Pod {}/{} (uid {}), {}\n",
        meta.namespace,
        meta.name,
        meta.uid,
        if spec.node_name.is_empty() {
            "not on a node yet".to_string()
        } else {
            format!("on node {}", spec.node_name)
        }
    );
    out.push_str(&Table::indented().right(1).right(2).render(&rows));
    out
}

/// The events' messages, one after the other.
fn messages(events: &[&Event]) -> String {
    let messages: Vec<&str> = events.iter().map(|e| e.message.as_str()).collect();
    messages.join("; ")
}

/// Steps 1 and 2, from the image's labels in the registry.
fn image_steps(images: &[&str], facts: &Result<ImageFacts, String>, created_ms: i64) -> Vec<Step> {
    let image = images.first().copied().unwrap_or("");
    // (when it was built, how long that took, what to say of the build, of the push)
    let (at_ms, took_ms, built, pushed) = match facts {
        Err(why) => (
            None,
            None,
            format!("unknown: {why}"),
            format!("to the registry of {}", images.join(", ")),
        ),
        Ok(facts) => {
            let size = if facts.size >= 1 << 20 {
                format!("{:.1} MB", facts.size as f64 / 1e6)
            } else {
                format!("{:.1} kB", facts.size as f64 / 1e3)
            };
            let built_ms = facts
                .labels
                .get(BUILT_LABEL)
                .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                .map(|t| t.timestamp_millis());
            let took_ms = facts
                .labels
                .get(BUILD_SECONDS_LABEL)
                .and_then(|s| s.parse::<f64>().ok())
                .map(|s| (s * 1000.0).round() as i64);
            let built = match built_ms {
                Some(_) => format!("by kubelab image build: {}, {size}", layers(facts.layers)),
                None => format!(
                    "not by kubelab image build (no {BUILT_LABEL} label); {}, {size}",
                    layers(facts.layers)
                ),
            };
            (
                built_ms.map(|b| b - created_ms),
                built_ms.and(took_ms),
                built,
                format!("{image} is in its registry (a registry records no push time)"),
            )
        }
    };
    vec![
        Step {
            what: "1 image built",
            at_ms,
            took_ms,
            detail: built,
        },
        Step {
            what: "2 image pushed",
            at_ms: None,
            took_ms: None,
            detail: pushed,
        },
    ]
}

fn ms(ms: i64) -> String {
    match ms.abs() {
        a if a < 10_000 => format!("{ms} ms"),
        a if a < 600_000 => format!("{:.1} s", ms as f64 / 1000.0),
        a if a < 7_200_000 => format!("{} min", ms / 60_000),
        _ => format!("{} h", ms / 3_600_000),
    }
}

/// `1 layer`, `5 layers`.
fn layers(n: usize) -> String {
    if n == 1 {
        "1 layer".into()
    } else {
        format!("{n} layers")
    }
}
