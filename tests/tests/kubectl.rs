//! The real `kubectl`, unchanged and with its default flags, drives a lab: what it prints
//! is what a Kubernetes user expects to read (columns, statuses, messages).

use std::time::Duration;

use kubelab_tests::{pod_manifest, wait_until, Lab};

fn lines(text: &str) -> Vec<Vec<String>> {
    text.lines()
        .map(|l| l.split_whitespace().map(String::from).collect())
        .collect()
}

/// Discovery, version, nodes, namespaces and identity read as from a Kubernetes cluster.
#[test]
fn kubectl_reads_the_cluster() {
    let lab = Lab::start(1);
    let node = &lab.node_names[0];
    let version = lab.kubectl_ok(&["version"]);
    assert!(version.contains("Server Version: v1.32"), "{version}");
    let resources = lab.kubectl_ok(&["api-resources"]);
    for row in ["pods ", "po ", "nodes ", "namespaces ", "events "] {
        assert!(resources.contains(row), "{row:?} missing in:\n{resources}");
    }
    let nodes = lines(&lab.kubectl_ok(&["get", "nodes"]));
    assert_eq!(nodes[0], ["NAME", "STATUS", "ROLES", "AGE", "VERSION"]);
    assert_eq!(nodes[1][0], *node);
    assert_eq!(nodes[1][1], "Ready");
    assert_eq!(nodes[1][2], "<none>");
    let wide = lines(&lab.kubectl_ok(&["get", "no", "-o", "wide"]));
    assert_eq!(&wide[0][5..7], ["INTERNAL-IP", "EXTERNAL-IP"]);
    let namespaces = lab.kubectl_ok(&["get", "ns"]);
    // The four namespaces every cluster starts with.
    for ns in ["default", "kube-node-lease", "kube-public", "kube-system"] {
        assert!(
            namespaces
                .lines()
                .any(|l| l.split_whitespace().collect::<Vec<_>>()[..2] == [ns, "Active"]),
            "{namespaces}"
        );
    }
    assert_eq!(
        lab.kubectl_ok(&[
            "get",
            "namespace",
            "default",
            "-o",
            "jsonpath={.status.phase}"
        ]),
        "Active"
    );
    let whoami = lab.kubectl_ok(&["auth", "whoami"]);
    assert!(whoami.contains("kubernetes-admin"), "{whoami}");
    assert_eq!(lab.kubectl_ok(&["get", "--raw", "/healthz"]), "ok");
    let node_json: serde_json::Value =
        serde_json::from_str(&lab.kubectl_ok(&["get", "node", node, "-o", "json"])).unwrap();
    assert_eq!(node_json["kind"], "Node");
    assert_eq!(node_json["status"]["conditions"][0]["type"], "Ready");
    // The daemons' logs, written to files here, carry no terminal colour codes.
    assert!(
        !lab.logs().contains('\u{1b}'),
        "colour codes in the log files"
    );
}

/// `apply` says created, unchanged, configured; the server validates (an unknown field
/// is kube-apiserver's strict decoding error); errors read as kubectl prints them.
#[test]
fn kubectl_apply_and_its_errors() {
    let lab = Lab::start(1);
    let manifest = pod_manifest("app", "127.0.0.1:1/none:1", "Never", "sleep 60");
    let apply = |text: &str| lab.kubectl_with_input(&["apply", "-f", "-"], text);
    let out = apply(&manifest);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "pod/app created\n");
    let out = apply(&manifest);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "pod/app unchanged\n");
    let labelled = manifest.replace("  name: app\n", "  name: app\n  labels:\n    tier: web\n");
    let out = apply(&labelled);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "pod/app configured\n");
    assert_eq!(
        lab.kubectl_ok(&[
            "get",
            "pod",
            "app",
            "-o",
            "jsonpath={.metadata.labels.tier}"
        ]),
        "web"
    );
    // The same pod read back has Kubernetes' defaults.
    let pod: serde_json::Value =
        serde_json::from_str(&lab.kubectl_ok(&["get", "pod", "app", "-o", "json"])).unwrap();
    assert_eq!(pod["spec"]["dnsPolicy"], "ClusterFirst");
    assert_eq!(pod["spec"]["schedulerName"], "default-scheduler");
    assert_eq!(
        pod["spec"]["containers"][0]["imagePullPolicy"],
        "IfNotPresent"
    );
    assert_eq!(
        pod["spec"]["containers"][0]["terminationMessagePath"],
        "/dev/termination-log"
    );
    assert_eq!(pod["spec"]["tolerations"][0]["tolerationSeconds"], 300);
    assert_eq!(pod["metadata"]["generation"], 1);

    let misspelt = pod_manifest("typo", "127.0.0.1:1/none:1", "Never", "true")
        .replace("    command:", "    comand:");
    let out = apply(&misspelt);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(r#"strict decoding error: unknown field "spec.containers[0].comand""#),
        "{err}"
    );
    assert!(err.contains("Error from server (BadRequest)"), "{err}");

    let err = lab.kubectl_fails(&["get", "pod", "nosuch"]);
    assert_eq!(
        err.trim(),
        r#"Error from server (NotFound): pods "nosuch" not found"#
    );
    let out = lab.kubectl_with_input(&["create", "-f", "-"], &manifest);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(r#"Error from server (AlreadyExists): error when creating "STDIN": pods "app" already exists"#),
        "{err}"
    );
    let bad = pod_manifest("Bad_Name", "x:1", "Never", "true");
    let out = apply(&bad);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is invalid"), "{err}");
    let changed = labelled.replace("sleep 60", "sleep 61");
    let out = apply(&changed);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(
            r#"The Pod "app" is invalid: spec: Forbidden: pod updates may not change fields"#
        ),
        "{err}"
    );
    // A write over a stale read is a conflict.
    let mut stale = pod.clone();
    stale["metadata"]["labels"] = serde_json::json!({ "tier": "db" });
    lab.kubectl_ok(&["label", "pod", "app", "tier=api", "--overwrite"]);
    let out = lab.kubectl_with_input(&["replace", "-f", "-"], &stale.to_string());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("Error from server (Conflict)"), "{err}");
    assert!(err.contains("the object has been modified"), "{err}");

    let out = lab.kubectl_with_input(&["delete", "-f", "-"], &manifest);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "pod \"app\" deleted\n"
    );
}

/// Labels, annotations, the three patch types, dry runs, and a node's cordon and taints.
#[test]
fn kubectl_changes_labels_patches_and_nodes() {
    let lab = Lab::start(1);
    let node = lab.node_names[0].clone();
    let manifest = pod_manifest("p", "127.0.0.1:1/none:1", "Never", "sleep 60");
    lab.kubectl_with_input(&["apply", "-f", "-"], &manifest);
    assert_eq!(
        lab.kubectl_ok(&["label", "pod", "p", "a=1"]),
        "pod/p labeled\n"
    );
    let err = lab.kubectl_fails(&["label", "pod", "p", "a=2"]);
    assert!(err.contains("--overwrite is false"), "{err}");
    lab.kubectl_ok(&["label", "pod", "p", "a=2", "--overwrite"]);
    assert_eq!(
        lab.kubectl_ok(&["label", "pod", "p", "a-"]),
        "pod/p unlabeled\n"
    );
    assert_eq!(
        lab.kubectl_ok(&["annotate", "pod", "p", "note=hi"]),
        "pod/p annotated\n"
    );
    lab.kubectl_ok(&[
        "patch",
        "pod",
        "p",
        "-p",
        r#"{"metadata":{"labels":{"s":"1"}}}"#,
    ]);
    lab.kubectl_ok(&[
        "patch",
        "pod",
        "p",
        "--type=merge",
        "-p",
        r#"{"metadata":{"labels":{"m":"2"}}}"#,
    ]);
    lab.kubectl_ok(&[
        "patch",
        "pod",
        "p",
        "--type=json",
        "-p",
        r#"[{"op":"add","path":"/metadata/labels/j","value":"3"}]"#,
    ]);
    let shown = lab.kubectl_ok(&["get", "pod", "p", "--show-labels"]);
    assert!(shown.contains("j=3,m=2,s=1"), "{shown}");
    assert_eq!(
        lab.kubectl_ok(&["get", "pods", "-l", "m=2", "-o", "name"]),
        "pod/p\n"
    );
    // A dry run changes nothing.
    lab.kubectl_ok(&["label", "pod", "p", "dry=run", "--dry-run=server"]);
    let labels = lab.kubectl_ok(&["get", "pod", "p", "-o", "jsonpath={.metadata.labels}"]);
    assert!(!labels.contains("dry"), "{labels}");

    assert_eq!(
        lab.kubectl_ok(&["cordon", &node]),
        format!("node/{node} cordoned\n")
    );
    let nodes = lab.kubectl_ok(&["get", "nodes"]);
    assert!(nodes.contains("Ready,SchedulingDisabled"), "{nodes}");
    lab.kubectl_ok(&["uncordon", &node]);
    assert_eq!(
        lab.kubectl_ok(&["taint", "nodes", &node, "gpu=yes:NoSchedule"]),
        format!("node/{node} tainted\n")
    );
    let taints = lab.kubectl_ok(&["get", "node", &node, "-o", "jsonpath={.spec.taints[0].key}"]);
    assert_eq!(taints, "gpu");
    lab.kubectl_ok(&["taint", "nodes", &node, "gpu-"]);
    lab.kubectl_ok(&["label", "node", &node, "disk=ssd"]);
    assert!(lab
        .kubectl_ok(&["get", "nodes", "-l", "disk=ssd", "-o", "name"])
        .contains(&node));
}

/// A pod's whole life through kubectl: run, wait, get (with kube-apiserver's columns),
/// logs (tail, follow), exec (exit codes, stdin), describe with its events, delete.
#[test]
fn kubectl_runs_a_pod_and_follows_it() {
    let lab = Lab::start(1);
    let image = lab.push_busybox("kubectl");
    lab.kubectl_ok(&[
        "run",
        "talk",
        &format!("--image={image}"),
        "--restart=Never",
        "--",
        "sh",
        "-c",
        "echo one; echo two; while true; do sleep 0.2; echo tick; done",
    ]);
    lab.kubectl_ok(&["wait", "--for=condition=Ready", "pod/talk", "--timeout=60s"]);
    let table = lines(&lab.kubectl_ok(&["get", "pods"]));
    assert_eq!(table[0], ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]);
    assert_eq!(&table[1][..4], ["talk", "1/1", "Running", "0"]);
    let wide = lab.kubectl_ok(&["get", "pods", "-o", "wide"]);
    assert!(
        wide.lines().next().unwrap_or("").contains("IP") && wide.contains("NOMINATED NODE"),
        "{wide}"
    );
    assert!(wide.contains(&lab.node_names[0]), "{wide}");

    let first = lab.kubectl_ok(&["logs", "talk", "--tail=-1"]);
    assert!(first.starts_with("one\ntwo\n"), "{first}");
    assert_eq!(
        lab.kubectl_ok(&["logs", "talk", "--tail=1"])
            .lines()
            .count(),
        1
    );
    let stamped = lab.kubectl_ok(&["logs", "talk", "--timestamps", "--tail=1"]);
    assert!(stamped.starts_with("20"), "{stamped}");
    // -f streams lines written after it started.
    let mut follow = lab
        .kubectl_command()
        .args(["logs", "-f", "talk", "--tail=0"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("kubectl logs -f");
    let mut stdout = follow.stdout.take().expect("stdout");
    let mut buf = [0u8; 64];
    let n = std::io::Read::read(&mut stdout, &mut buf).expect("read logs -f");
    assert!(String::from_utf8_lossy(&buf[..n]).contains("tick"));
    let _ = follow.kill();
    let _ = follow.wait();

    assert_eq!(
        lab.kubectl_ok(&["exec", "talk", "--", "echo", "hi"]),
        "hi\n"
    );
    let out = lab.kubectl(&["exec", "talk", "--", "sh", "-c", "echo oops >&2; exit 3"]);
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("oops"));
    let out = lab.kubectl_with_input(&["exec", "-i", "talk", "--", "cat"], "piped\n");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "piped\n");

    let described = lab.kubectl_ok(&["describe", "pod", "talk"]);
    for line in [
        "Status:       Running",
        "Scheduled",
        "Pulled",
        "Started",
        "QoS Class:",
    ] {
        assert!(
            described.contains(line),
            "{line:?} missing in:\n{described}"
        );
    }
    let events = lab.kubectl_ok(&["events", "--for", "pod/talk"]);
    assert!(events.contains("Started"), "{events}");
    let events = lab.kubectl_ok(&["get", "events"]);
    assert!(events.contains("pod/talk"), "{events}");

    let out = lab.kubectl(&["delete", "pod", "talk", "--grace-period=1"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "pod \"talk\" deleted\n"
    );
    // kubectl waited until it was gone.
    let err = lab.kubectl_fails(&["get", "pod", "talk"]);
    assert!(err.contains("NotFound"), "{err}");
}

/// `exec -it` gives a real terminal: a prompt, `tty` names a terminal, the exit code
/// comes back. (kubectl before 1.30 speaks SPDY: it is told which version it needs.)
#[test]
fn kubectl_exec_with_a_terminal() {
    let lab = Lab::start(1);
    let image = lab.push_busybox("tty");
    lab.kubectl_with_input(
        &["apply", "-f", "-"],
        &pod_manifest("shell", &image, "Never", "sleep 600"),
    );
    lab.kubectl_ok(&[
        "wait",
        "--for=condition=Ready",
        "pod/shell",
        "--timeout=60s",
    ]);
    if lab.kubectl_minor() < 30 {
        let err = lab.kubectl_fails(&["exec", "shell", "--", "true"]);
        assert!(err.contains("kubectl 1.30"), "{err}");
        return;
    }
    // `script` gives kubectl a terminal of its own, as a user's would be.
    let config = lab.admin_config();
    let command = format!(
        "kubectl --kubeconfig {} exec -it shell -- sh",
        config.display()
    );
    let mut child = std::process::Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .env("KUBECACHEDIR", lab.dir.path().join("kube-cache"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("script");
    let mut stdin = child.stdin.take().expect("stdin");
    std::thread::sleep(Duration::from_secs(2));
    std::io::Write::write_all(&mut stdin, b"tty; echo $((6*7)); exit 4\n").expect("type");
    let out = child.wait_with_output().expect("script");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("/dev/pts/"), "{text}");
    assert!(text.contains("42"), "{text}");
    assert!(text.contains("# "), "no prompt in {text}");
    assert_eq!(out.status.code(), Some(4), "{text}");
}

/// `get -w` prints the table once, then a row per change; a watch resumes from a
/// resource version, and one older than the history kept is 410 Gone (relist).
#[test]
fn kubectl_watches() {
    let lab = Lab::start_with_apiserver_args(1, &["--watch-history", "20"]);
    let mut watch = lab
        .kubectl_command()
        .args(["get", "pods", "-w"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("kubectl get -w");
    let stdout = watch.stdout.take().expect("stdout");
    let seen = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let reader = {
        let seen = seen.clone();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                seen.lock().unwrap().push_str(&(line + "\n"));
            }
        })
    };
    std::thread::sleep(Duration::from_secs(1));
    lab.kubectl_with_input(
        &["apply", "-f", "-"],
        &pod_manifest("w1", "127.0.0.1:1/none:1", "Never", "true"),
    );
    wait_until("the watch to show w1", Duration::from_secs(20), || {
        seen.lock().unwrap().contains("w1 ")
    });
    let _ = watch.kill();
    let _ = watch.wait();
    let _ = reader.join();
    let text = seen.lock().unwrap().clone();
    assert_eq!(text.matches("NAME").count(), 1, "one header:\n{text}");

    // Many writes later, revision 1 is outside the history kept.
    for i in 0..25 {
        lab.kubectl_ok(&["label", "pod", "w1", &format!("n={i}"), "--overwrite"]);
    }
    let raw = lab.kubectl_ok(&[
        "get",
        "--raw",
        "/api/v1/namespaces/default/pods?watch=true&resourceVersion=1&timeoutSeconds=2",
    ]);
    let event: serde_json::Value =
        serde_json::from_str(raw.lines().next().unwrap_or("{}")).unwrap();
    assert_eq!(event["type"], "ERROR", "{raw}");
    assert_eq!(event["object"]["code"], 410, "{raw}");
    // From a recent version, the changes after it.
    let rv = lab.kubectl_ok(&[
        "get",
        "pod",
        "w1",
        "-o",
        "jsonpath={.metadata.resourceVersion}",
    ]);
    lab.kubectl_ok(&["label", "pod", "w1", "after=yes"]);
    let raw = lab.kubectl_ok(&[
        "get",
        "--raw",
        &format!(
            "/api/v1/namespaces/default/pods?watch=true&resourceVersion={rv}&timeoutSeconds=2"
        ),
    ]);
    // The changes after that version, the label among them (the agent's status
    // writes may come first: the pod keeps retrying its pull).
    let events: Vec<serde_json::Value> = raw
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_default())
        .collect();
    assert!(events.iter().all(|e| e["type"] == "MODIFIED"), "{raw}");
    assert!(
        events
            .iter()
            .any(|e| e["object"]["metadata"]["labels"]["after"] == "yes"),
        "{raw}"
    );
}

/// Who may do what holds over REST as over gRPC: no token is 401, a node's credential
/// cannot create pods (403), as kubectl prints them.
#[test]
fn kubectl_is_authenticated_and_authorized() {
    let lab = Lab::start(1);
    let node = &lab.node_names[0];
    let node_config = lab.agent_root(node).join("node.conf");
    let out = lab
        .kubectl_command()
        .env("KUBECONFIG", &node_config)
        .args(["get", "pods"])
        .output()
        .expect("kubectl");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("Error from server (Forbidden)"), "{err}");
    let bad = lab.dir.path().join("bad.conf");
    let text = std::fs::read_to_string(lab.admin_config()).unwrap();
    let token_line = text
        .lines()
        .find(|l| l.trim_start().starts_with("token:"))
        .unwrap()
        .to_string();
    std::fs::write(&bad, text.replace(&token_line, "    token: wrong")).unwrap();
    let out = lab
        .kubectl_command()
        .env("KUBECONFIG", &bad)
        .args(["get", "pods"])
        .output()
        .expect("kubectl");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("error: You must be logged in to the server (invalid token"),
        "{err}"
    );
}

/// `apply --server-side`: created, then a field another manager changed is a conflict
/// (kubectl's own message), `--force-conflicts` takes it over, and a field the manager no
/// longer applies is removed; `managedFields` say who set what.
#[test]
fn kubectl_server_side_apply_tracks_field_managers() {
    let lab = Lab::start(1);
    let manifest = pod_manifest("ssa", "127.0.0.1:1/none:1", "Never", "sleep 60").replace(
        "  name: ssa\n",
        "  name: ssa\n  labels:\n    a: \"1\"\n    b: \"1\"\n",
    );
    let apply = |text: &str, force: bool| {
        let mut args = vec!["apply", "--server-side", "-f", "-"];
        if force {
            args.push("--force-conflicts");
        }
        lab.kubectl_with_input(&args, text)
    };
    let out = apply(&manifest, false);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "pod/ssa serverside-applied\n"
    );
    lab.kubectl_ok(&["label", "pod", "ssa", "a=2", "--overwrite"]);
    let out = apply(&manifest, false);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(r#"Apply failed with 1 conflict: conflict with "kubectl-label" using v1: .metadata.labels.a"#),
        "{err}"
    );
    assert!(apply(&manifest, true).status.success());
    let labels = || lab.kubectl_ok(&["get", "pod", "ssa", "-o", "jsonpath={.metadata.labels}"]);
    assert_eq!(labels(), r#"{"a":"1","b":"1"}"#);
    let fewer = manifest.replace("    b: \"1\"\n", "");
    assert!(apply(&fewer, false).status.success());
    assert_eq!(labels(), r#"{"a":"1"}"#);
    let managers = lab.kubectl_ok(&[
        "get",
        "pod",
        "ssa",
        "--show-managed-fields",
        "-o",
        "jsonpath={range .metadata.managedFields[*]}{.manager}/{.operation} {end}",
    ]);
    assert_eq!(managers.trim(), "kubectl/Apply", "{managers}");
}

/// An old kubectl (Debian's 1.20, which `make test` unpacks into target/) works too:
/// its OpenAPI v2 validation, apply, get, label, patch and delete; exec, which it speaks
/// over SPDY, is refused saying which version it needs.
#[test]
fn an_old_kubectl_works_but_for_exec() {
    let old = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/kubectl-1.20/usr/bin/kubectl");
    if !old.exists() {
        eprintln!("skipped: no {} (make test unpacks it)", old.display());
        return;
    }
    let lab = Lab::start(1);
    let run = |args: &[&str], input: Option<&str>| {
        let mut command = std::process::Command::new(&old);
        command
            .env("KUBECONFIG", lab.admin_config())
            .env("KUBECACHEDIR", lab.dir.path().join("kube-cache-1.20"))
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut child = command.spawn().expect("kubectl 1.20");
        if let Some(input) = input {
            std::io::Write::write_all(&mut child.stdin.take().expect("stdin"), input.as_bytes())
                .expect("write");
        }
        drop(child.stdin.take());
        child.wait_with_output().expect("kubectl 1.20")
    };
    let manifest = pod_manifest("old", "127.0.0.1:1/none:1", "Never", "sleep 60");
    let out = run(&["apply", "-f", "-"], Some(&manifest));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "pod/old created\n",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run(&["apply", "-f", "-"], Some(&manifest));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "pod/old unchanged\n");
    let out = run(&["label", "pod", "old", "v=1"], None);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "pod/old labeled\n");
    let out = run(&["get", "pods", "--show-labels"], None);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("old") && text.contains("v=1"), "{text}");
    let out = run(&["get", "nodes"], None);
    assert!(String::from_utf8_lossy(&out.stdout).contains("Ready"));
    let out = run(&["exec", "old", "--", "true"], None);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("kubectl 1.30"), "{err}");
    let out = run(&["delete", "pod", "old", "--grace-period=1"], None);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "pod \"old\" deleted\n"
    );
}
