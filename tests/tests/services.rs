//! Services and EndpointSlices through the real kubectl (issue 17, first slice): the
//! `kubernetes` Service, `kubectl expose` with a named target port, cluster IPs and node
//! ports from their ranges, the EndpointSlice controller following the pods (scale, a
//! pod that is not Ready), the service links' variables in a container, `describe svc`,
//! Kubernetes' errors, and the slices going with their Service.

use std::time::Duration;

use kubelab_tests::{http_get, kube_rules, proxy_lock, wait_until, Lab};

fn web(image: &str, replicas: u32) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n  labels:\n    app: web\nspec:\n  replicas: {replicas}\n  selector:\n    matchLabels:\n      app: web\n  template:\n    metadata:\n      labels:\n        app: web\n    spec:\n      terminationGracePeriodSeconds: 1\n      containers:\n      - name: main\n        image: {image}\n        command: [\"sh\", \"-c\", \"exec sleep 3600\"]\n        ports:\n        - name: http\n          containerPort: 8080\n"
    )
}

/// The `address:port` of each endpoint of the Service's slices, ready or not.
fn endpoints(lab: &Lab, service: &str) -> Vec<String> {
    let out = lab.kubectl_ok(&[
        "get", "endpointslices", "-l", &format!("kubernetes.io/service-name={service}"), "-o",
        "jsonpath={range .items[*]}{range .endpoints[*]}{.addresses[0]} {.conditions.ready}{\"\\n\"}{end}{end}",
    ]);
    let mut found: Vec<String> = out.lines().map(str::to_string).collect();
    found.sort();
    found
}

#[test]
fn services_get_addresses_and_endpoint_slices_follow_their_pods() {
    let mut lab = Lab::start(1);
    lab.start_controller_manager();
    let image = lab.push_busybox("1");

    // The apiserver's own Service, at the range's first address.
    let row = lab.kubectl_ok(&["get", "svc", "kubernetes", "--no-headers"]);
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(
        &cells[..5],
        ["kubernetes", "ClusterIP", "10.96.0.1", "<none>", "443/TCP"],
        "{row}"
    );

    lab.kubectl_with_input(&["apply", "-f", "-"], &web(&image, 3));
    lab.kubectl_ok(&["rollout", "status", "deployment/web", "--timeout=60s"]);
    let exposed = lab.kubectl_ok(&[
        "expose",
        "deployment",
        "web",
        "--port",
        "80",
        "--target-port",
        "http",
    ]);
    assert_eq!(exposed.trim(), "service/web exposed");
    let table = lab.kubectl_ok(&["get", "svc", "web"]);
    let header: Vec<&str> = table
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    assert_eq!(
        header,
        [
            "NAME",
            "TYPE",
            "CLUSTER-IP",
            "EXTERNAL-IP",
            "PORT(S)",
            "AGE"
        ]
    );
    let ip = lab.kubectl_ok(&["get", "svc", "web", "-o", "jsonpath={.spec.clusterIP}"]);
    assert!(ip.starts_with("10.96.") && ip != "10.96.0.1", "{ip}");
    let row: Vec<&str> = table
        .lines()
        .nth(1)
        .unwrap_or("")
        .split_whitespace()
        .collect();
    assert_eq!(
        &row[..5],
        ["web", "ClusterIP", ip.as_str(), "<none>", "80/TCP"],
        "{table}"
    );

    // One endpoint per pod, the named port resolved to the containers' 8080.
    wait_until("3 endpoints", Duration::from_secs(20), || {
        endpoints(&lab, "web").len() == 3
    });
    assert!(endpoints(&lab, "web").iter().all(|e| e.ends_with(" true")));
    let port = lab.kubectl_ok(&[
        "get", "endpointslices", "-l", "kubernetes.io/service-name=web", "-o",
        "jsonpath={.items[0].ports[0].port} {.items[0].metadata.labels.endpointslice\\.kubernetes\\.io/managed-by}",
    ]);
    assert_eq!(port, "8080 endpointslice-controller.k8s.io");
    let described = lab.kubectl_ok(&["describe", "svc", "web"]);
    assert!(
        described.contains("TargetPort:               http/TCP")
            && described.matches(":8080").count() == 3,
        "{described}"
    );

    // Scaled up: the new pods are endpoints too.
    lab.kubectl_ok(&["scale", "deployment/web", "--replicas=5"]);
    wait_until("5 endpoints", Duration::from_secs(30), || {
        let found = endpoints(&lab, "web");
        found.len() == 5 && found.iter().all(|e| e.ends_with(" true"))
    });

    // A pod that is not Ready is an endpoint not ready (nor serving) until it is.
    lab.kubectl_with_input(
        &["apply", "-f", "-"],
        &format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: shy\n  labels:\n    app: web\nspec:\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: main\n    image: {image}\n    command: [\"sh\", \"-c\", \"exec sleep 3600\"]\n    ports:\n    - name: http\n      containerPort: 8080\n    readinessProbe:\n      exec:\n        command: [\"cat\", \"/tmp/ready\"]\n      periodSeconds: 1\n"
        ),
    );
    wait_until(
        "a sixth endpoint, not ready",
        Duration::from_secs(30),
        || {
            endpoints(&lab, "web")
                .iter()
                .filter(|e| e.ends_with(" false"))
                .count()
                == 1
        },
    );
    // Made after the Service, it has the service links' variables.
    let env = lab.kubectl_ok(&["exec", "shy", "--", "env"]);
    for wanted in [
        format!("WEB_SERVICE_HOST={ip}"),
        "WEB_SERVICE_PORT=80".into(),
        format!("WEB_PORT_80_TCP=tcp://{ip}:80"),
        "KUBERNETES_SERVICE_HOST=10.96.0.1".into(),
        "KUBERNETES_SERVICE_PORT_HTTPS=443".into(),
    ] {
        assert!(env.lines().any(|l| l == wanted), "{wanted} not in:\n{env}");
    }
    lab.kubectl_ok(&["exec", "shy", "--", "touch", "/tmp/ready"]);
    wait_until("all 6 ready", Duration::from_secs(30), || {
        let found = endpoints(&lab, "web");
        found.len() == 6 && found.iter().all(|e| e.ends_with(" true"))
    });

    // `kubectl create service` sends its Service as protobuf.
    let created = lab.kubectl_ok(&["create", "service", "clusterip", "plain", "--tcp=80:8080"]);
    assert_eq!(created.trim(), "service/plain created");

    // A NodePort Service gets a port of 30000-32767.
    lab.kubectl_ok(&[
        "expose",
        "deployment",
        "web",
        "--name",
        "web-np",
        "--port",
        "80",
        "--type",
        "NodePort",
    ]);
    let node_port: i32 = lab
        .kubectl_ok(&[
            "get",
            "svc",
            "web-np",
            "-o",
            "jsonpath={.spec.ports[0].nodePort}",
        ])
        .parse()
        .expect("a node port");
    assert!((30000..=32767).contains(&node_port), "{node_port}");

    // Kubernetes' errors.
    let outside = lab.kubectl_with_input(
        &["apply", "-f", "-"],
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: outside\nspec:\n  clusterIP: 10.1.2.3\n  ports:\n  - port: 80\n",
    );
    let said = String::from_utf8_lossy(&outside.stderr);
    assert!(
        said.contains("The range of valid IPs is 10.96.0.0/16"),
        "{said}"
    );
    let unnamed = lab.kubectl_with_input(
        &["apply", "-f", "-"],
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: two\nspec:\n  ports:\n  - port: 80\n  - port: 81\n",
    );
    let said = String::from_utf8_lossy(&unnamed.stderr);
    assert!(
        said.contains("The Service \"two\" is invalid: spec.ports[0].name: Required value"),
        "{said}"
    );

    // Deleted, its slices go with it.
    lab.kubectl_ok(&["delete", "svc", "web"]);
    wait_until("the slices gone", Duration::from_secs(20), || {
        lab.kubectl_ok(&[
            "get",
            "endpointslices",
            "-l",
            "kubernetes.io/service-name=web",
            "-o",
            "name",
        ])
        .trim()
        .is_empty()
    });
    let all = lab.kubectl_ok(&["get", "all"]);
    assert!(
        all.contains("service/kubernetes") && all.contains("service/web-np"),
        "{all}"
    );
}

#[test]
fn traffic_to_a_service_reaches_every_ready_pod() {
    let _proxy = proxy_lock();
    let mut lab = Lab::start_with_agent_args(2, &["--proxy-mode", "iptables"]);
    lab.start_controller_manager();
    let image = lab.push_busybox("1");
    // Each pod serves its own name.
    let server = "mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 8080 -h /www";
    let manifest = web(&image, 3).replace("exec sleep 3600", server);
    lab.kubectl_with_input(&["apply", "-f", "-"], &manifest);
    lab.kubectl_ok(&["rollout", "status", "deployment/web", "--timeout=60s"]);
    lab.kubectl_ok(&[
        "expose",
        "deployment",
        "web",
        "--port",
        "80",
        "--target-port",
        "8080",
    ]);
    wait_until("3 endpoints", Duration::from_secs(20), || {
        endpoints(&lab, "web").len() == 3
    });
    let ip = lab.kubectl_ok(&["get", "svc", "web", "-o", "jsonpath={.spec.clusterIP}"]);
    let pods = lab.kubectl_ok(&[
        "get",
        "pods",
        "-l",
        "app=web",
        "-o",
        "jsonpath={.items[*].metadata.name}",
    ]);
    let pods: Vec<&str> = pods.split_whitespace().collect();

    // From a client pod, 60 requests to the Service reach all 3 pods.
    let client = format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: client\nspec:\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: main\n    image: {image}\n    command: [\"sh\", \"-c\", \"exec sleep 3600\"]\n"
    );
    lab.kubectl_with_input(&["apply", "-f", "-"], &client);
    lab.kubectl_ok(&[
        "wait",
        "--for=condition=Ready",
        "pod/client",
        "--timeout=60s",
    ]);
    // busybox's nc (its static wget cannot resolve even an address literal).
    let fetch = |times: u32| {
        format!(
            "for i in $(seq 1 {times}); do printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 2 {ip} 80 | tail -n 1; done"
        )
    };
    let script = fetch(60);
    let answers = lab.kubectl_ok(&["exec", "client", "--", "sh", "-c", &script]);
    for pod in &pods {
        let n = answers.lines().filter(|l| l.trim() == *pod).count();
        assert!(n > 0, "{pod} got none of 60 requests:\n{answers}");
    }
    assert_eq!(answers.lines().count(), 60, "{answers}");

    // Hairpin: a pod reaches itself through its Service.
    let script = fetch(30);
    let from_itself = lab.kubectl_ok(&["exec", pods[0], "--", "sh", "-c", &script]);
    assert!(
        from_itself.lines().any(|l| l.trim() == pods[0]),
        "{from_itself}"
    );

    // ClientIP affinity: one client's requests all go to one pod.
    lab.kubectl_ok(&[
        "expose",
        "deployment",
        "web",
        "--name",
        "sticky",
        "--port",
        "80",
        "--target-port",
        "8080",
        "--session-affinity",
        "ClientIP",
    ]);
    wait_until("sticky's endpoints", Duration::from_secs(20), || {
        endpoints(&lab, "sticky").len() == 3
    });
    let sticky = lab.kubectl_ok(&["get", "svc", "sticky", "-o", "jsonpath={.spec.clusterIP}"]);
    let script = fetch(20).replace(&ip, &sticky);
    let answers = lab.kubectl_ok(&["exec", "client", "--", "sh", "-c", &script]);
    let distinct: std::collections::BTreeSet<&str> = answers.lines().map(str::trim).collect();
    assert_eq!(distinct.len(), 1, "{answers}");
    assert_eq!(answers.lines().count(), 20, "{answers}");

    // A NodePort from the host, at the node's address on its pod bridge.
    lab.kubectl_ok(&[
        "expose",
        "deployment",
        "web",
        "--name",
        "web-np",
        "--port",
        "80",
        "--target-port",
        "8080",
        "--type",
        "NodePort",
    ]);
    let node_port = lab.kubectl_ok(&[
        "get",
        "svc",
        "web-np",
        "-o",
        "jsonpath={.spec.ports[0].nodePort}",
    ]);
    let gateway = lab.kubectl_ok(&["get", "pod", "client", "-o", "jsonpath={.status.podIP}"]);
    let gateway = format!("{}.1", gateway.rsplit_once('.').map_or("", |(net, _)| net));
    wait_until("the NodePort answers", Duration::from_secs(20), || {
        pods.contains(&http_get(&format!("{gateway}:{node_port}")).as_str())
    });

    // A Service without ready endpoints refuses connections at once.
    lab.kubectl_ok(&["scale", "deployment/web", "--replicas=0"]);
    wait_until("no endpoints", Duration::from_secs(30), || {
        endpoints(&lab, "web").is_empty()
    });
    let started = std::time::Instant::now();
    let script = format!("printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 20 {ip} 80; echo done");
    let answer = lab.kubectl_ok(&["exec", "client", "--", "sh", "-c", &script]);
    assert_eq!(answer.trim(), "done", "no pod should answer: {answer}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "a Service without endpoints should refuse at once, not time out"
    );

    // Stopped, the lab leaves no rule behind.
    assert!(!kube_rules().is_empty());
    drop(lab);
    let left = kube_rules();
    assert!(left.is_empty(), "{left:?}");
}
