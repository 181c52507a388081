//! `kubelab trace pod NAME`: the pod's path through the seven steps of the workflow, each
//! with its time (from the pod's creation), how long it took, and what happened.
//!
//! Reads only what the components already record — the pod's metadata and status, and its
//! events — and never asks an agent. A step with no record says so.

use kubelab_proto::v1::{Event, Pod};

use super::check_pod_kind;
use crate::api::{Api, Connection};

pub async fn run(
    server: &Connection,
    namespace: &str,
    kind: &str,
    name: &str,
) -> anyhow::Result<()> {
    check_pod_kind(kind)?;
    let mut api = Api::connect(server).await?;
    let (pod, events) = api.pod_and_events(namespace, name).await?;
    print!("{}", trace(&pod, &events));
    Ok(())
}

/// One step's line: when (ms since the pod's creation, if known) and what happened.
struct Step {
    what: &'static str,
    at_ms: Option<i64>,
    detail: String,
}

/// The seven steps as a table. Times are relative to the pod's creation; the duration of a
/// step is the time since the previous step that has a time.
pub fn trace(pod: &Pod, events: &[Event]) -> String {
    let meta = pod.metadata.clone().unwrap_or_default();
    let spec = pod.spec.clone().unwrap_or_default();
    let status = pod.status.clone().unwrap_or_default();
    let created = meta.creation_timestamp_ms;
    let since = |ms: i64| (ms > 0).then(|| ms - created);
    let first = |reason: &str| events.iter().find(|e| e.reason == reason);
    let all = |reason: &'static str| events.iter().filter(move |e| e.reason == reason);
    let images: Vec<&str> = spec.containers.iter().map(|c| c.image.as_str()).collect();
    let mut steps = vec![
        Step {
            what: "1 image built",
            at_ms: None,
            detail: "not recorded here (built before the pod existed)".into(),
        },
        Step {
            what: "2 image pushed",
            at_ms: None,
            detail: format!("to the registry of {}", images.join(", ")),
        },
        Step {
            what: "3 pod created",
            at_ms: Some(0),
            detail: format!(
                "the apiserver stored {}/{}, Pending",
                meta.namespace, meta.name
            ),
        },
    ];
    steps.push(match first("Scheduled") {
        Some(e) => Step {
            what: "4 scheduled",
            at_ms: since(e.timestamp_ms),
            detail: e.message.clone(),
        },
        None => Step {
            what: "4 scheduled",
            at_ms: None,
            detail: match first("FailedScheduling") {
                Some(e) => format!("not yet: {}", e.message),
                None => "not yet (is the scheduler running?)".into(),
            },
        },
    });
    steps.push(Step {
        what: "5 accepted by the agent",
        at_ms: since(status.start_time_ms),
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
        detail: if pulled.is_empty() {
            match (first("Failed"), pulling) {
                (Some(e), _) => format!("failed: {}", e.message),
                (None, Some(e)) => format!("in progress: {}", e.message),
                (None, None) => "not yet".into(),
            }
        } else {
            pulled
                .iter()
                .map(|e| e.message.as_str())
                .collect::<Vec<_>>()
                .join("; ")
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
        started
            .iter()
            .map(|e| e.message.as_str())
            .collect::<Vec<_>>()
            .join("; ")
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
        detail,
    });
    let mut rows = vec![["STEP", "AT", "TOOK", "WHAT HAPPENED"]
        .map(String::from)
        .to_vec()];
    let mut previous = None;
    for step in &steps {
        let (at, took) = match step.at_ms {
            Some(at) => {
                let took = previous.map(|p| ms(at - p)).unwrap_or_else(|| "-".into());
                previous = Some(at);
                (format!("+{}", ms(at)), took)
            }
            None => ("-".into(), "-".into()),
        };
        rows.push(vec![step.what.into(), at, took, step.detail.clone()]);
    }
    let widths: Vec<usize> = (0..3)
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
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
    for r in &rows {
        out.push_str(&format!(
            "  {:<w0$}  {:>w1$}  {:>w2$}  {}\n",
            r[0],
            r[1],
            r[2],
            r[3],
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2]
        ));
    }
    out
}

fn ms(ms: i64) -> String {
    if ms.abs() < 10_000 {
        format!("{ms} ms")
    } else {
        format!("{:.1} s", ms as f64 / 1000.0)
    }
}
