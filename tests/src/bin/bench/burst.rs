//! Row 2: a burst of pods on two real agents, beside as many `runc run --detach`, two
//! at a time.

use std::time::Instant;

use kubelab_tests::Lab;

use crate::pods::{plain_pod, revision_now, start_one, wait_for_pods, Via};
use crate::runc::runc_parallel;
use crate::{Row, Sizes};

/// Row 2: a burst on two real agents, beside runc starting as many, two at a time.
pub async fn run(sizes: &Sizes, rows: &mut Vec<Row>) {
    let lab = Lab::start_with_agent_log(2, "info");
    let image = lab.push_busybox("burst");
    let mut pods = lab.pods_client();
    // Both agents pull the image first: the burst is about starting, not pulling.
    for i in 0..2 {
        start_one(Via::Api, &mut pods, &format!("warm-{i}"), &image).await;
    }
    let from = revision_now(&mut pods).await;
    let waiter = {
        let mut pods = pods.clone();
        let n = sizes.burst;
        tokio::spawn(async move { wait_for_pods(&mut pods, from, n, "Running").await })
    };
    let start = Instant::now();
    let creates: Vec<_> = (0..sizes.burst)
        .map(|i| {
            let mut pods = pods.clone();
            let pod = plain_pod(format!("burst-{i}"), &image);
            tokio::spawn(async move { pods.create(pod).await.expect("create") })
        })
        .collect();
    for c in creates {
        c.await.expect("create task");
    }
    let all_running = waiter.await.expect("waiter").1.duration_since(start);
    eprintln!(
        "row 2: {} pods Running in {:.2}s",
        sizes.burst,
        all_running.as_secs_f64()
    );
    // runc: the same number of detached containers, two at a time (two "nodes").
    let runc = runc_parallel(lab.busybox_rootfs(), sizes.burst, 2);
    rows.push(Row {
        what: format!(
            "2. burst: {} pods created at once on 2 real agents, until all Running",
            sizes.burst
        ),
        ours: format!("{:.2} s", all_running.as_secs_f64()),
        comparison: runc
            .map(|d| {
                format!(
                    "{} `runc run --detach`, 2 at a time: {:.2} s",
                    sizes.burst,
                    d.as_secs_f64()
                )
            })
            .unwrap_or_else(|| "runc not found".into()),
        target: "≤ 5 s".into(),
    });
}
