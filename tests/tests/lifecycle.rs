//! The kubelet, faithfully: each test is one Kubernetes behaviour, on real containers.
//!
//! The agents run with a short back-off (1 s doubling to 4 s) and the probes with 1 s
//! periods, so the stories play out in seconds.

use std::time::Duration;

use kubelab_tests::{cgroups_matching, pod_manifest, processes_in_cgroups, wait_until, Lab};

/// A pod manifest with `body` under `spec:` (indented by two spaces by the caller).
fn pod(name: &str, body: &str) -> String {
    format!("apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  terminationGracePeriodSeconds: 2\n{body}")
}

fn status_of<'a>(pod: &'a serde_json::Value, container: &str) -> &'a serde_json::Value {
    pod["status"]["containerStatuses"]
        .as_array()
        .and_then(|a| a.iter().find(|s| s["name"] == container))
        .unwrap_or(&serde_json::Value::Null)
}

/// OnFailure: a container that fails is restarted after a back-off, its restart count
/// rises, `lastState` holds the failed run, `logs --previous` shows that run's output,
/// and once it succeeds the pod is Succeeded. The emptyDir keeps the count across runs.
#[test]
fn on_failure_pod_restarts_with_backoff_until_success() {
    let lab = Lab::start(1);
    let image = lab.push_busybox("1");
    lab.apply_ok(&pod(
        "flaky",
        &format!(
            "  restartPolicy: OnFailure
  volumes:
  - name: state
    emptyDir: {{}}
  containers:
  - name: main
    image: {image}
    volumeMounts:
    - name: state
      mountPath: /state
    command: [sh, -c, 'n=$(cat /state/n 2>/dev/null || echo 0); n=$((n+1)); echo $n > /state/n; echo run $n; [ $n -ge 3 ]']
"
        ),
    ));
    lab.wait_for("flaky", "Succeeded");
    let json = lab.pod_json("flaky");
    let s = status_of(&json, "main");
    assert_eq!(s["restartCount"], 2, "{json}");
    assert_eq!(s["state"]["terminated"]["exitCode"], 0);
    assert_eq!(s["lastState"]["terminated"]["exitCode"], 1, "{json}");
    assert_eq!(lab.ok(&["logs", "flaky"]), "run 3\n");
    assert_eq!(lab.ok(&["logs", "flaky", "--previous"]), "run 2\n");
    let describe = lab.ok(&["describe", "pod", "flaky"]);
    assert!(
        describe.contains("Back-off restarting failed container main"),
        "{describe}"
    );
}

/// Always: a container that keeps failing shows CrashLoopBackOff between runs.
#[test]
fn always_pod_that_keeps_failing_shows_crash_loop_back_off() {
    let lab = Lab::start(1);
    let image = lab.push_busybox("1");
    lab.apply_ok(&pod_manifest(
        "crashy",
        &image,
        "Always",
        "echo trying; exit 1",
    ));
    lab.wait_status("crashy", "CrashLoopBackOff", Duration::from_secs(30));
    wait_until("two restarts", Duration::from_secs(30), || {
        status_of(&lab.pod_json("crashy"), "main")["restartCount"]
            .as_i64()
            .is_some_and(|n| n >= 2)
    });
    let json = lab.pod_json("crashy");
    assert_eq!(json["status"]["phase"], "Running", "{json}");
    assert_eq!(
        status_of(&json, "main")["lastState"]["terminated"]["exitCode"],
        1
    );
}

/// Never: a failed container stays failed, and so does the pod.
#[test]
fn never_pod_is_not_restarted() {
    let lab = Lab::start(1);
    let image = lab.push_busybox("1");
    lab.apply_ok(&pod_manifest("once", &image, "Never", "exit 2"));
    lab.wait_for("once", "Failed");
    std::thread::sleep(Duration::from_secs(2));
    let json = lab.pod_json("once");
    assert_eq!(status_of(&json, "main")["restartCount"], 0, "{json}");
    assert_eq!(json["status"]["phase"], "Failed");
}

/// Two containers of one pod share its network (localhost), IPC and UTS namespaces: one
/// serves HTTP on 127.0.0.1, the other fetches the page; both see the pod's hostname.
#[test]
fn containers_of_a_pod_share_localhost_and_hostname() {
    let lab = Lab::start(1);
    let image = lab.push_busybox("1");
    lab.apply_ok(&pod(
        "duo",
        &format!(
            "  restartPolicy: Never
  containers:
  - name: web
    image: {image}
    command: [sh, -c, 'mkdir -p /www && echo hello from web > /www/index.html && exec httpd -f -p 127.0.0.1:8080 -h /www']
  - name: client
    image: {image}
    command: [sh, -c, 'hostname; for i in 1 2 3 4 5 6 7 8 9 10; do wget -q -O - http://127.0.0.1:8080/ && exit 0; sleep 0.5; done; exit 1']
"
        ),
    ));
    wait_until("the client to finish", Duration::from_secs(30), || {
        status_of(&lab.pod_json("duo"), "client")["state"]["terminated"].is_object()
    });
    let json = lab.pod_json("duo");
    assert_eq!(
        status_of(&json, "client")["state"]["terminated"]["exitCode"],
        0,
        "{json}\n{}",
        lab.logs()
    );
    assert_eq!(
        lab.ok(&["logs", "duo", "-c", "client"]),
        "duo\nhello from web\n"
    );
    // The namespaces themselves: network, IPC and UTS are the pod's pinned ones; PID is
    // each container's own.
    let uid = lab.pod_json("duo")["metadata"]["uid"]
        .as_str()
        .expect("uid")
        .to_string();
    let sandbox = lab
        .agent_root(&lab.node_names[0])
        .join("pods")
        .join(uid)
        .join("sandbox");
    let namespaces = |container: &str| {
        let script = "for n in net ipc uts pid; do readlink /proc/self/ns/$n; done";
        lab.ok(&["exec", "duo", "-c", container, "--", "sh", "-c", script])
    };
    let web = namespaces("web");
    let lines: Vec<&str> = web.lines().collect();
    assert_eq!(lines.len(), 4, "{web}");
    let pinned = |ns: &str| {
        let meta = std::fs::metadata(sandbox.join(ns)).expect("pinned namespace");
        std::os::unix::fs::MetadataExt::ino(&meta)
    };
    assert_eq!(lines[0], format!("net:[{}]", pinned("net")));
    assert_eq!(lines[1], format!("ipc:[{}]", pinned("ipc")));
    assert_eq!(lines[2], format!("uts:[{}]", pinned("uts")));
    let host_pid_ns = std::fs::read_link("/proc/self/ns/pid").expect("host pid ns");
    assert_ne!(lines[3], host_pid_ns.to_string_lossy());
    lab.ok(&["delete", "pod", "duo", "--grace-period", "0"]);
}

/// Init containers run one at a time, in order, each to success, before the app
/// container starts; the STATUS column shows `Init:N/M` meanwhile.
#[test]
fn init_containers_run_in_order_before_the_app() {
    let lab = Lab::start(1);
    let image = lab.push_busybox("1");
    lab.apply_ok(&pod(
        "setup",
        &format!(
            "  restartPolicy: Never
  volumes:
  - name: work
    emptyDir: {{}}
  initContainers:
  - name: first
    image: {image}
    command: [sh, -c, 'sleep 2; echo one >> /work/order']
    volumeMounts: [{{name: work, mountPath: /work}}]
  - name: second
    image: {image}
    command: [sh, -c, 'echo two >> /work/order']
    volumeMounts: [{{name: work, mountPath: /work}}]
  containers:
  - name: app
    image: {image}
    command: [sh, -c, 'echo app >> /work/order; cat /work/order']
    volumeMounts: [{{name: work, mountPath: /work}}]
"
        ),
    ));
    lab.wait_status("setup", "Init:0/2", Duration::from_secs(20));
    lab.wait_for("setup", "Succeeded");
    assert_eq!(lab.ok(&["logs", "setup", "-c", "app"]), "one\ntwo\napp\n");
    let json = lab.pod_json("setup");
    let init = json["status"]["initContainerStatuses"]
        .as_array()
        .expect("init statuses");
    assert_eq!(init.len(), 2);
    assert!(
        init.iter()
            .all(|s| s["state"]["terminated"]["exitCode"] == 0),
        "{json}"
    );
}

/// Under `Always` (or `OnFailure`), a failing init container is run again, with back-off,
/// until it succeeds; then the app starts.
#[test]
fn a_failing_init_container_is_retried_until_it_succeeds() {
    let lab = Lab::start(1);
    let image = lab.push_busybox("1");
    lab.apply_ok(&pod(
        "retryinit",
        &format!(
            "  volumes:
  - name: state
    emptyDir: {{}}
  initContainers:
  - name: wait-for-it
    image: {image}
    command: [sh, -c, 'n=$(cat /state/n 2>/dev/null || echo 0); echo $((n+1)) > /state/n; [ $n -ge 1 ]']
    volumeMounts: [{{name: state, mountPath: /state}}]
  containers:
  - name: app
    image: {image}
    command: [sh, -c, 'echo app started after $(cat /state/n) tries; exec sleep 3600']
    volumeMounts: [{{name: state, mountPath: /state}}]
"
        ),
    ));
    lab.wait_for("retryinit", "Running");
    let json = lab.pod_json("retryinit");
    let init = &json["status"]["initContainerStatuses"][0];
    assert_eq!(init["restartCount"], 1, "{json}");
    assert_eq!(init["lastState"]["terminated"]["exitCode"], 1, "{json}");
    wait_until("the app's output", Duration::from_secs(10), || {
        lab.ok(&["logs", "retryinit", "-c", "app"]) == "app started after 2 tries\n"
    });
    lab.ok(&["delete", "pod", "retryinit", "--grace-period", "0"]);
}

/// A failing init container fails a `Never` pod, and the app container never starts.
#[test]
fn a_failing_init_container_fails_a_never_pod() {
    let lab = Lab::start(1);
    let image = lab.push_busybox("1");
    lab.apply_ok(&pod(
        "badinit",
        &format!(
            "  restartPolicy: Never
  initContainers:
  - name: check
    image: {image}
    command: [sh, -c, 'echo precondition failed; exit 5']
  containers:
  - name: app
    image: {image}
    command: [sh, -c, 'echo must not run']
"
        ),
    ));
    lab.wait_for("badinit", "Failed");
    let row = lab.ok(&["get", "pod", "badinit"]);
    assert!(row.contains("Init:Error"), "{row}");
    let json = lab.pod_json("badinit");
    assert!(
        status_of(&json, "app")["state"]["waiting"].is_object(),
        "{json}"
    );
    assert!(!lab
        .ok(&["describe", "pod", "badinit"])
        .contains("Started container app"));
}

/// hostPath volumes (allowed by PodSecurity's privileged level, this lab's default) show
/// the node's files; `readOnly` mounts refuse writes.
#[test]
fn host_path_volumes_mount_read_only_when_asked() {
    let lab = Lab::start_with_apiserver_args(1, &["--pod-security-default", "privileged"]);
    let image = lab.push_busybox("1");
    let host_dir = lab.dir.path().join("shared");
    std::fs::create_dir_all(&host_dir).expect("host dir");
    std::fs::write(host_dir.join("greeting"), "from the host\n").expect("host file");
    lab.apply_ok(&pod(
        "hostvol",
        &format!(
            "  restartPolicy: Never
  volumes:
  - name: ro
    hostPath: {{path: {dir}, type: Directory}}
  - name: rw
    hostPath: {{path: {dir}}}
  containers:
  - name: main
    image: {image}
    command: [sh, -c, 'cat /ro/greeting; touch /ro/nope 2>/dev/null && echo wrote-ro; echo from the pod > /rw/reply']
    volumeMounts:
    - {{name: ro, mountPath: /ro, readOnly: true}}
    - {{name: rw, mountPath: /rw}}
",
            dir = host_dir.display()
        ),
    ));
    lab.wait_for("hostvol", "Succeeded");
    assert_eq!(lab.ok(&["logs", "hostvol"]), "from the host\n");
    assert_eq!(
        std::fs::read_to_string(host_dir.join("reply")).expect("reply"),
        "from the pod\n"
    );
    assert!(!host_dir.join("nope").exists());
}

/// Limits become cgroup settings (memory limit, cpu quota and shares, the pod's pids
/// limit), and a container over its memory limit is OOMKilled with exit code 137.
#[test]
fn a_container_over_its_memory_limit_is_oom_killed() {
    let lab = Lab::start(1);
    let image = lab.push_busybox("1");
    lab.apply_ok(&pod(
        "hungry",
        &format!(
            "  restartPolicy: Never
  containers:
  - name: main
    image: {image}
    resources:
      requests: {{cpu: 250m, memory: 16Mi}}
      limits: {{cpu: 500m, memory: 32Mi}}
    command: [sh, -c, 'sleep 1; x=$(head -c 200000000 /dev/zero | tr \"\\\\0\" a); echo survived']
"
        ),
    ));
    lab.wait_for("hungry", "Running");
    let uid = lab.pod_json("hungry")["metadata"]["uid"]
        .as_str()
        .expect("uid")
        .to_string();
    let read = |file: &str| -> Vec<String> {
        cgroups_matching(&uid)
            .iter()
            .filter_map(|c| std::fs::read_to_string(c.join(file)).ok())
            .map(|s| s.trim().to_string())
            .collect()
    };
    // v1 names (this project's machines); v2 has memory.max, cpu.max, cpu.weight.
    let v2 = std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
    if v2 {
        assert!(read("memory.max").contains(&(32u64 << 20).to_string()));
        assert!(read("cpu.max").contains(&"50000 100000".to_string()));
    } else {
        assert!(read("memory.limit_in_bytes").contains(&(32u64 << 20).to_string()));
        assert!(read("cpu.cfs_quota_us").contains(&"50000".to_string()));
        assert!(read("cpu.shares").contains(&"256".to_string()));
    }
    assert!(
        read("pids.max").contains(&"4096".to_string()),
        "{:?}",
        read("pids.max")
    );
    lab.wait_for("hungry", "Failed");
    let json = lab.pod_json("hungry");
    let t = &status_of(&json, "main")["state"]["terminated"];
    assert_eq!(t["reason"], "OOMKilled", "{json}");
    assert_eq!(t["exitCode"], 137);
    assert!(!lab.ok(&["logs", "hungry"]).contains("survived"));
}

/// A failing liveness probe restarts the container: `Unhealthy` events, then `Killing`.
#[test]
fn a_failing_liveness_probe_restarts_the_container() {
    let lab = Lab::start(1);
    let image = lab.push_busybox("1");
    lab.apply_ok(&pod(
        "sick",
        &format!(
            "  containers:
  - name: main
    image: {image}
    command: [sh, -c, 'touch /tmp/healthy; sleep 2; rm /tmp/healthy; exec sleep 3600']
    livenessProbe:
      exec: {{command: [cat, /tmp/healthy]}}
      periodSeconds: 1
      failureThreshold: 2
"
        ),
    ));
    wait_until("a restart", Duration::from_secs(30), || {
        status_of(&lab.pod_json("sick"), "main")["restartCount"]
            .as_i64()
            .is_some_and(|n| n >= 1)
    });
    let describe = lab.ok(&["describe", "pod", "sick"]);
    assert!(describe.contains("Unhealthy"), "{describe}");
    // Repeats are one event with a count, as Kubernetes' event correlator makes them.
    assert_eq!(
        describe.matches("Liveness probe failed").count(),
        1,
        "{describe}"
    );
    assert!(describe.contains(" (x"), "{describe}");
    assert!(
        describe.contains("failed liveness probe, will be restarted"),
        "{describe}"
    );
    lab.ok(&["delete", "pod", "sick", "--grace-period", "0"]);
}

/// A startup probe (tcpSocket) holds the other probes back; a readiness probe (httpGet)
/// drives the container's `ready` and the pod's `Ready` condition.
#[test]
fn readiness_follows_the_http_probe_after_the_startup_probe() {
    let lab = Lab::start(1);
    let image = lab.push_busybox("1");
    lab.apply_ok(&pod(
        "web",
        &format!(
            "  containers:
  - name: main
    image: {image}
    command: [sh, -c, 'mkdir -p /www; sleep 1; httpd -p 8080 -h /www; sleep 2; echo ok > /www/ready; exec sleep 3600']
    startupProbe:
      tcpSocket: {{port: 8080}}
      periodSeconds: 1
      failureThreshold: 10
    readinessProbe:
      httpGet: {{path: /ready, port: 8080}}
      periodSeconds: 1
"
        ),
    ));
    lab.wait_for("web", "Running");
    let ready = |json: &serde_json::Value| {
        json["status"]["conditions"]
            .as_array()
            .and_then(|c| c.iter().find(|c| c["type"] == "Ready"))
            .map(|c| c["status"] == "True")
            .unwrap_or(false)
    };
    assert!(
        !ready(&lab.pod_json("web")),
        "not ready before /ready exists"
    );
    wait_until("the pod to be Ready", Duration::from_secs(30), || {
        ready(&lab.pod_json("web"))
    });
    let json = lab.pod_json("web");
    assert_eq!(status_of(&json, "main")["ready"], true);
    assert_eq!(status_of(&json, "main")["started"], true);
    assert!(lab.ok(&["get", "pod", "web"]).contains("1/1"));
    lab.ok(&["delete", "pod", "web", "--grace-period", "0"]);
}

/// Termination: a container that ignores SIGTERM is killed when its grace period ends,
/// and `delete --grace-period` sets that period.
#[test]
fn a_container_ignoring_sigterm_is_killed_after_the_grace_period() {
    let lab = Lab::start(1);
    let image = lab.push_busybox("1");
    lab.apply_ok(&pod_manifest(
        "stubborn",
        &image,
        "Always",
        "trap 'echo ignoring TERM' TERM; while true; do sleep 0.2; done",
    ));
    lab.wait_for("stubborn", "Running");
    let uid = lab.pod_json("stubborn")["metadata"]["uid"]
        .as_str()
        .expect("uid")
        .to_string();
    let start = std::time::Instant::now();
    lab.ok(&["delete", "pod", "stubborn", "--grace-period", "3"]);
    let took = start.elapsed();
    assert!(
        took >= Duration::from_secs(3),
        "killed before its grace period: {took:?}"
    );
    assert!(took < Duration::from_secs(20), "{took:?}");
    assert!(processes_in_cgroups(&uid).is_empty());
}

/// `logs -f` streams output as it is written and ends when the container does;
/// `--tail` and `--timestamps` shape it as kubectl does.
#[test]
fn logs_follow_tail_and_timestamps() {
    let lab = Lab::start(1);
    let image = lab.push_busybox("1");
    lab.apply_ok(&pod_manifest(
        "counter",
        &image,
        "Never",
        "sleep 1; for i in 1 2 3; do echo line $i; sleep 0.5; done",
    ));
    lab.wait_for("counter", "Running");
    // Started while the container runs: it must wait for the lines still to come.
    assert_eq!(
        lab.ok(&["logs", "-f", "counter"]),
        "line 1\nline 2\nline 3\n"
    );
    lab.wait_for("counter", "Succeeded");
    assert_eq!(lab.ok(&["logs", "counter", "--tail", "1"]), "line 3\n");
    // Following a container that has ended prints what it wrote and returns.
    assert_eq!(
        lab.ok(&["logs", "-f", "counter"]),
        "line 1\nline 2\nline 3\n"
    );
    let stamped = lab.ok(&["logs", "counter", "--timestamps"]);
    let first = stamped.lines().next().expect("a line");
    let (time, text) = first.split_once(' ').expect("time and text");
    assert_eq!(text, "line 1");
    assert!(
        time.ends_with('Z') && time.contains('T') && time.len() >= 20,
        "{time}"
    );
}

/// `exec` runs a command in the running container: stdout and stderr apart, stdin with
/// `-i`, and the command's exit code as the CLI's.
#[test]
fn exec_runs_a_command_in_the_container_with_its_exit_code() {
    let lab = Lab::start(1);
    let image = lab.push_busybox("1");
    lab.apply_ok(&pod_manifest(
        "target",
        &image,
        "Always",
        "echo inside > /tmp/mark; exec sleep 3600",
    ));
    lab.wait_for("target", "Running");
    let out = lab.kubelab(&[
        "exec",
        "target",
        "--",
        "sh",
        "-c",
        "cat /tmp/mark; echo oops >&2; exit 4",
    ]);
    assert_eq!(out.status.code(), Some(4));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "inside\n");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "oops\n");
    let mut child = std::process::Command::new(kubelab_tests::bin("kubelab"))
        .env("KUBELAB_CONFIG", lab.admin_config())
        .env_remove("KUBELAB_SERVER")
        .args(["exec", "-i", "target", "--", "tr", "a-z", "A-Z"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("kubelab exec");
    std::io::Write::write_all(child.stdin.as_mut().expect("stdin"), b"shout\n").expect("write");
    drop(child.stdin.take());
    let out = child.wait_with_output().expect("exec output");
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout), "SHOUT\n");
    let err = lab.fails(&["exec", "target", "--", "/no/such/command"]);
    assert!(err.contains("'/no/such/command' not found"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    lab.ok(&["delete", "pod", "target", "--grace-period", "0"]);
}

/// imagePullPolicy: Never with an image not on the node is ErrImageNeverPull; Always
/// pulls again even when the image is cached.
#[test]
fn image_pull_policies_behave_as_in_kubernetes() {
    let lab = Lab::start(1);
    let image = lab.push_busybox("1");
    let manifest = |name: &str, policy: &str| {
        pod(
            name,
            &format!(
                "  restartPolicy: Never
  containers:
  - name: main
    image: {image}
    imagePullPolicy: {policy}
    command: [sh, -c, 'echo ran']
"
            ),
        )
    };
    lab.apply_ok(&manifest("never", "Never"));
    lab.wait_status("never", "ErrImageNeverPull", Duration::from_secs(20));
    lab.apply_ok(&manifest("first", "IfNotPresent"));
    lab.wait_for("first", "Succeeded");
    lab.apply_ok(&manifest("again", "Always"));
    lab.wait_for("again", "Succeeded");
    let describe = lab.ok(&["describe", "pod", "again"]);
    assert!(describe.contains("Successfully pulled image"), "{describe}");
    lab.wait_for("never", "Succeeded");
}

/// A container that ran long enough before crashing starts its back-off afresh (the
/// kubelet resets after 10 minutes; this agent after 2 s): every restart waits 1 s, where
/// without the reset the waits would double (1 s, 2 s, 4 s).
#[test]
fn back_off_resets_after_a_long_enough_run() {
    let lab = Lab::start_with_agent_args(1, &["--backoff-reset", "2s"]);
    let image = lab.push_busybox("1");
    lab.apply_ok(&pod_manifest(
        "slowcrash",
        &image,
        "Always",
        "sleep 3; exit 1",
    ));
    let mut seen = std::collections::BTreeSet::new();
    wait_until("three restarts", Duration::from_secs(60), || {
        let json = lab.pod_json("slowcrash");
        let status = status_of(&json, "main");
        if let Some(message) = status["state"]["waiting"]["message"].as_str() {
            seen.insert(
                message
                    .split(" restarting")
                    .next()
                    .unwrap_or("")
                    .to_string(),
            );
        }
        status["restartCount"].as_i64().is_some_and(|n| n >= 3)
    });
    assert_eq!(
        seen.into_iter().collect::<Vec<_>>(),
        ["back-off 1s"],
        "every wait is the initial one"
    );
}

/// Logs are kept in the kubelet's CRI format, one file per run, and rotated by size
/// (`--container-log-max-bytes`); `logs` reads the current file.
#[test]
fn log_files_use_the_cri_format_and_rotate_by_size() {
    let lab = Lab::start_with_agent_args(1, &["--container-log-max-bytes", "4096"]);
    let image = lab.push_busybox("1");
    lab.apply_ok(&pod_manifest(
        "chatty",
        &image,
        "Never",
        "i=0; while [ $i -lt 500 ]; do echo message $i; i=$((i+1)); done; echo oops >&2",
    ));
    lab.wait_for("chatty", "Succeeded");
    let uid = lab.pod_json("chatty")["metadata"]["uid"]
        .as_str()
        .expect("uid")
        .to_string();
    let dir = lab
        .agent_root(&lab.node_names[0])
        .join("logs")
        .join(format!("default_chatty_{uid}"))
        .join("main");
    let current = std::fs::read_to_string(dir.join("0.log")).expect("current log file");
    assert!(current.len() <= 4096, "{} bytes", current.len());
    assert!(dir.join("0.log.1").exists(), "a rotated file");
    let last = current.lines().last().expect("a record");
    let fields: Vec<&str> = last.splitn(4, ' ').collect();
    assert_eq!(fields[1..], ["stderr", "F", "oops"], "{last}");
    assert!(fields[0].ends_with('Z'), "{last}");
    let shown = lab.ok(&["logs", "chatty"]);
    assert!(shown.ends_with("message 499\noops\n"), "{shown}");
}
