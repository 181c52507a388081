//! Jobs through the real kubectl (issue 16): a Job runs its pods to completion within
//! its parallelism, `kubectl create job` (a protobuf body) runs one to its logs, a
//! failing Job stops at its backoffLimit after the pod-failure back-off, and a finished
//! Job with `ttlSecondsAfterFinished` goes with its pods.

use std::time::Duration;

use kubelab_tests::{wait_until, Lab};

fn job(name: &str, image: &str, spec: &str, restart: &str, script: &str) -> String {
    format!(
        "apiVersion: batch/v1\nkind: Job\nmetadata:\n  name: {name}\nspec:\n{spec}  template:\n    spec:\n      restartPolicy: {restart}\n      terminationGracePeriodSeconds: 1\n      containers:\n      - name: main\n        image: {image}\n        command: [\"sh\", \"-c\", {script:?}]\n"
    )
}

/// `(name, phase)` of the pods of Job `name` (by the label the Job controller sets).
fn pods_of(lab: &Lab, name: &str) -> Vec<(String, String)> {
    lab.kubectl_ok(&[
        "get",
        "pods",
        "-l",
        &format!("batch.kubernetes.io/job-name={name}"),
        "-o",
        "jsonpath={range .items[*]}{.metadata.name} {.status.phase}{\"\\n\"}{end}",
    ])
    .lines()
    .filter_map(|l| {
        let (name, phase) = l.split_once(' ')?;
        Some((name.to_string(), phase.to_string()))
    })
    .collect()
}

#[test]
fn a_job_completes_within_its_parallelism_and_kubectl_create_job_runs_one() {
    let mut lab = Lab::start(2);
    lab.start_controller_manager();
    let image = lab.push_busybox("1");
    let manifest = job(
        "count",
        &image,
        "  completions: 5\n  parallelism: 2\n",
        "Never",
        "sleep 1",
    );
    let out = lab.kubectl_with_input(&["apply", "-f", "-"], &manifest);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("job.batch/count created"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Never more than 2 pods running at once, sampled until the Job is done.
    let mut most = 0;
    wait_until("the Job to complete", Duration::from_secs(90), || {
        let running = pods_of(&lab, "count")
            .iter()
            .filter(|(_, phase)| phase == "Running" || phase == "Pending")
            .count();
        most = most.max(running);
        lab.kubectl_ok(&["get", "job", "count", "-o", "jsonpath={.status.succeeded}"]) == "5"
    });
    assert!(most <= 2, "{most} pods ran at once with parallelism 2");
    let waited = lab.kubectl_ok(&[
        "wait",
        "--for=condition=Complete",
        "job/count",
        "--timeout=30s",
    ]);
    assert_eq!(waited.trim(), "job.batch/count condition met");
    let pods = pods_of(&lab, "count");
    assert_eq!(pods.len(), 5, "{pods:?}");
    assert!(
        pods.iter().all(|(_, phase)| phase == "Succeeded"),
        "{pods:?}"
    );
    // kubectl 1.32's columns, as kube-apiserver fills them.
    let table = lab.kubectl_ok(&["get", "jobs"]);
    let mut lines = table.lines();
    let header: Vec<&str> = lines.next().unwrap_or("").split_whitespace().collect();
    assert_eq!(header, ["NAME", "STATUS", "COMPLETIONS", "DURATION", "AGE"]);
    let row: Vec<&str> = lines.next().unwrap_or("").split_whitespace().collect();
    assert_eq!(&row[..3], ["count", "Complete", "5/5"], "{table}");
    let conditions = lab.kubectl_ok(&[
        "get",
        "job",
        "count",
        "-o",
        "jsonpath={range .status.conditions[*]}{.type}={.reason} {end}",
    ]);
    assert_eq!(
        conditions.trim(),
        "SuccessCriteriaMet=CompletionsReached Complete=CompletionsReached"
    );
    let described = lab.kubectl_ok(&["describe", "job", "count"]);
    assert!(
        described.contains("0 Active (0 Ready) / 5 Succeeded / 0 Failed")
            && described.contains("Completed")
            && described.contains("Created pod: count-"),
        "{described}"
    );

    // `kubectl create job` posts protobuf; the Job gets Kubernetes' defaults.
    let created = lab.kubectl_ok(&[
        "create",
        "job",
        "hello",
        &format!("--image={image}"),
        "--",
        "sh",
        "-c",
        "echo hi from a job",
    ]);
    assert_eq!(created.trim(), "job.batch/hello created");
    let waited = lab.kubectl_ok(&[
        "wait",
        "--for=condition=Complete",
        "job/hello",
        "--timeout=60s",
    ]);
    assert_eq!(waited.trim(), "job.batch/hello condition met");
    assert_eq!(
        lab.kubectl_ok(&["logs", "job/hello"]).trim(),
        "hi from a job"
    );
    let defaults = lab.kubectl_ok(&[
        "get", "job", "hello", "-o",
        "jsonpath={.spec.backoffLimit} {.spec.completions} {.spec.parallelism} {.spec.completionMode} {.metadata.labels.job-name}",
    ]);
    assert_eq!(defaults, "6 1 1 NonIndexed hello");

    // Finished, with a TTL: the Job and its pods go.
    let ttl = job(
        "brief",
        &image,
        "  ttlSecondsAfterFinished: 1\n",
        "OnFailure",
        "true",
    );
    lab.kubectl_with_input(&["apply", "-f", "-"], &ttl);
    wait_until("the finished Job deleted", Duration::from_secs(60), || {
        lab.kubectl(&["get", "job", "brief"]).status.code() == Some(1)
            && pods_of(&lab, "brief").is_empty()
    });
}

#[test]
fn a_failing_job_stops_at_its_backoff_limit() {
    let mut lab = Lab::start(1);
    lab.start_controller_manager();
    let image = lab.push_busybox("1");
    let manifest = job("broken", &image, "  backoffLimit: 1\n", "Never", "exit 3");
    lab.kubectl_with_input(&["apply", "-f", "-"], &manifest);
    // Two more, meanwhile: one past its deadline, one whose container restarts in place
    // (OnFailure) as often as its backoffLimit allows.
    let late = job(
        "late",
        &image,
        "  activeDeadlineSeconds: 2\n",
        "Never",
        "sleep 3600",
    );
    lab.kubectl_with_input(&["apply", "-f", "-"], &late);
    let crashing = job(
        "crashing",
        &image,
        "  backoffLimit: 1\n",
        "OnFailure",
        "exit 1",
    );
    lab.kubectl_with_input(&["apply", "-f", "-"], &crashing);
    // A Job without restartPolicy OnFailure or Never is refused in Kubernetes' words.
    let refused = lab.kubectl_with_input(
        &["apply", "-f", "-"],
        &job("always", &image, "", "Always", "true"),
    );
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(
        said.contains("spec.template.spec.restartPolicy: Required value: valid values: \"OnFailure\", \"Never\""),
        "{said}"
    );
    // Two failures (the second after the 10 s back-off): more than backoffLimit 1.
    let waited = lab.kubectl_ok(&[
        "wait",
        "--for=condition=Failed",
        "job/broken",
        "--timeout=60s",
    ]);
    assert_eq!(waited.trim(), "job.batch/broken condition met");
    let pods = pods_of(&lab, "broken");
    assert_eq!(pods.len(), 2, "{pods:?}");
    assert!(pods.iter().all(|(_, phase)| phase == "Failed"), "{pods:?}");
    let row = lab.kubectl_ok(&["get", "job", "broken", "--no-headers"]);
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(&cells[..3], ["broken", "Failed", "0/1"], "{row}");
    let conditions = lab.kubectl_ok(&[
        "get",
        "job",
        "broken",
        "-o",
        "jsonpath={range .status.conditions[*]}{.type}={.reason} {end}{.status.failed}",
    ]);
    assert_eq!(
        conditions.trim(),
        "FailureTarget=BackoffLimitExceeded Failed=BackoffLimitExceeded 2"
    );
    let events = lab.kubectl_ok(&["events", "--for", "job/broken"]);
    assert!(
        events.contains("BackoffLimitExceeded")
            && events.contains("Job has reached the specified backoff limit"),
        "{events}"
    );
    for (name, reason) in [
        ("late", "DeadlineExceeded"),
        ("crashing", "BackoffLimitExceeded"),
    ] {
        let target = format!("job/{name}");
        lab.kubectl_ok(&["wait", "--for=condition=Failed", &target, "--timeout=60s"]);
        let said = lab.kubectl_ok(&[
            "get",
            "job",
            name,
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"Failed\")].reason}",
        ]);
        assert_eq!(said, reason, "{name}");
        // Its running pod was deleted: nothing of the Job runs any more.
        wait_until("its pod stopped", Duration::from_secs(30), || {
            pods_of(&lab, name)
                .iter()
                .all(|(_, phase)| phase != "Running" && phase != "Pending")
        });
    }
    // Deleting the Job takes its pods (kubectl asks for Background propagation).
    lab.kubectl_ok(&["delete", "job", "broken"]);
    wait_until("its pods gone", Duration::from_secs(30), || {
        pods_of(&lab, "broken").is_empty()
    });
}
