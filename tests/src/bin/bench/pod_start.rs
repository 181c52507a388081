//! Rows 1 and 5 (idle): sequential pod starts on one agent (by gRPC, by `kubelab apply`,
//! with host networking), beside `runc run`; the idle memory of the apiserver and agent.

use std::time::Duration;

use kubelab_tests::Lab;

use crate::measure::{anon_mb, ms, percentile, rss_mb};
use crate::pods::{start_one, Via};
use crate::runc::{runc_run, Runc};
use crate::{Row, Sizes};

/// Rows 1 and 5 (idle): sequential pod starts on one agent, beside runc.
pub async fn run(sizes: &Sizes, rows: &mut Vec<Row>) {
    // Row 1b's hostNetwork pods need PodSecurity's privileged level.
    let lab = Lab::start_with(1, "info", &[], &["--pod-security-default", "privileged"]);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (apiserver_idle, agent_idle) = (rss_mb(lab.apiserver_pid()), rss_mb(lab.agent_pid(0)));
    let (apiserver_own, agent_own) = (anon_mb(lab.apiserver_pid()), anon_mb(lab.agent_pid(0)));
    let image = lab.push_busybox("bench");
    let mut pods = lab.pods_client();
    // Warm-up: pulls and unpacks the image once, so every measured start finds it cached.
    start_one(Via::Api, &mut pods, "warmup", &image).await;
    let mut starts = Vec::new();
    let mut applies = Vec::new();
    let mut kubectl_applies = Vec::new();
    let mut no_network = Vec::new();
    // Interleaved, so that the machine's moods fall on all kinds alike.
    for i in 0..sizes.sequential {
        starts.push(start_one(Via::Api, &mut pods, &format!("bench-{i}"), &image).await);
        if i < sizes.extra {
            applies.push(start_one(Via::Cli(&lab), &mut pods, &format!("apply-{i}"), &image).await);
            kubectl_applies.push(
                start_one(
                    Via::Kubectl(&lab),
                    &mut pods,
                    &format!("kubectl-{i}"),
                    &image,
                )
                .await,
            );
            no_network.push(
                start_one(Via::ApiHostNetwork, &mut pods, &format!("host-{i}"), &image).await,
            );
        }
    }
    starts.sort();
    applies.sort();
    kubectl_applies.sort();
    no_network.sort();
    eprintln!("row 1: {} pods started", starts.len());
    let runc = |how, runs| {
        runc_run(lab.busybox_rootfs(), runs, how, 0).map(|mut t| {
            t.sort();
            t
        })
    };
    let runc_true = runc(Runc::True, sizes.sequential);
    let runc_sleep = runc(Runc::DetachedSleep, sizes.extra);
    let median_p99 =
        |t: &[Duration]| format!("{} / {}", ms(percentile(t, 0.5)), ms(percentile(t, 0.99)));
    let runc_median = runc_true.as_ref().map(|t| percentile(t, 0.5));
    rows.push(Row {
        what: format!("1. pod start, cached image, real containers: create → Running seen by a watch, p50 / p99, {} sequential pods", starts.len()),
        ours: median_p99(&starts),
        comparison: match (&runc_true, runc_median) {
            (Some(t), Some(m)) => format!(
                "`runc run` /bin/true, same rootfs: p50 / p99 {}; our p99 = {:.2}× its median",
                median_p99(t),
                percentile(&starts, 0.99).as_secs_f64() / m.as_secs_f64()
            ),
            _ => "runc not found".into(),
        },
        target: "p99 ≤ 3× runc's median".into(),
    });
    rows.push(Row {
        what: format!(
            "1b. the same with `hostNetwork: true` (no CNI), {} pods",
            no_network.len()
        ),
        ours: median_p99(&no_network),
        comparison: format!(
            "pod network's cost (p50 difference): {}",
            ms(percentile(&starts, 0.5).saturating_sub(percentile(&no_network, 0.5)))
        ),
        target: "-".into(),
    });
    rows.push(Row {
        what: format!(
            "1c. the same through `kubelab apply -f` (a CLI process), {} pods",
            applies.len()
        ),
        ours: median_p99(&applies),
        comparison: runc_sleep
            .as_ref()
            .map(|t| {
                format!(
                    "`runc run --detach` sleep (until started): {}",
                    median_p99(t)
                )
            })
            .unwrap_or_default(),
        target: "-".into(),
    });
    rows.push(Row {
        what: format!(
            "1d. the same through `kubectl apply -f` (the REST API; a kubectl process), {} pods",
            kubectl_applies.len()
        ),
        ours: median_p99(&kubectl_applies),
        comparison: format!("`kubelab apply -f` (row 1c): {}", median_p99(&applies)),
        target: "-".into(),
    });
    rows.push(Row {
        what: "5a. memory: apiserver idle (RSS)".into(),
        ours: format!("{apiserver_idle:.1} MB"),
        comparison: format!("its own (anonymous) memory: {apiserver_own:.1} MB; the rest is pages of the kubelabd binary, shared by the lab's processes"),
        target: "≤ 30 MB".into(),
    });
    rows.push(Row {
        what: "5b. memory: agent idle (RSS)".into(),
        ours: format!("{agent_idle:.1} MB"),
        comparison: format!("its own (anonymous) memory: {agent_own:.1} MB; the rest is pages of the kubelabd binary, shared by the lab's processes"),
        target: "≤ 20 MB".into(),
    });
}
