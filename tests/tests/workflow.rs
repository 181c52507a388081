//! The walking skeleton, end to end: image → registry → pod → scheduler → agent → container.

use std::time::Duration;

use kubelab_tests::{cgroups_matching, mounts_under, pod_manifest, wait_until, Lab};

/// A pod's output reaches `kubelab logs`, and `describe` shows every step of the workflow
/// as events, in order: Scheduled, Pulling, Pulled, Created, Started.
#[test]
fn a_pods_output_reaches_logs_and_its_steps_are_events() {
    let lab = Lab::start(1);
    let image = lab.push_busybox("1");
    lab.apply_ok(&pod_manifest(
        "hello",
        &image,
        "Never",
        "echo hello from $(hostname); echo to stderr >&2",
    ));
    lab.wait_for("hello", "Succeeded");
    let logs = lab.ok(&["logs", "hello"]);
    assert!(logs.contains("hello from hello"), "logs: {logs}");
    assert!(logs.contains("to stderr"), "logs: {logs}");
    let describe = lab.ok(&["describe", "pod", "hello"]);
    let mut at = 0;
    for reason in ["Scheduled", "Pulling", "Pulled", "Created", "Started"] {
        let pos = describe
            .find(&format!(" {reason} "))
            .unwrap_or_else(|| panic!("no {reason} event in:\n{describe}"));
        assert!(pos >= at, "{reason} is out of order in:\n{describe}");
        at = pos;
    }
}

/// `kubelab trace` shows the pod's way through the steps, each with its time and what
/// happened (which node and why, the pull, the pid); `get events` lists them cluster-wide.
#[test]
fn trace_shows_each_step_and_get_events_lists_them() {
    let lab = Lab::start(1);
    let node = lab.node_names[0].clone();
    let image = lab.push_busybox("1");
    lab.apply_ok(&pod_manifest("traced", &image, "Always", "sleep 600"));
    lab.wait_for("traced", "Running");
    let trace = lab.ok(&["trace", "pod", "traced"]);
    let line = |step: &str| kubelab_tests::trace_step(&trace, step);
    assert!(trace.starts_with("Pod default/traced (uid "), "{trace}");
    assert!(line("3 pod created").contains("+0 ms"), "{trace}");
    let scheduled = line("4 scheduled");
    assert!(
        scheduled.contains(&format!(
            "Successfully assigned default/traced to {node} (1 of 1 nodes searched fit, best score"
        )),
        "{trace}"
    );
    assert!(
        line("5 accepted by the agent").contains(&format!("the agent of {node} took the pod")),
        "{trace}"
    );
    assert!(
        line("6 image pulled").contains("Successfully pulled image"),
        "{trace}"
    );
    let started = line("7 container started");
    assert!(
        started.contains("Started container main (pid ") && started.contains("Ready at +"),
        "{trace}"
    );
    // Every step with a time has one, in order.
    let times: Vec<i64> = ["3 pod", "4 sched", "5 acc", "6 image", "7 cont"]
        .iter()
        .map(|s| {
            let l = line(s);
            let at = l
                .split_whitespace()
                .find(|w| w.starts_with('+'))
                .expect("a time");
            at.trim_start_matches('+')
                .parse::<i64>()
                .unwrap_or(i64::MAX)
        })
        .collect();
    assert!(
        times.windows(2).all(|w| w[0] <= w[1]),
        "steps out of order:\n{trace}"
    );
    let events = lab.ok(&["get", "events"]);
    assert!(events.starts_with("LAST SEEN"), "{events}");
    assert!(
        events.contains("Scheduled") && events.contains("pod/traced"),
        "{events}"
    );
}

/// Exit code 0 gives Succeeded, a non-zero code gives Failed, and the code is in the
/// status where kubectl users look for it.
#[test]
fn exit_codes_give_succeeded_and_failed_with_the_code() {
    let lab = Lab::start(1);
    let image = lab.push_busybox("1");
    lab.apply_ok(&pod_manifest("ok", &image, "Never", "exit 0"));
    lab.apply_ok(&pod_manifest("bad", &image, "Never", "exit 3"));
    lab.wait_for("ok", "Succeeded");
    lab.wait_for("bad", "Failed");
    let bad = lab.pod_json("bad");
    assert_eq!(bad["status"]["phase"], "Failed");
    assert_eq!(
        bad["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"],
        3
    );
    assert_eq!(
        bad["status"]["containerStatuses"][0]["state"]["terminated"]["reason"],
        "Error"
    );
    let ok = lab.pod_json("ok");
    assert_eq!(
        ok["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"],
        0
    );
    let table = lab.ok(&["get", "pods"]);
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("bad ") && l.contains("Error")),
        "{table}"
    );
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("ok ") && l.contains("Completed")),
        "{table}"
    );
}

/// With two agents, the scheduler spreads pods so that both nodes receive some, and
/// `get nodes` shows both Ready with their capacity.
#[test]
fn two_agents_both_receive_pods() {
    let lab = Lab::start(2);
    let nodes = lab.ok(&["get", "nodes"]);
    assert_eq!(nodes.matches(" Ready ").count(), 2, "{nodes}");
    assert!(nodes.contains("CPU") && nodes.contains("MEMORY"), "{nodes}");
    let image = lab.push_busybox("1");
    // Long-running pods: a finished pod no longer counts on its node, so short ones could
    // all land on the first node, one after the other.
    for i in 0..4 {
        lab.apply_ok(&pod_manifest(
            &format!("p{i}"),
            &image,
            "Always",
            "sleep 3600",
        ));
    }
    let mut used = std::collections::HashSet::new();
    for i in 0..4 {
        lab.wait_for(&format!("p{i}"), "Running");
        used.insert(
            lab.pod_json(&format!("p{i}"))["spec"]["nodeName"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        );
    }
    assert_eq!(used.len(), 2, "pods went to {used:?} only");
}

/// Deleting a running pod stops its container (SIGTERM, grace period, SIGKILL) and leaves
/// no process, mount, cgroup or state directory behind.
#[test]
fn deleting_a_running_pod_leaves_nothing_behind() {
    let lab = Lab::start(1);
    let image = lab.push_busybox("1");
    lab.apply_ok(&pod_manifest("sleep", &image, "Always", "sleep 3600"));
    lab.wait_for("sleep", "Running");
    let json = lab.pod_json("sleep");
    let uid = json["metadata"]["uid"].as_str().expect("uid").to_string();
    let container_id = json["status"]["containerStatuses"][0]["containerID"]
        .as_str()
        .expect("container id")
        .to_string();
    let root = lab.agent_root(&lab.node_names[0]);
    assert!(
        !mounts_under(&root).is_empty(),
        "a running pod has its rootfs mounted"
    );
    assert!(
        !cgroups_matching(&uid).is_empty(),
        "a running pod has a cgroup"
    );
    let wide = lab.ok(&["get", "pods", "-o", "wide"]);
    assert!(
        wide.contains("Running") && wide.contains(&lab.node_names[0]),
        "{wide}"
    );

    lab.ok(&["delete", "pod", "sleep"]);
    let gone = lab.kubelab(&["get", "pod", "sleep"]);
    assert!(!gone.status.success(), "the pod is still in the API");
    assert!(
        mounts_under(&root).is_empty(),
        "mounts left: {:?}",
        mounts_under(&root)
    );
    assert!(
        cgroups_matching(&uid).is_empty(),
        "cgroups left: {:?}",
        cgroups_matching(&uid)
    );
    assert!(!root.join("pods").join(&uid).exists(), "pod state dir left");
    let id = container_id.trim_start_matches("kubelab://");
    assert!(
        !root.join("runtime").join(id).exists(),
        "runtime state left"
    );
    let ps = std::process::Command::new("pgrep")
        .args(["-f", id])
        .output()
        .expect("pgrep");
    assert!(
        ps.stdout.is_empty(),
        "processes left: {}",
        String::from_utf8_lossy(&ps.stdout)
    );
}

/// Stopping the agent (as `make down` does) stops its pods and removes their mounts and
/// cgroups: a lab that is shut down leaves nothing running.
#[test]
fn stopping_the_lab_stops_its_pods() {
    let root;
    let uid;
    {
        let lab = Lab::start(1);
        let image = lab.push_busybox("1");
        lab.apply_ok(&pod_manifest("sleep", &image, "Always", "sleep 3600"));
        lab.wait_for("sleep", "Running");
        uid = lab.pod_json("sleep")["metadata"]["uid"]
            .as_str()
            .expect("uid")
            .to_string();
        root = lab.agent_root(&lab.node_names[0]);
        std::mem::drop(lab);
    }
    std::thread::sleep(Duration::from_millis(100));
    assert!(mounts_under(&root).is_empty());
    assert!(
        cgroups_matching(&uid).is_empty(),
        "cgroups left: {:?}",
        cgroups_matching(&uid)
    );
}

/// A pod that fits no node stays Pending with a FailedScheduling event that says why, in
/// Kubernetes' words.
#[test]
fn a_pod_that_fits_nowhere_gets_failed_scheduling() {
    let lab = Lab::start(2);
    lab.apply_ok(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: huge\nspec:\n  containers:\n  - name: c\n    image: 127.0.0.1:1/x:1\n    resources:\n      requests:\n        memory: 100Ti\n",
    );
    let start = std::time::Instant::now();
    loop {
        let describe = lab.ok(&["describe", "pod", "huge"]);
        if describe.contains("FailedScheduling") {
            assert!(
                describe.contains("0/2 nodes are available: 2 Insufficient memory."),
                "{describe}"
            );
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "no FailedScheduling event:\n{describe}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(lab.pod_json("huge")["status"]["phase"], "Pending");
}

/// A registry that accepts connections and never answers holds the pull, not the pod:
/// deleting the pod does not wait for the pull to time out.
#[test]
fn deleting_a_pod_whose_pull_hangs_does_not_wait_for_the_pull() {
    let lab = Lab::start(1);
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("listener");
    let port = silent.local_addr().expect("addr").port();
    // Accept and hold every connection, saying nothing.
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in silent.incoming().flatten() {
            held.push(conn);
        }
    });
    lab.apply_ok(&pod_manifest(
        "stuck",
        &format!("127.0.0.1:{port}/silent:1"),
        "Never",
        "true",
    ));
    let start = std::time::Instant::now();
    loop {
        if lab.ok(&["describe", "pod", "stuck"]).contains(" Pulling ") {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the pull never started"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let start = std::time::Instant::now();
    lab.ok(&["delete", "pod", "stuck"]);
    // The registry timeouts are 10 s (connect) and 60 s (read); a delete that waited for
    // the pull would take that long.
    assert!(
        start.elapsed() < Duration::from_secs(8),
        "delete took {:?}",
        start.elapsed()
    );
}

/// The image's Entrypoint, Cmd, Env and WorkingDir apply, and the pod's command, args,
/// env and workingDir override them as in Kubernetes.
#[test]
fn the_pod_spec_overrides_the_image_config_like_kubernetes() {
    let lab = Lab::start(1);
    let image = format!("{}/configured:1", lab.registry);
    let rootfs = lab.busybox_rootfs().to_str().expect("path").to_string();
    lab.ok(&[
        "image",
        "push",
        &rootfs,
        &image,
        "--entrypoint",
        "sh",
        "--entrypoint",
        "-c",
        "--cmd",
        "echo image-cmd $A $B $(pwd)",
        "--env",
        "A=from-image",
        "--env",
        "B=from-image",
        "--workdir",
        "/bin",
    ]);
    // The image as it is: Entrypoint + Cmd, its env and working directory.
    lab.apply_ok(&format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: plain\nspec:\n  restartPolicy: Never\n  containers:\n  - name: c\n    image: {image}\n"
    ));
    // args replace Cmd (the Entrypoint stays); env overrides by name; workingDir replaces.
    lab.apply_ok(&format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: args\nspec:\n  restartPolicy: Never\n  containers:\n  - name: c\n    image: {image}\n    args: [\"echo pod-args $A $B $(pwd)\"]\n    env: [{{name: B, value: from-pod}}]\n    workingDir: /tmp\n"
    ));
    // command replaces the Entrypoint and drops the Cmd.
    lab.apply_ok(&format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: command\nspec:\n  restartPolicy: Never\n  containers:\n  - name: c\n    image: {image}\n    command: [echo, pod-command]\n"
    ));
    for name in ["plain", "args", "command"] {
        lab.wait_for(name, "Succeeded");
    }
    assert_eq!(
        lab.ok(&["logs", "plain"]),
        "image-cmd from-image from-image /bin\n"
    );
    assert_eq!(
        lab.ok(&["logs", "args"]),
        "pod-args from-image from-pod /tmp\n"
    );
    assert_eq!(lab.ok(&["logs", "command"]), "pod-command\n");
}

/// `$(VAR)` in a container's command, args and env values is replaced by the value of
/// the container's variable VAR, as Kubernetes does: an env value sees only the variables
/// declared before it, command and args see them all; `$$(VAR)` gives the literal
/// `$(VAR)` and an undefined reference stays as written.
#[test]
fn variable_references_in_command_args_and_env_are_expanded() {
    let lab = Lab::start(1);
    let image = lab.push_busybox("1");
    let script = "echo '$(GREETING) $$(GREETING) $(NOPE)'; echo \"$LOUD|$EARLY|$0\"";
    lab.apply_ok(&format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: expand\nspec:\n  restartPolicy: Never\n  containers:\n  - name: c\n    image: {image}\n    command: [sh, -c, {script:?}]\n    args: [\"$(LOUD)!\"]\n    env:\n    - name: GREETING\n      value: hello\n    - name: LOUD\n      value: \"$(GREETING), world\"\n    - name: EARLY\n      value: \"$(LATER)\"\n    - name: LATER\n      value: late\n"
    ));
    lab.wait_for("expand", "Succeeded");
    assert_eq!(
        lab.ok(&["logs", "expand"]),
        "hello $(GREETING) $(NOPE)\nhello, world|$(LATER)|hello, world!\n"
    );
}

/// Each container of a pod runs and has its own log; `logs` asks which one when there
/// are several.
#[test]
fn a_pod_with_two_containers_runs_both() {
    let lab = Lab::start(1);
    let image = lab.push_busybox("1");
    lab.apply_ok(&format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: two\nspec:\n  restartPolicy: Never\n  containers:\n  - name: first\n    image: {image}\n    command: [echo, one]\n  - name: second\n    image: {image}\n    command: [echo, two]\n"
    ));
    lab.wait_for("two", "Succeeded");
    assert_eq!(lab.ok(&["logs", "two", "-c", "first"]), "one\n");
    assert_eq!(lab.ok(&["logs", "two", "-c", "second"]), "two\n");
    let err = lab.fails(&["logs", "two"]);
    assert!(err.contains("first") && err.contains("second"), "{err}");
    assert_eq!(
        lab.ok(&["get", "pods"])
            .lines()
            .nth(1)
            .and_then(|l| l.split_whitespace().nth(1)),
        Some("0/2")
    );
}

/// No process left mentions `data` (a stopped lab's directory).
fn assert_no_process_under(data: &std::path::Path) {
    let left = std::process::Command::new("pgrep")
        .arg("-f")
        .arg(data.to_str().expect("path"))
        .output()
        .expect("pgrep");
    assert!(
        left.stdout.is_empty(),
        "processes left: {}",
        String::from_utf8_lossy(&left.stdout)
    );
}

/// `kubelabd up --agents N` beside `lab` (which lends its registry and addresses: no other
/// lab uses them), its output in `up.log`; returns it and its data directory.
fn kubelabd_up(lab: &Lab, agents: usize) -> (kubelab_tests::Proc, std::path::PathBuf) {
    use kubelab_tests::{bin, free_port, Proc};
    let server = format!("127.0.0.1:{}", free_port());
    let data = lab.dir.path().join("up-data");
    let up = Proc::spawn(
        "kubelabd up",
        std::process::Command::new(bin("kubelabd"))
            .args(["up", "--agents", &agents.to_string(), "--listen", &server])
            .args(["--proxy-mode", "none"])
            .arg("--admin-config")
            .arg(lab.dir.path().join("up-admin.conf"))
            .args(["--cluster-cidr", &lab.cluster_cidr])
            .arg("--data-dir")
            .arg(&data),
        &lab.dir.path().join("up.log"),
    );
    (up, data)
}

/// `kubelabd up` runs a whole lab (apiserver, scheduler, agents) that runs pods, and one
/// SIGTERM (what Ctrl-C sends its process group) stops it all: pods, agents, apiserver.
#[test]
fn kubelabd_up_runs_a_lab_and_one_signal_stops_it_all() {
    use kubelab_tests::bin;
    // This lab only lends its registry.
    let lab = Lab::start(0);
    let image = lab.push_busybox("1");
    let (mut up, data) = kubelabd_up(&lab, 2);
    let kubelab = |args: &[&str]| {
        std::process::Command::new(bin("kubelab"))
            .args(args)
            .env("KUBELAB_CONFIG", lab.dir.path().join("up-admin.conf"))
            .env_remove("KUBELAB_SERVER")
            .output()
            .expect("kubelab")
    };
    let start = std::time::Instant::now();
    while String::from_utf8_lossy(&kubelab(&["get", "nodes"]).stdout)
        .matches(" Ready ")
        .count()
        != 2
    {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the lab's nodes never became Ready"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let manifest = lab.dir.path().join("sleep.yaml");
    std::fs::write(
        &manifest,
        pod_manifest("sleep", &image, "Always", "sleep 3600"),
    )
    .expect("manifest");
    assert!(kubelab(&["apply", "-f", manifest.to_str().expect("path")])
        .status
        .success());
    let waited = kubelab(&[
        "wait",
        "pod",
        "sleep",
        "--for",
        "Running",
        "--timeout",
        "60",
    ]);
    assert!(
        waited.status.success(),
        "{}",
        String::from_utf8_lossy(&waited.stderr)
    );
    assert!(!mounts_under(&data).is_empty());

    up.terminate();
    let status = up
        .wait_for_exit(Duration::from_secs(30))
        .expect("kubelabd up stops within 30 s");
    assert!(status.success(), "kubelabd up exited with {status}");
    assert!(
        mounts_under(&data).is_empty(),
        "mounts left: {:?}",
        mounts_under(&data)
    );
    assert_no_process_under(&data);
}

/// `kubelabd up` is never silently half a lab: when one of its agents dies, it says which
/// one and how, stops the rest (no process left behind) and exits non-zero.
#[test]
fn kubelabd_up_stops_and_says_so_when_an_agent_dies() {
    let lab = Lab::start(0);
    let (mut up, data) = kubelabd_up(&lab, 1);
    let log = lab.dir.path().join("up.log");
    let agent_root = data.join("agents").join("node-1");
    let agent = || {
        kubelab_tests::processes_mentioning(agent_root.to_str().expect("path"))
            .into_iter()
            .find(|pid| {
                std::fs::read(format!("/proc/{pid}/cmdline"))
                    .map(|c| String::from_utf8_lossy(&c).contains("--node-name"))
                    .unwrap_or(false)
            })
    };
    wait_until("the agent of node-1", Duration::from_secs(20), || {
        std::fs::read_to_string(&log).is_ok_and(|l| l.contains("kubelab is up"))
            && agent().is_some()
    });
    let pid = agent().expect("agent pid");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill the agent");
    let status = up
        .wait_for_exit(Duration::from_secs(20))
        .expect("kubelabd up stops when its agent dies");
    assert!(!status.success(), "kubelabd up exited 0 without its agent");
    let out = std::fs::read_to_string(&log).expect("up.log");
    assert!(
        out.contains("error: up: the agent of node-1 stopped (it exited with signal: 9"),
        "{out}"
    );
    assert_no_process_under(&data);
}
