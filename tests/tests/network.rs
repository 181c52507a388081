//! Pod networking through the real CNI plugins (bridge, host-local, loopback): every pod
//! gets an IP from its node's range, pods and the host reach each other, and nothing is
//! left once pods are gone.

use std::io::{Read, Write};
use std::path::Path;
use std::time::Duration;

use kubelab_tests::{pod_manifest, wait_until, Lab};

fn pod_ip(lab: &Lab, name: &str) -> String {
    lab.pod_json(name)["status"]["podIP"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// A pod bound to a given node, running `sh -c SCRIPT`.
fn pod_on(name: &str, node: &str, image: &str, script: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  nodeName: {node}\n  restartPolicy: Never\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: main\n    image: {image}\n    command: [\"sh\", \"-c\", {script:?}]\n"
    )
}

const SERVE: &str =
    "mkdir -p /www && echo hello from $(hostname) > /www/index.html && exec httpd -f -v -p 8080 -h /www";

/// Each node gets a /24 of the cluster CIDR; a pod on one agent fetches a page from a
/// pod on the other by IP, and the server sees the client's own pod IP (no NAT between
/// pods, as Kubernetes' network model requires).
#[test]
fn pods_reach_each_other_by_ip_across_agents_without_nat() {
    let lab = Lab::start(2);
    let image = lab.push_busybox("1");
    let nodes = lab.ok(&["get", "nodes", "-o", "wide"]);
    let prefix = lab.cluster_cidr.trim_end_matches(".0.0/16");
    assert!(nodes.contains(&format!("{prefix}.0.0/24")), "{nodes}");
    assert!(nodes.contains(&format!("{prefix}.1.0/24")), "{nodes}");

    lab.apply_ok(&pod_on("server", &lab.node_names[0], &image, SERVE));
    lab.wait_for("server", "Running");
    let server_ip = pod_ip(&lab, "server");
    assert!(server_ip.starts_with(&format!("{prefix}.")), "{server_ip}");
    let fetch = format!(
        "for i in 1 2 3 4 5 6 7 8 9 10; do wget -q -O - http://{server_ip}:8080/ && exit 0; sleep 0.3; done; exit 1"
    );
    lab.apply_ok(&pod_on("client", &lab.node_names[1], &image, &fetch));
    lab.wait_for("client", "Succeeded");
    assert_eq!(lab.ok(&["logs", "client"]), "hello from server\n");
    let client_ip = pod_ip(&lab, "client");
    assert_ne!(
        client_ip.rsplit_once('.').map(|p| p.0),
        server_ip.rsplit_once('.').map(|p| p.0),
        "the two pods are on different nodes' ranges"
    );
    // busybox httpd -v logs each client's address.
    let served = lab.ok(&["logs", "server"]);
    assert!(
        served.contains(&client_ip),
        "the server saw {served:?}, not {client_ip}"
    );
    let wide = lab.ok(&["get", "pods", "-o", "wide"]);
    assert!(wide.contains(&server_ip), "{wide}");
    lab.ok(&["delete", "pod", "server", "--grace-period", "0"]);
}

/// The host reaches a pod by its IP; a pod reaches the host through its gateway.
#[test]
fn the_host_reaches_pods_and_pods_reach_the_host() {
    let lab = Lab::start(1);
    let image = lab.push_busybox("1");
    lab.apply_ok(&pod_on("web", &lab.node_names[0], &image, SERVE));
    lab.wait_for("web", "Running");
    let ip = pod_ip(&lab, "web");
    let mut page = String::new();
    wait_until("the pod's server", Duration::from_secs(10), || {
        let Ok(mut s) = std::net::TcpStream::connect((ip.as_str(), 8080)) else {
            return false;
        };
        let _ = s.write_all(b"GET / HTTP/1.0\r\n\r\n");
        page.clear();
        s.read_to_string(&mut page).is_ok() && page.contains("hello from web")
    });

    // A one-answer HTTP server on the host, on every address.
    let listener = std::net::TcpListener::bind("0.0.0.0:0").expect("listen");
    let port = listener.local_addr().expect("addr").port();
    let server = std::thread::spawn(move || {
        let (mut s, peer) = listener.accept().expect("accept");
        let mut request = [0u8; 1024];
        let _ = s.read(&mut request);
        let _ = s.write_all(b"HTTP/1.0 200 OK\r\nContent-Length: 10\r\n\r\nfrom host\n");
        peer.ip().to_string()
    });
    let gateway = format!("{}.1", ip.rsplit_once('.').expect("ipv4").0);
    lab.apply_ok(&pod_on(
        "caller",
        &lab.node_names[0],
        &image,
        &format!("wget -q -O - http://{gateway}:{port}/"),
    ));
    lab.wait_for("caller", "Succeeded");
    assert_eq!(lab.ok(&["logs", "caller"]), "from host\n");
    assert_eq!(server.join().expect("host server"), pod_ip(&lab, "caller"));
    lab.ok(&["delete", "pod", "web", "--grace-period", "0"]);
}

/// Each pod has an /etc/hosts naming it with its IP and an /etc/resolv.conf; a
/// hostNetwork pod (PodSecurity's privileged level: the lab's default here) is in the
/// host's network, with the host's name and addresses.
#[test]
fn pods_get_hosts_files_and_host_network_pods_share_the_host() {
    let lab = Lab::start_with_apiserver_args(1, &["--pod-security-default", "privileged"]);
    let image = lab.push_busybox("1");
    lab.apply_ok(&pod_manifest(
        "named",
        &image,
        "Never",
        "cat /etc/hosts; test -f /etc/resolv.conf && echo resolv-ok",
    ));
    lab.wait_for("named", "Succeeded");
    let ip = pod_ip(&lab, "named");
    let out = lab.ok(&["logs", "named"]);
    assert!(out.contains(&format!("{ip}\tnamed")), "{out}");
    assert!(out.contains("resolv-ok"), "{out}");
    // Finished, the pod keeps its IP in its status but gives the address back.
    // (Its pinned namespaces stay until it is deleted.)
    wait_until("the lease to be released", Duration::from_secs(10), || {
        network_leftovers(&lab, &[])
            .iter()
            .all(|l| l.starts_with("mount:"))
    });

    lab.apply_ok(&format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: onhost\nspec:\n  hostNetwork: true\n  restartPolicy: Never\n  containers:\n  - name: main\n    image: {image}\n    command: [sh, -c, 'hostname; cat /proc/net/dev']\n"
    ));
    lab.wait_for("onhost", "Succeeded");
    let out = lab.ok(&["logs", "onhost"]);
    let host = nix::unistd::gethostname().expect("hostname");
    assert_eq!(out.lines().next(), host.to_str(), "{out}");
    let bridge = lab.bridge_of(&lab.node_names[0]);
    assert!(
        out.contains(&format!("{bridge}:")),
        "the host's interfaces: {out}"
    );
    let json = lab.pod_json("onhost");
    assert_eq!(json["status"]["podIP"], json["status"]["hostIP"]);
}

/// What the agent's node holds of the pod network: veths on its bridge, host-local's
/// leases, pinned namespaces, and iptables rules naming a pod.
fn network_leftovers(lab: &Lab, uids: &[String]) -> Vec<String> {
    let mut found = Vec::new();
    let node = &lab.node_names[0];
    let bridge = lab.bridge_of(node);
    let veths = std::process::Command::new("ip")
        .args(["-o", "link", "show", "master", &bridge])
        .output()
        .expect("ip link");
    found.extend(
        String::from_utf8_lossy(&veths.stdout)
            .lines()
            .map(|l| format!("veth: {l}")),
    );
    let leases = lab.agent_root(node).join("cni/networks/kubelab");
    for entry in std::fs::read_dir(&leases).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name != "lock" && !name.starts_with("last_reserved_ip") {
            found.push(format!("lease: {name}"));
        }
    }
    for uid in uids {
        if lab.agent_root(node).join("pods").join(uid).exists() {
            found.push(format!("pod dir: {uid}"));
        }
    }
    found.extend(
        kubelab_tests::mounts_under(lab.dir.path())
            .into_iter()
            .map(|m| format!("mount: {m}")),
    );
    let rules = std::process::Command::new("iptables-save")
        .output()
        .expect("iptables-save");
    for line in String::from_utf8_lossy(&rules.stdout).lines() {
        if uids.iter().any(|uid| line.contains(uid.as_str())) {
            found.push(format!("rule: {line}"));
        }
    }
    found
}

/// After 20 pods are deleted, no veth, lease, namespace or iptables rule of theirs is left.
#[test]
fn deleting_twenty_pods_leaves_no_network_behind() {
    let lab = Lab::start(1);
    let image = lab.push_busybox("1");
    let names: Vec<String> = (0..20).map(|i| format!("net-{i}")).collect();
    for name in &names {
        lab.apply_ok(&pod_manifest(name, &image, "Always", "exec sleep 3600"));
    }
    for name in &names {
        lab.wait_for(name, "Running");
    }
    let uids: Vec<String> = names
        .iter()
        .map(|n| {
            lab.pod_json(n)["metadata"]["uid"]
                .as_str()
                .expect("uid")
                .to_string()
        })
        .collect();
    let ips: std::collections::BTreeSet<String> = names.iter().map(|n| pod_ip(&lab, n)).collect();
    assert_eq!(ips.len(), 20, "twenty distinct pod IPs: {ips:?}");
    assert_eq!(
        network_leftovers(&lab, &uids)
            .iter()
            .filter(|l| l.starts_with("veth"))
            .count(),
        20
    );
    for name in &names {
        lab.ok(&["delete", "pod", name, "--grace-period", "0"]);
    }
    let left = network_leftovers(&lab, &uids);
    assert!(left.is_empty(), "left behind: {left:#?}");
}

/// The agent remembers what it attached: a pod started before an agent restart (`kill -9`)
/// is detached by the new agent when deleted, leaving nothing.
#[test]
fn a_restarted_agent_still_detaches_what_the_old_one_attached() {
    let mut lab = Lab::start(1);
    let image = lab.push_busybox("1");
    lab.apply_ok(&pod_manifest("kept", &image, "Always", "exec sleep 3600"));
    lab.wait_for("kept", "Running");
    let ip = pod_ip(&lab, "kept");
    let uid = lab.pod_json("kept")["metadata"]["uid"]
        .as_str()
        .expect("uid")
        .to_string();
    lab.kill_agent(0);
    lab.restart_agent(0);
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(pod_ip(&lab, "kept"), ip, "the re-adopted pod keeps its IP");
    lab.ok(&["delete", "pod", "kept", "--grace-period", "0"]);
    let left = network_leftovers(&lab, std::slice::from_ref(&uid));
    assert!(left.is_empty(), "left behind: {left:#?}");
}

/// A missing plugin, and a plugin that fails, are shown on the pod in the plugin's words.
#[test]
fn missing_and_failing_plugins_are_shown_on_the_pod() {
    let lab = Lab::start_with_agent_args(1, &["--cni-bin-dir", "/nonexistent/cni"]);
    let image = lab.push_busybox("1");
    lab.apply_ok(&pod_manifest("nonet", &image, "Never", "true"));
    wait_until("the sandbox failure", Duration::from_secs(20), || {
        lab.ok(&["describe", "pod", "nonet"])
            .contains("FailedCreatePodSandBox")
    });
    let describe = lab.ok(&["describe", "pod", "nonet"]);
    assert!(
        describe.contains("not found in /nonexistent/cni"),
        "{describe}"
    );
    assert!(lab
        .ok(&["get", "pod", "nonet"])
        .contains("ContainerCreating"));
    drop(lab);

    // The bridge plugin makes its bridge before it fails on the address range; a user's
    // own network is theirs to clean up, so the test removes that bridge itself.
    struct Bridge(String);
    impl Drop for Bridge {
        fn drop(&mut self) {
            let _ = std::process::Command::new("ip")
                .args(["link", "del", &self.0])
                .stderr(std::process::Stdio::null())
                .status();
        }
    }
    let bridge = Bridge(format!("klbad{}", std::process::id() % 100_000));
    let dir = tempfile::tempdir().expect("tempdir");
    let conf = dir.path().join("bad.conflist");
    std::fs::write(
        &conf,
        format!(
            r#"{{"cniVersion": "1.0.0", "name": "bad", "plugins": [{{"type": "bridge", "bridge": "{}", "ipam": {{"type": "host-local", "ranges": [[{{"subnet": "10.1.2.0/99"}}]]}}}}]}}"#,
            bridge.0
        ),
    )
    .expect("conf");
    let lab = Lab::start_with_agent_args(1, &["--cni-conf", conf.to_str().expect("path")]);
    let image = lab.push_busybox("1");
    lab.apply_ok(&pod_manifest("badnet", &image, "Never", "true"));
    wait_until("the plugin's failure", Duration::from_secs(20), || {
        lab.ok(&["describe", "pod", "badnet"])
            .contains("FailedCreatePodSandBox")
    });
    let describe = lab.ok(&["describe", "pod", "badnet"]);
    assert!(
        describe.contains(r#"plugin type="bridge" failed (add)"#),
        "{describe}"
    );
    assert!(
        describe.contains("10.1.2.0/99"),
        "the plugin's own message: {describe}"
    );
}

/// A hostNetwork pod's probes reach it on the host's own network (in a lab whose
/// PodSecurity default is privileged: baseline refuses host namespaces).
#[test]
fn host_network_pods_are_probed_on_the_host() {
    let lab = Lab::start_with_apiserver_args(1, &["--pod-security-default", "privileged"]);
    let image = lab.push_busybox("1");
    let port = kubelab_tests::free_port();
    lab.apply_ok(&format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: hostweb\nspec:\n  hostNetwork: true\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: main\n    image: {image}\n    command: [sh, -c, 'mkdir -p /www && exec httpd -f -p 127.0.0.1:{port} -h /www']\n    readinessProbe:\n      tcpSocket: {{port: {port}}}\n      periodSeconds: 1\n"
    ));
    wait_until("the pod to be ready", Duration::from_secs(20), || {
        lab.ok(&["get", "pod", "hostweb"]).contains("1/1")
    });
    lab.ok(&["delete", "pod", "hostweb", "--grace-period", "0"]);
}

/// `kubelabd reset DIR` after a `kill -9` of the agent removes everything its pod and node
/// put on the machine (containers, shims, veth, pinned namespaces, mounts, cgroups, lease,
/// bridge, masquerade rule), says what it removed, refuses while an agent runs, and loses
/// no stored object: the agent started again runs the pod afresh.
#[test]
fn reset_removes_what_a_killed_agent_left() {
    let mut lab = Lab::start(1);
    let image = lab.push_busybox("1");
    lab.apply_ok(&pod_manifest("left", &image, "Always", "exec sleep 3600"));
    lab.wait_for("left", "Running");
    let uid = lab.pod_json("left")["metadata"]["uid"]
        .as_str()
        .expect("uid")
        .to_string();
    let node = lab.node_names[0].clone();
    let bridge = lab.bridge_of(&node);
    let masquerade_rules = || {
        let out = std::process::Command::new("iptables")
            .args(["-w", "-t", "nat", "-S", "POSTROUTING"])
            .output()
            .expect("iptables");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.contains(&format!("({bridge})")))
            .count()
    };
    let bridge_exists = || Path::new("/sys/class/net").join(&bridge).exists();
    assert_eq!(masquerade_rules(), 1);
    assert!(bridge_exists());
    lab.kill_agent(0);
    assert!(!kubelab_tests::processes_in_cgroups(&uid).is_empty());

    let reset = |lab: &Lab| {
        std::process::Command::new(kubelab_tests::bin("kubelabd"))
            .arg("reset")
            .arg(lab.dir.path())
            .output()
            .expect("kubelabd reset")
    };
    let out = reset(&lab);
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The container's process and its shim.
    assert!(
        said.contains("pod default/left: 2 process(es) stopped"),
        "{said}"
    );
    assert!(said.contains("its iptables masquerade rule"), "{said}");
    assert!(said.contains(&format!("its bridge {bridge}")), "{said}");
    assert!(kubelab_tests::processes_in_cgroups(&uid).is_empty());
    assert!(kubelab_tests::cgroups_matching(&node).is_empty());
    assert_eq!(masquerade_rules(), 0);
    assert!(!bridge_exists());
    let left = network_leftovers(&lab, std::slice::from_ref(&uid));
    assert!(left.is_empty(), "left behind: {left:#?}");
    let again = reset(&lab);
    assert!(String::from_utf8_lossy(&again.stdout).contains("nothing to remove"));

    // The pod is still stored, bound to the node: the agent runs it again.
    lab.restart_agent(0);
    wait_until(
        "the pod's container runs again",
        Duration::from_secs(30),
        || !kubelab_tests::processes_in_cgroups(&uid).is_empty(),
    );
    let refused = reset(&lab);
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    assert!(err.contains("an agent is still running on"), "{err}");
    assert!(err.contains("stop it first"), "{err}");
    assert!(!kubelab_tests::processes_in_cgroups(&uid).is_empty());
}
