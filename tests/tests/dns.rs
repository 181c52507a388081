//! Cluster DNS from pods, through the real kubectl (issue 17): a pod's resolv.conf for
//! each DNS policy, a Service found by its short and full names (100 requests by name
//! reach all 3 pods), a headless Service's pod addresses and a pod's own name under it,
//! SRV for a named port, PTR, an outside name forwarded to the node's resolver (one this
//! test starts), NXDOMAIN for a missing Service. Real agents, the service proxy and
//! `kubelab-dns`, reached at kube-dns's 10.96.0.10.

use std::net::{Ipv4Addr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use kubelab_tests::{proxy_lock, wait_until, Lab};

/// What the test's outside resolver answers for every A query.
const OUTSIDE: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 123);

/// A resolver standing for the node's: it answers any A query with `OUTSIDE` (a DNS
/// message written by hand: the header, the question copied, one answer pointing at it).
struct OutsideResolver {
    address: Ipv4Addr,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl OutsideResolver {
    fn start() -> OutsideResolver {
        // Port 53 on a loopback address of its own (resolv.conf names no port).
        let address = Ipv4Addr::new(127, 53, (std::process::id() % 250) as u8, 1);
        let socket = UdpSocket::bind((address, 53)).expect("bind the outside resolver");
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .expect("timeout");
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            while !stopping.load(Ordering::Relaxed) {
                let Ok((n, from)) = socket.recv_from(&mut buf) else {
                    continue;
                };
                if n < 12 {
                    continue;
                }
                let query = &buf[..n];
                let question_end = 12 + question_len(&query[12..]);
                let qtype = query.get(question_end - 4..question_end - 2);
                let is_a = qtype == Some(&[0, 1]);
                let mut reply = query[..question_end].to_vec();
                reply[2] = 0x81; // a response, recursion desired
                reply[3] = 0x80; // recursion available, NOERROR
                reply[6..12].copy_from_slice(&[0, u8::from(is_a), 0, 0, 0, 0]);
                if is_a {
                    reply.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4]);
                    reply.extend_from_slice(&OUTSIDE.octets());
                }
                let _ = socket.send_to(&reply, from);
            }
        });
        OutsideResolver {
            address,
            stop,
            thread: Some(thread),
        }
    }
}

/// The length of a question (name, type, class) at the start of `q`.
fn question_len(q: &[u8]) -> usize {
    let mut i = 0;
    while i < q.len() && q[i] != 0 {
        i += 1 + usize::from(q[i]);
    }
    (i + 1 + 4).min(q.len())
}

impl Drop for OutsideResolver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn manifests(image: &str) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 3
  selector:
    matchLabels: {{app: web}}
  template:
    metadata:
      labels: {{app: web}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: main
        image: {image}
        command: ["sh", "-c", "mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 8080 -h /www"]
        ports:
        - {{name: http, containerPort: 8080}}
        readinessProbe:
          exec: {{command: ["sh", "-c", "test ! -f /tmp/drain"]}}
          periodSeconds: 1
---
apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  selector: {{app: web}}
  ports:
  - {{name: http, port: 80, targetPort: http}}
---
apiVersion: v1
kind: Service
metadata:
  name: db
spec:
  clusterIP: None
  selector: {{app: db}}
  ports:
  - {{name: pg, port: 5432}}
---
apiVersion: v1
kind: Pod
metadata:
  name: db-0
  labels: {{app: db}}
spec:
  hostname: db-0
  subdomain: db
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: {image}
    command: ["sh", "-c", "exec sleep 3600"]
---
apiVersion: v1
kind: Pod
metadata:
  name: client
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: {image}
    command: ["sh", "-c", "exec sleep 3600"]
---
apiVersion: v1
kind: Pod
metadata:
  name: own-dns
spec:
  terminationGracePeriodSeconds: 1
  dnsPolicy: "None"
  dnsConfig:
    nameservers: ["192.0.2.53"]
    searches: ["lab.example"]
    options:
    - {{name: ndots, value: "2"}}
  containers:
  - name: main
    image: {image}
    command: ["sh", "-c", "exec sleep 3600"]
"#
    )
}

#[test]
fn pods_find_services_by_name() {
    let _proxy = proxy_lock();
    let outside = OutsideResolver::start();
    let mut lab = Lab::start_with_agent_args(2, &["--proxy-mode", "iptables"]);
    lab.start_controller_manager();
    let resolv = std::env::temp_dir().join(format!("kubelab-dns-test-{}.conf", std::process::id()));
    std::fs::write(&resolv, format!("nameserver {}\n", outside.address)).expect("resolv.conf");
    lab.start_cluster_dns(&resolv);
    let image = lab.push_busybox("1");

    // kube-dns is there, at the range's tenth address, with this DNS as its endpoint.
    let row = lab.kubectl_ok(&[
        "get",
        "svc",
        "kube-dns",
        "-n",
        "kube-system",
        "--no-headers",
    ]);
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(
        &cells[..5],
        [
            "kube-dns",
            "ClusterIP",
            "10.96.0.10",
            "<none>",
            "53/UDP,53/TCP"
        ],
        "{row}"
    );
    wait_until("kube-dns's endpoint", Duration::from_secs(20), || {
        lab.kubectl_ok(&[
            "get",
            "endpointslices",
            "-n",
            "kube-system",
            "-l",
            "kubernetes.io/service-name=kube-dns",
            "-o",
            "name",
        ])
        .contains("kube-dns-kubelab")
    });

    lab.kubectl_with_input(&["apply", "-f", "-"], &manifests(&image));
    lab.kubectl_ok(&["rollout", "status", "deployment/web", "--timeout=60s"]);
    for pod in ["client", "db-0", "own-dns"] {
        lab.kubectl_ok(&[
            "wait",
            "--for=condition=Ready",
            &format!("pod/{pod}"),
            "--timeout=60s",
        ]);
    }
    let exec = |pod: &str, script: &str| lab.kubectl_ok(&["exec", pod, "--", "sh", "-c", script]);

    // The kubelet's resolv.conf for ClusterFirst, and for None with a dnsConfig.
    assert_eq!(
        exec("client", "cat /etc/resolv.conf")
            .lines()
            .collect::<Vec<_>>()[..3],
        [
            "search default.svc.cluster.local svc.cluster.local cluster.local",
            "nameserver 10.96.0.10",
            "options ndots:5"
        ][..]
    );
    assert_eq!(
        exec("own-dns", "cat /etc/resolv.conf"),
        "search lab.example\nnameserver 192.0.2.53\noptions ndots:2\n"
    );
    // A pod with a subdomain knows its own DNS name.
    let hosts = exec("db-0", "cat /etc/hosts");
    assert!(
        hosts.contains("db-0.db.default.svc.cluster.local\tdb-0"),
        "{hosts}"
    );

    let cluster_ip = lab.kubectl_ok(&["get", "svc", "web", "-o", "jsonpath={.spec.clusterIP}"]);
    let db_ip = lab.kubectl_ok(&["get", "pod", "db-0", "-o", "jsonpath={.status.podIP}"]);
    wait_until("the short name", Duration::from_secs(20), || {
        exec("client", "nslookup web 2>&1; true").contains(&format!("Address: {cluster_ip}"))
    });
    let full = exec(
        "client",
        "nslookup web.default.svc.cluster.local 2>&1; true",
    );
    assert!(full.contains(&format!("Address: {cluster_ip}")), "{full}");

    // 100 requests by name reach all 3 pods. busybox's nc is static glibc, which cannot
    // resolve in a pod without its NSS libraries: each request asks the DNS first.
    let pods = lab.kubectl_ok(&[
        "get",
        "pods",
        "-l",
        "app=web",
        "-o",
        "jsonpath={.items[*].metadata.name}",
    ]);
    let script = "for i in $(seq 1 100); do ip=$(nslookup -type=a web | sed -n 's/^Address: //p' | tail -n 1); printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 2 $ip 80 | tail -n 1; done";
    let answers = exec("client", script);
    for pod in pods.split_whitespace() {
        assert!(
            answers.lines().any(|l| l.trim() == pod),
            "{pod} got none of 100:\n{answers}"
        );
    }
    assert_eq!(answers.lines().count(), 100, "{answers}");

    // A pod that fails its readiness probe stops receiving traffic, and comes back.
    let drained = pods
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string();
    let ready_endpoints = || {
        lab.kubectl_ok(&[
            "get", "endpointslices", "-l", "kubernetes.io/service-name=web", "-o",
            "jsonpath={range .items[*].endpoints[?(@.conditions.ready==true)]}{.addresses[0]} {end}",
        ])
        .split_whitespace()
        .count()
    };
    exec(&drained, "touch /tmp/drain");
    wait_until("2 ready endpoints", Duration::from_secs(20), || {
        ready_endpoints() == 2
    });
    let by_ip = format!(
        "for i in $(seq 1 30); do printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 2 {cluster_ip} 80 | tail -n 1; done"
    );
    let answers = exec("client", &by_ip);
    assert_eq!(answers.lines().count(), 30, "{answers}");
    assert!(
        !answers.lines().any(|l| l.trim() == drained),
        "{drained} is not ready:\n{answers}"
    );
    exec(&drained, "rm /tmp/drain");
    wait_until("3 ready endpoints", Duration::from_secs(20), || {
        ready_endpoints() == 3
    });
    wait_until("the pod back in rotation", Duration::from_secs(20), || {
        exec("client", &by_ip).lines().any(|l| l.trim() == drained)
    });

    // A headless Service: its ready pods' addresses, and a pod's own name under it.
    let headless = exec("client", "nslookup -type=a db 2>&1; true");
    assert!(
        headless.contains(&format!("Address: {db_ip}")),
        "{headless}"
    );
    let own = exec(
        "client",
        "nslookup -type=a db-0.db.default.svc.cluster.local 2>&1; true",
    );
    assert!(own.contains(&format!("Address: {db_ip}")), "{own}");

    // SRV for a named port, and PTR for the cluster IP.
    let srv = exec(
        "client",
        "nslookup -type=srv _http._tcp.web.default.svc.cluster.local 2>&1; true",
    );
    assert!(srv.contains("80 web.default.svc.cluster.local"), "{srv}");
    let ptr = exec("client", &format!("nslookup {cluster_ip} 2>&1; true"));
    assert!(ptr.contains("web.default.svc.cluster.local"), "{ptr}");

    // A name outside the cluster goes to the node's resolver; a missing Service does not
    // exist.
    let forwarded = exec("client", "nslookup -type=a outside.example 2>&1; true");
    assert!(
        forwarded.contains(&format!("Address: {OUTSIDE}")),
        "{forwarded}"
    );
    let missing = exec(
        "client",
        "nslookup -type=a missing.default.svc.cluster.local 2>&1; true",
    );
    assert!(missing.contains("NXDOMAIN"), "{missing}");
    let _ = std::fs::remove_file(&resolv);
}
