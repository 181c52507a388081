//! Row 11: DNS queries answered per second from inside a pod (the bench joins the pod's
//! network namespace), one query at a time as a program's resolver sends them: a
//! Service's name through kube-dns (10.96.0.10, the service proxy, `kubelab-dns`), an
//! outside name through kube-dns (forwarded to the node's resolver,
//! then from the forwarder's cache), and that outside name asked of the node's resolver
//! directly. Queries are written by hand: a bench needs no DNS library.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use kubelab_tests::Lab;

use crate::Row;

const CLUSTER_NAME: &str = "kubernetes.default.svc.cluster.local";
const OUTSIDE_NAME: &str = "kubernetes.io";
const EACH: Duration = Duration::from_secs(3);

/// An A query for `name` with id `id`, recursion desired.
fn query(id: u16, name: &str) -> Vec<u8> {
    let mut q = id.to_be_bytes().to_vec();
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.trim_end_matches('.').split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    q
}

/// Answers per second from `server` for `name`, one query at a time for `EACH`, and the
/// response code of the last answer (0 NOERROR, 2 SERVFAIL, 3 NXDOMAIN).
fn rate(server: SocketAddr, name: &str) -> (f64, Option<u8>) {
    let socket = UdpSocket::bind("0.0.0.0:0").expect("bind");
    socket
        .set_read_timeout(Some(Duration::from_millis(500)))
        .expect("timeout");
    let (mut answered, mut id, mut code) = (0u32, 0u16, None);
    let start = Instant::now();
    let mut buf = [0u8; 1500];
    while start.elapsed() < EACH {
        id = id.wrapping_add(1);
        if socket.send_to(&query(id, name), server).is_err() {
            break;
        }
        while let Ok(n) = socket.recv(&mut buf) {
            if n >= 4 && buf[..2] == id.to_be_bytes() {
                answered += 1;
                code = Some(buf[3] & 0x0f);
                break;
            }
        }
    }
    (f64::from(answered) / start.elapsed().as_secs_f64(), code)
}

/// Runs `work` in a thread inside the network namespace of process `pid`.
fn in_netns<T: Send + 'static>(pid: u32, work: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::spawn(move || {
        let ns = std::fs::File::open(format!("/proc/{pid}/ns/net")).expect("the pod's netns");
        nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        work()
    })
    .join()
    .expect("the query thread")
}

fn code_name(code: Option<u8>) -> &'static str {
    match code {
        Some(0) => "answered",
        Some(2) => "SERVFAIL",
        Some(3) => "NXDOMAIN",
        Some(_) => "other code",
        None => "no answer",
    }
}

pub async fn run(rows: &mut Vec<Row>) {
    let mut lab = Lab::start_with_agent_args(1, &["--proxy-mode", "iptables"]);
    lab.start_controller_manager_logging("info");
    lab.start_cluster_dns(std::path::Path::new("/etc/resolv.conf"));
    let image = lab.push_busybox("dns");
    lab.kubectl_with_input(
        &["apply", "-f", "-"],
        &kubelab_tests::pod_manifest("client", &image, "Never", "exec sleep 3600"),
    );
    lab.kubectl_ok(&[
        "wait",
        "--for=condition=Ready",
        "pod/client",
        "--timeout=60s",
    ]);
    let pod = lab
        .pods_client()
        .get(kubelab_proto::v1::ObjectKey {
            name: "client".into(),
            namespace: "default".into(),
        })
        .await
        .expect("get the client pod")
        .into_inner();
    let pid = pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.first())
        .map(|c| c.pid)
        .and_then(|p| u32::try_from(p).ok())
        .expect("the client's pid");
    let kube_dns: SocketAddr = "10.96.0.10:53".parse().expect("an address");
    // Until the DNS has published its endpoint and the proxy has written its rules.
    for _ in 0..100 {
        if in_netns(pid, move || rate_once(kube_dns)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (cluster, cluster_code) = in_netns(pid, move || rate(kube_dns, CLUSTER_NAME));
    let (forwarded, forwarded_code) = in_netns(pid, move || rate(kube_dns, OUTSIDE_NAME));
    let text = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let node_resolver = text
        .lines()
        .filter_map(|l| l.strip_prefix("nameserver"))
        .filter_map(|s| s.trim().parse::<IpAddr>().ok())
        .next();
    let node = node_resolver.map(|ip| {
        let server = SocketAddr::new(ip, 53);
        // A loopback resolver (systemd-resolved's stub) is not reachable from a pod.
        let (qps, code) = if ip.is_loopback() {
            rate(server, OUTSIDE_NAME)
        } else {
            in_netns(pid, move || rate(server, OUTSIDE_NAME))
        };
        (ip, qps, code)
    });
    eprintln!("row 11: cluster {cluster:.0}/s ({cluster_code:?}), forwarded {forwarded:.0}/s ({forwarded_code:?}), node {node:?}");
    rows.push(Row {
        what: format!("11. DNS queries answered per second from a pod, one at a time: {CLUSTER_NAME} through kube-dns; {OUTSIDE_NAME} through kube-dns (forwarded)"),
        ours: format!(
            "{cluster:.0}/s ({}); {forwarded:.0}/s ({})",
            code_name(cluster_code),
            code_name(forwarded_code)
        ),
        comparison: match node {
            Some((ip, qps, code)) => format!(
                "{OUTSIDE_NAME} asked of the node's resolver ({ip}) directly: {qps:.0}/s ({})",
                code_name(code)
            ),
            None => "the node has no resolver to compare with".into(),
        },
        target: "-".into(),
    });
}

/// Whether one query for the cluster name gets an answer.
fn rate_once(server: SocketAddr) -> bool {
    let Ok(socket) = UdpSocket::bind("0.0.0.0:0") else {
        return false;
    };
    let _ = socket.set_read_timeout(Some(Duration::from_millis(200)));
    let mut buf = [0u8; 1500];
    socket.send_to(&query(7, CLUSTER_NAME), server).is_ok()
        && socket
            .recv(&mut buf)
            .is_ok_and(|n| n >= 4 && buf[3] & 0x0f == 0)
}
