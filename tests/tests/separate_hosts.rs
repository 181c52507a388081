//! Nodes as separate hosts (issue 17): a node whose network is a namespace of its own on
//! a LAN bridge, with its own address, beside a node on the host. Pods on each reach the
//! other's by address (host-gw routes, no NAT: the server sees the client's own IP), a
//! Service with a backend on each node is reached from both (each node's own service
//! proxy, in its own network), the cluster DNS answers pods of the separate host, and
//! after the lab stops no namespace, veth, bridge, route or `KUBE-` rule is left.

use std::process::Command;
use std::time::Duration;

use kubelab_tests::{kube_rules, proxy_lock, wait_until, Lab};

fn pod(name: &str, node: &str, image: &str, app: &str, script: &str) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": app}},
        "spec": {
            "nodeName": node,
            "terminationGracePeriodSeconds": 1,
            "containers": [{"name": "main", "image": image, "command": ["sh", "-c", script]}],
        },
    })
}

/// Each web pod answers `/cgi-bin/who` with its name and the address it was reached from.
const SERVER: &str = r#"mkdir -p /www/cgi-bin
cat > /www/cgi-bin/who <<'EOF'
#!/bin/sh
printf '\r\n%s %s' "$(hostname)" "$REMOTE_ADDR"
EOF
chmod +x /www/cgi-bin/who
exec httpd -f -p 8080 -h /www"#;

fn ip_output(args: &[&str]) -> String {
    let out = Command::new("ip").args(args).output().expect("ip");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn pods_on_a_separate_host_reach_the_others_and_services_span_both() {
    let _proxy = proxy_lock();
    // Privileged by default: one pod here is a hostNetwork one.
    let mut lab = Lab::start_with_args(
        1,
        &["--proxy-mode", "iptables"],
        &["--pod-security-default", "privileged"],
    );
    lab.start_controller_manager();
    lab.start_cluster_dns(std::path::Path::new("/etc/resolv.conf"));
    let host_node = lab.node_names[0].clone();
    let far = lab.add_separate_host_agent(&[]);
    let (bridge, _) = lab.hosts_bridge();
    let far_ip = lab.kubectl_ok(&[
        "get",
        "node",
        &far,
        "-o",
        "jsonpath={.status.addresses[?(@.type==\"InternalIP\")].address}",
    ]);
    assert!(far_ip.starts_with("172.30."), "{far_ip}");
    let far_cidr = lab.kubectl_ok(&["get", "node", &far, "-o", "jsonpath={.spec.podCIDR}"]);

    let image = lab.push_busybox("1");
    let sleep = "exec sleep 3600";
    let manifests = serde_json::json!({
        "apiVersion": "v1", "kind": "List",
        "items": [
            pod("web-near", &host_node, &image, "web", SERVER),
            pod("web-far", &far, &image, "web", SERVER),
            pod("client-near", &host_node, &image, "client", sleep),
            pod("client-far", &far, &image, "client", sleep),
        ],
    })
    .to_string();
    lab.kubectl_with_input(&["apply", "-f", "-"], &manifests);
    for p in ["web-near", "web-far", "client-near", "client-far"] {
        lab.kubectl_ok(&[
            "wait",
            "--for=condition=Ready",
            &format!("pod/{p}"),
            "--timeout=60s",
        ]);
    }
    let ip_of = |p: &str| lab.kubectl_ok(&["get", "pod", p, "-o", "jsonpath={.status.podIP}"]);
    let (near_web, far_web) = (ip_of("web-near"), ip_of("web-far"));
    let (near_client, far_client) = (ip_of("client-near"), ip_of("client-far"));
    assert!(
        far_web.starts_with(far_cidr.rsplit_once('.').map_or("", |(net, _)| net)),
        "{far_web} in {far_cidr}"
    );
    let get = |from: &str, to: &str| {
        let script =
            format!("printf 'GET /cgi-bin/who HTTP/1.0\\r\\n\\r\\n' | nc -w 2 {to} | tail -n 1");
        // busybox's httpd writes an IPv4 client as `[::ffff:a.b.c.d]`.
        lab.kubectl_ok(&["exec", from, "--", "sh", "-c", &script])
            .replace("[::ffff:", "")
            .replace(']', "")
    };

    // The host has a route to the separate host's pods, through its address.
    let route = ip_output(&["route", "show", &far_cidr]);
    assert!(route.contains(&format!("via {far_ip}")), "{route}");
    // Pod to pod across the two, both ways, without NAT.
    assert_eq!(
        get("client-far", &format!("{near_web} 8080")).trim(),
        format!("web-near {far_client}")
    );
    assert_eq!(
        get("client-near", &format!("{far_web} 8080")).trim(),
        format!("web-far {near_client}")
    );

    // A Service with a backend on each node, from both nodes.
    lab.kubectl_ok(&[
        "expose",
        "pod",
        "web-near",
        "--name",
        "web",
        "--port",
        "80",
        "--target-port",
        "8080",
        "--selector",
        "app=web",
    ]);
    let cluster_ip = lab.kubectl_ok(&["get", "svc", "web", "-o", "jsonpath={.spec.clusterIP}"]);
    for client in ["client-near", "client-far"] {
        let mut seen = std::collections::BTreeSet::new();
        wait_until(
            "both backends answer through the Service",
            Duration::from_secs(30),
            || {
                let answer = get(client, &format!("{cluster_ip} 80"));
                if let Some(name) = answer.split_whitespace().next() {
                    seen.insert(name.to_string());
                }
                seen.len() == 2
            },
        );
    }
    // The separate host's own service proxy programs its own network.
    let far_rules = Command::new("ip")
        .args([
            "netns",
            "exec",
            &format!("kl-{far}"),
            "iptables-save",
            "-t",
            "nat",
        ])
        .output()
        .expect("iptables-save in the node's namespace");
    assert!(String::from_utf8_lossy(&far_rules.stdout).contains(&format!("-d {cluster_ip}/32")));
    // Its pods find Services by name too.
    let found = lab.kubectl_ok(&[
        "exec",
        "client-far",
        "--",
        "sh",
        "-c",
        "nslookup web 2>&1; true",
    ]);
    assert!(found.contains(&format!("Address: {cluster_ip}")), "{found}");

    // A hostNetwork pod of the separate host is in the node's network, not this host's.
    let mut on_node = pod(
        "on-node",
        &far,
        &image,
        "none",
        "cat /proc/net/dev; exec sleep 3600",
    );
    on_node["spec"]["hostNetwork"] = serde_json::json!(true);
    lab.kubectl_with_input(&["apply", "-f", "-"], &on_node.to_string());
    lab.kubectl_ok(&[
        "wait",
        "--for=condition=Ready",
        "pod/on-node",
        "--timeout=60s",
    ]);
    let interfaces = lab.kubectl_ok(&["logs", "on-node"]);
    assert!(interfaces.contains("eth0:"), "{interfaces}");
    assert!(!interfaces.contains(&format!("{bridge}:")), "{interfaces}");

    drop(lab);
    assert!(!ip_output(&["netns", "list"]).contains(&format!("kl-{far}")));
    assert!(ip_output(&["route", "show", &far_cidr]).is_empty());
    assert!(ip_output(&["link", "show", &bridge]).is_empty());
    assert!(
        !ip_output(&["-br", "link"]).contains("klv-"),
        "a veth is left"
    );
    let left = kube_rules();
    assert!(left.is_empty(), "{left:?}");
}
