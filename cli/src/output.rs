//! Showing API objects the way kubectl does: tables, `describe`, and `-o json|yaml` in
//! Kubernetes' own shape (converted to `k8s-openapi` types), so that scripts written
//! against kubectl's output work with ours. Pure formatting: no API calls.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1 as k8s;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kubelab_proto::v1 as api;
use kubelab_proto::v1::container_state::State;

pub fn time(ms: i64) -> Option<Time> {
    (ms > 0)
        .then(|| {
            k8s_openapi::jiff::Timestamp::from_millisecond(ms)
                .ok()
                .map(Time)
        })
        .flatten()
}

pub fn meta(m: &api::ObjectMeta) -> ObjectMeta {
    ObjectMeta {
        name: Some(m.name.clone()),
        namespace: (!m.namespace.is_empty()).then(|| m.namespace.clone()),
        uid: Some(m.uid.clone()),
        resource_version: Some(m.resource_version.to_string()),
        creation_timestamp: time(m.creation_timestamp_ms),
        deletion_timestamp: time(m.deletion_timestamp_ms),
        deletion_grace_period_seconds: (m.deletion_timestamp_ms > 0)
            .then_some(m.deletion_grace_period_seconds),
        labels: (!m.labels.is_empty()).then(|| m.labels.clone().into_iter().collect()),
        ..Default::default()
    }
}

fn quantities(cpu_millis: i64, memory: i64) -> Option<BTreeMap<String, Quantity>> {
    let mut m = BTreeMap::new();
    if cpu_millis > 0 {
        m.insert("cpu".into(), Quantity(format!("{cpu_millis}m")));
    }
    if memory > 0 {
        m.insert("memory".into(), Quantity(memory_quantity(memory)));
    }
    (!m.is_empty()).then_some(m)
}

/// Bytes as Kubernetes writes them: `64Mi` when exact, plain bytes otherwise.
fn memory_quantity(bytes: i64) -> String {
    for (suffix, unit) in [("Gi", 1i64 << 30), ("Mi", 1 << 20), ("Ki", 1 << 10)] {
        if bytes % unit == 0 {
            return format!("{}{suffix}", bytes / unit);
        }
    }
    bytes.to_string()
}

fn state(s: &Option<api::ContainerState>) -> Option<k8s::ContainerState> {
    let s = s.as_ref()?.state.as_ref()?;
    Some(match s {
        State::Waiting(w) => k8s::ContainerState {
            waiting: Some(k8s::ContainerStateWaiting {
                reason: Some(w.reason.clone()),
                message: (!w.message.is_empty()).then(|| w.message.clone()),
            }),
            ..Default::default()
        },
        State::Running(r) => k8s::ContainerState {
            running: Some(k8s::ContainerStateRunning {
                started_at: time(r.started_at_ms),
            }),
            ..Default::default()
        },
        State::Terminated(t) => k8s::ContainerState {
            terminated: Some(k8s::ContainerStateTerminated {
                exit_code: t.exit_code,
                signal: (t.signal != 0).then_some(t.signal),
                reason: (!t.reason.is_empty()).then(|| t.reason.clone()),
                message: (!t.message.is_empty()).then(|| t.message.clone()),
                started_at: time(t.started_at_ms),
                finished_at: time(t.finished_at_ms),
                container_id: (!t.container_id.is_empty())
                    .then(|| format!("kubelab://{}", t.container_id)),
            }),
            ..Default::default()
        },
    })
}

/// Our pod in Kubernetes' shape.
fn k8s_container(c: &api::Container) -> k8s::Container {
    let r = c.resources.unwrap_or_default();
    k8s::Container {
        name: c.name.clone(),
        image: Some(c.image.clone()),
        command: (!c.command.is_empty()).then(|| c.command.clone()),
        args: (!c.args.is_empty()).then(|| c.args.clone()),
        env: (!c.env.is_empty()).then(|| {
            c.env
                .iter()
                .map(|e| k8s::EnvVar {
                    name: e.name.clone(),
                    value: Some(e.value.clone()),
                    ..Default::default()
                })
                .collect()
        }),
        working_dir: (!c.working_dir.is_empty()).then(|| c.working_dir.clone()),
        image_pull_policy: Some(c.image_pull_policy.clone()),
        resources: Some(k8s::ResourceRequirements {
            requests: quantities(r.cpu_request_millis, r.memory_request_bytes),
            limits: quantities(r.cpu_limit_millis, r.memory_limit_bytes),
            ..Default::default()
        }),
        volume_mounts: (!c.volume_mounts.is_empty()).then(|| {
            c.volume_mounts
                .iter()
                .map(|m| k8s::VolumeMount {
                    name: m.name.clone(),
                    mount_path: m.mount_path.clone(),
                    read_only: m.read_only.then_some(true),
                    ..Default::default()
                })
                .collect()
        }),
        liveness_probe: c.liveness_probe.as_ref().map(k8s_probe),
        readiness_probe: c.readiness_probe.as_ref().map(k8s_probe),
        startup_probe: c.startup_probe.as_ref().map(k8s_probe),
        ..Default::default()
    }
}

fn k8s_probe(p: &api::Probe) -> k8s::Probe {
    use api::probe::Handler;
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    let mut probe = k8s::Probe {
        initial_delay_seconds: Some(p.initial_delay_seconds),
        period_seconds: Some(p.period_seconds),
        timeout_seconds: Some(p.timeout_seconds),
        success_threshold: Some(p.success_threshold),
        failure_threshold: Some(p.failure_threshold),
        ..Default::default()
    };
    match &p.handler {
        Some(Handler::Exec(e)) => {
            probe.exec = Some(k8s::ExecAction {
                command: Some(e.command.clone()),
            })
        }
        Some(Handler::HttpGet(h)) => {
            probe.http_get = Some(k8s::HTTPGetAction {
                path: Some(h.path.clone()),
                port: IntOrString::Int(h.port),
                host: (!h.host.is_empty()).then(|| h.host.clone()),
                scheme: Some("HTTP".into()),
                ..Default::default()
            })
        }
        Some(Handler::TcpSocket(t)) => {
            probe.tcp_socket = Some(k8s::TCPSocketAction {
                port: IntOrString::Int(t.port),
                host: (!t.host.is_empty()).then(|| t.host.clone()),
            })
        }
        None => {}
    }
    probe
}

fn k8s_volume(v: &api::Volume) -> k8s::Volume {
    use api::volume::Source;
    let mut volume = k8s::Volume {
        name: v.name.clone(),
        ..Default::default()
    };
    match &v.source {
        Some(Source::EmptyDir(e)) => {
            volume.empty_dir = Some(k8s::EmptyDirVolumeSource {
                medium: (!e.medium.is_empty()).then(|| e.medium.clone()),
                size_limit: (e.size_limit_bytes > 0)
                    .then(|| Quantity(memory_quantity(e.size_limit_bytes))),
                ..Default::default()
            })
        }
        Some(Source::HostPath(h)) => {
            volume.host_path = Some(k8s::HostPathVolumeSource {
                path: h.path.clone(),
                type_: (!h.r#type.is_empty()).then(|| h.r#type.clone()),
            })
        }
        None => {}
    }
    volume
}

fn k8s_container_status(s: &api::ContainerStatus) -> k8s::ContainerStatus {
    k8s::ContainerStatus {
        name: s.name.clone(),
        image: s.image.clone(),
        image_id: s.image_id.clone(),
        container_id: (!s.container_id.is_empty()).then(|| format!("kubelab://{}", s.container_id)),
        ready: s.ready,
        restart_count: s.restart_count,
        state: state(&s.state),
        last_state: state(&s.last_state),
        started: Some(
            s.started
                && matches!(
                    s.state.as_ref().and_then(|s| s.state.as_ref()),
                    Some(State::Running(_))
                ),
        ),
        ..Default::default()
    }
}

pub fn to_k8s_pod(pod: &api::Pod) -> k8s::Pod {
    let spec = pod.spec.clone().unwrap_or_default();
    let status = pod.status.clone().unwrap_or_default();
    let statuses = |list: &[api::ContainerStatus]| {
        (!list.is_empty()).then(|| list.iter().map(k8s_container_status).collect())
    };
    k8s::Pod {
        metadata: meta(&pod.metadata.clone().unwrap_or_default()),
        spec: Some(k8s::PodSpec {
            containers: spec.containers.iter().map(k8s_container).collect(),
            init_containers: (!spec.init_containers.is_empty())
                .then(|| spec.init_containers.iter().map(k8s_container).collect()),
            volumes: (!spec.volumes.is_empty())
                .then(|| spec.volumes.iter().map(k8s_volume).collect()),
            node_name: (!spec.node_name.is_empty()).then(|| spec.node_name.clone()),
            host_network: spec.host_network.then_some(true),
            restart_policy: Some(spec.restart_policy.clone()),
            termination_grace_period_seconds: Some(spec.termination_grace_period_seconds),
            ..Default::default()
        }),
        status: Some(k8s::PodStatus {
            phase: Some(status.phase.clone()),
            pod_ip: (!status.pod_ip.is_empty()).then(|| status.pod_ip.clone()),
            host_ip: (!status.host_ip.is_empty()).then(|| status.host_ip.clone()),
            start_time: time(status.start_time_ms),
            reason: (!status.reason.is_empty()).then(|| status.reason.clone()),
            message: (!status.message.is_empty()).then(|| status.message.clone()),
            container_statuses: statuses(&status.container_statuses),
            init_container_statuses: statuses(&status.init_container_statuses),
            conditions: (!status.conditions.is_empty()).then(|| {
                status
                    .conditions
                    .iter()
                    .map(|c| k8s::PodCondition {
                        type_: c.r#type.clone(),
                        status: c.status.clone(),
                        last_transition_time: time(c.last_transition_time_ms),
                        reason: (!c.reason.is_empty()).then(|| c.reason.clone()),
                        message: (!c.message.is_empty()).then(|| c.message.clone()),
                        ..Default::default()
                    })
                    .collect()
            }),
            ..Default::default()
        }),
    }
}

/// Our node in Kubernetes' shape.
pub fn to_k8s_node(node: &api::Node) -> k8s::Node {
    let status = node.status.clone().unwrap_or_default();
    let res = |r: Option<api::NodeResources>| {
        let r = r.unwrap_or_default();
        let mut m = quantities(r.cpu_millis, r.memory_bytes).unwrap_or_default();
        m.insert("pods".into(), Quantity(r.pods.to_string()));
        Some(m)
    };
    let ready = kubelab_proto::node_is_ready(node);
    k8s::Node {
        metadata: meta(&node.metadata.clone().unwrap_or_default()),
        spec: Some(k8s::NodeSpec {
            pod_cidr: node
                .spec
                .as_ref()
                .map(|s| s.pod_cidr.clone())
                .filter(|c| !c.is_empty()),
            unschedulable: node.spec.as_ref().map(|s| s.unschedulable).filter(|u| *u),
            ..Default::default()
        }),
        status: Some(k8s::NodeStatus {
            capacity: res(status.capacity),
            allocatable: res(status.allocatable),
            conditions: Some(vec![k8s::NodeCondition {
                type_: "Ready".into(),
                status: if ready { "True" } else { "Unknown" }.into(),
                last_heartbeat_time: time(status.last_heartbeat_ms),
                reason: Some(
                    if ready {
                        "KubeletReady"
                    } else {
                        "NodeStatusUnknown"
                    }
                    .into(),
                ),
                ..Default::default()
            }]),
            node_info: Some(k8s::NodeSystemInfo {
                kernel_version: status.kernel_version.clone(),
                os_image: status.os_image.clone(),
                operating_system: "linux".into(),
                architecture: std::env::consts::ARCH.into(),
                kubelet_version: format!("kubelab-{}", env!("CARGO_PKG_VERSION")),
                ..Default::default()
            }),
            ..Default::default()
        }),
    }
}

/// `5s`, `3m`, `2h`, `4d`, as kubectl prints ages.
pub fn age(since_ms: i64) -> String {
    if since_ms <= 0 {
        return "<unknown>".into();
    }
    let s = ((kubelab_proto::now_ms() - since_ms) / 1000).max(0);
    match s {
        0..=119 => format!("{s}s"),
        120..=7199 => format!("{}m", s / 60),
        7200..=172_799 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86400),
    }
}

/// The STATUS column: what kubectl shows (a container's waiting or terminated reason
/// when there is one, else the phase).
pub fn pod_status_text(pod: &api::Pod) -> String {
    if pod
        .metadata
        .as_ref()
        .is_some_and(|m| m.deletion_timestamp_ms > 0)
    {
        return "Terminating".into();
    }
    let status = pod.status.clone().unwrap_or_default();
    // kubectl's rule: the first init container not done yet decides the STATUS.
    let init_count = pod
        .spec
        .as_ref()
        .map(|s| s.init_containers.len())
        .unwrap_or(0);
    for (i, s) in status.init_container_statuses.iter().enumerate() {
        match s.state.as_ref().and_then(|s| s.state.as_ref()) {
            Some(State::Terminated(t)) if t.exit_code == 0 => continue,
            Some(State::Terminated(t)) if !t.reason.is_empty() => {
                return format!("Init:{}", t.reason)
            }
            Some(State::Terminated(t)) => return format!("Init:ExitCode:{}", t.exit_code),
            Some(State::Waiting(w)) if !w.reason.is_empty() && w.reason != "PodInitializing" => {
                return format!("Init:{}", w.reason)
            }
            _ => return format!("Init:{i}/{init_count}"),
        }
    }
    let mut text = status.phase.clone();
    for s in &status.container_statuses {
        match s.state.as_ref().and_then(|s| s.state.as_ref()) {
            Some(State::Waiting(w)) if !w.reason.is_empty() => return w.reason.clone(),
            Some(State::Terminated(t)) if !t.reason.is_empty() && text != "Running" => {
                text = t.reason.clone()
            }
            _ => {}
        }
    }
    if text.is_empty() {
        "Pending".into()
    } else {
        text
    }
}

/// Prints rows as left-aligned columns separated by three spaces, like kubectl.
pub fn table(rows: &[Vec<String>]) {
    let widths: Vec<usize> = (0..rows.first().map(|r| r.len()).unwrap_or(0))
        .map(|i| {
            rows.iter()
                .map(|r| r.get(i).map(|c| c.chars().count()).unwrap_or(0))
                .max()
                .unwrap_or(0)
        })
        .collect();
    for row in rows {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<w$}   ", w = widths[i]));
            }
        }
        println!("{}", line.trim_end());
    }
}

pub fn pod_rows(pods: &[api::Pod], wide: bool, with_namespace: bool) -> Vec<Vec<String>> {
    let mut header: Vec<String> = ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
        .map(String::from)
        .to_vec();
    if with_namespace {
        header.insert(0, "NAMESPACE".into());
    }
    if wide {
        header.extend(["IP", "NODE"].map(String::from));
    }
    let mut rows = vec![header];
    for pod in pods {
        let m = pod.metadata.clone().unwrap_or_default();
        let status = pod.status.clone().unwrap_or_default();
        let total = pod.spec.as_ref().map(|s| s.containers.len()).unwrap_or(0);
        let ready = status.container_statuses.iter().filter(|s| s.ready).count();
        let restarts: i32 = status
            .container_statuses
            .iter()
            .map(|s| s.restart_count)
            .sum();
        let mut row = vec![
            m.name.clone(),
            format!("{ready}/{total}"),
            pod_status_text(pod),
            restarts.to_string(),
            age(m.creation_timestamp_ms),
        ];
        if with_namespace {
            row.insert(0, m.namespace.clone());
        }
        if wide {
            let node = pod
                .spec
                .as_ref()
                .map(|s| s.node_name.clone())
                .unwrap_or_default();
            row.push(if status.pod_ip.is_empty() {
                "<none>".into()
            } else {
                status.pod_ip
            });
            row.push(if node.is_empty() {
                "<none>".into()
            } else {
                node
            });
        }
        rows.push(row);
    }
    rows
}

pub fn node_rows(nodes: &[api::Node], wide: bool) -> Vec<Vec<String>> {
    let mut header: Vec<String> = ["NAME", "STATUS", "AGE", "CPU", "MEMORY", "PODS"]
        .map(String::from)
        .to_vec();
    if wide {
        header.extend(["POD-CIDR", "AGENT", "OS-IMAGE", "KERNEL-VERSION"].map(String::from));
    }
    let mut rows = vec![header];
    for node in nodes {
        let m = node.metadata.clone().unwrap_or_default();
        let s = node.status.clone().unwrap_or_default();
        let cap = s.capacity.unwrap_or_default();
        let mut status = if kubelab_proto::node_is_ready(node) {
            "Ready".to_string()
        } else {
            "NotReady".to_string()
        };
        if node.spec.as_ref().is_some_and(|s| s.unschedulable) {
            status.push_str(",SchedulingDisabled");
        }
        let mut row = vec![
            m.name.clone(),
            status,
            age(m.creation_timestamp_ms),
            format!("{}", cap.cpu_millis as f64 / 1000.0),
            format!("{}Mi", cap.memory_bytes >> 20),
            cap.pods.to_string(),
        ];
        if wide {
            let cidr = node.spec.as_ref().map(|s| s.pod_cidr.clone());
            row.extend([
                cidr.filter(|c| !c.is_empty())
                    .unwrap_or_else(|| "<none>".into()),
                s.agent_endpoint.clone(),
                s.os_image.clone(),
                s.kernel_version.clone(),
            ]);
        }
        rows.push(row);
    }
    rows
}

fn describe_state(out: &mut String, label: &str, state: &Option<api::ContainerState>) {
    let Some(s) = state.as_ref().and_then(|s| s.state.as_ref()) else {
        return;
    };
    let t = |ms: i64| time(ms).map(|t| t.0.to_string()).unwrap_or_default();
    match s {
        State::Waiting(w) => {
            out.push_str(&format!("    {label:<15}Waiting\n      Reason:      {}\n", w.reason));
            if !w.message.is_empty() {
                out.push_str(&format!("      Message:     {}\n", w.message));
            }
        }
        State::Running(r) => out.push_str(&format!("    {label:<15}Running\n      Started:     {}\n", t(r.started_at_ms))),
        State::Terminated(x) => out.push_str(&format!(
            "    {label:<15}Terminated\n      Reason:      {}\n      Exit Code:   {}\n      Started:     {}\n      Finished:    {}\n",
            x.reason,
            x.exit_code,
            t(x.started_at_ms),
            t(x.finished_at_ms)
        )),
    }
}

/// Command words on one line; a multi-line word (a script) continues indented under it.
fn indent_words(words: &[String]) -> String {
    words
        .join(" ")
        .trim_end()
        .replace('\n', "\n                   ")
}

fn describe_container(out: &mut String, c: &api::Container, statuses: &[api::ContainerStatus]) {
    out.push_str(&format!("  {}:\n    Image:         {}\n", c.name, c.image));
    if !c.command.is_empty() {
        out.push_str(&format!(
            "    Command:       {}\n",
            indent_words(&c.command)
        ));
    }
    if !c.args.is_empty() {
        out.push_str(&format!("    Args:          {}\n", indent_words(&c.args)));
    }
    if let Some(s) = statuses.iter().find(|s| s.name == c.name) {
        if !s.container_id.is_empty() {
            out.push_str(&format!(
                "    Container ID:  kubelab://{}\n",
                s.container_id
            ));
        }
        if !s.image_id.is_empty() {
            out.push_str(&format!("    Image ID:      {}\n", s.image_id));
        }
        describe_state(out, "State:", &s.state);
        describe_state(out, "Last State:", &s.last_state);
        out.push_str(&format!(
            "    Ready:         {}\n    Restart Count: {}\n",
            s.ready, s.restart_count
        ));
        if s.pid > 0 {
            out.push_str(&format!("    PID:           {}\n", s.pid));
        }
    }
    if !c.env.is_empty() {
        out.push_str("    Environment:\n");
        for e in &c.env {
            out.push_str(&format!("      {}: {}\n", e.name, e.value));
        }
    }
}

/// `kubelab describe pod`: the spec in brief, each container's state, and the events as a
/// timeline measured from the pod's creation.
pub fn describe_pod(pod: &api::Pod, events: &[api::Event]) -> String {
    let m = pod.metadata.clone().unwrap_or_default();
    let spec = pod.spec.clone().unwrap_or_default();
    let status = pod.status.clone().unwrap_or_default();
    let mut out = String::new();
    let t = |ms: i64| {
        time(ms)
            .map(|t| t.0.to_string())
            .unwrap_or_else(|| "<none>".into())
    };
    let node = if spec.node_name.is_empty() {
        "<none>".to_string()
    } else {
        format!("{}/{}", spec.node_name, status.host_ip)
    };
    out.push_str(&format!("Name:             {}\nNamespace:        {}\nUID:              {}\nNode:             {node}\n", m.name, m.namespace, m.uid));
    out.push_str(&format!(
        "Created:          {}\nStart Time:       {}\n",
        t(m.creation_timestamp_ms),
        t(status.start_time_ms)
    ));
    if !m.labels.is_empty() {
        let labels: Vec<String> = m.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        out.push_str(&format!("Labels:           {}\n", labels.join(",")));
    }
    out.push_str(&format!("Status:           {}\n", pod_status_text(pod)));
    out.push_str(&format!(
        "IP:               {}\nRestart Policy:   {}\n",
        if status.pod_ip.is_empty() {
            "<none>"
        } else {
            &status.pod_ip
        },
        spec.restart_policy
    ));
    if !spec.init_containers.is_empty() {
        out.push_str("Init Containers:\n");
        for c in &spec.init_containers {
            describe_container(&mut out, c, &status.init_container_statuses);
        }
    }
    out.push_str("Containers:\n");
    for c in &spec.containers {
        describe_container(&mut out, c, &status.container_statuses);
    }
    if !status.conditions.is_empty() {
        out.push_str("Conditions:\n  Type              Status\n");
        for c in &status.conditions {
            out.push_str(&format!("  {:<16}  {}\n", c.r#type, c.status));
        }
    }
    if !spec.volumes.is_empty() {
        out.push_str("Volumes:\n");
        for v in &spec.volumes {
            let what = match &v.source {
                Some(api::volume::Source::EmptyDir(e)) if e.medium == "Memory" => {
                    "EmptyDir (memory)".to_string()
                }
                Some(api::volume::Source::EmptyDir(_)) => "EmptyDir".to_string(),
                Some(api::volume::Source::HostPath(h)) => format!("HostPath {}", h.path),
                None => "<unknown>".to_string(),
            };
            out.push_str(&format!("  {}: {what}\n", v.name));
        }
    }
    out.push_str("Events:\n");
    if events.is_empty() {
        out.push_str("  <none>\n");
        return out;
    }
    let mut rows = vec![["Type", "Reason", "At", "From", "Message"]
        .map(String::from)
        .to_vec()];
    for e in events {
        let at = (e.timestamp_ms - m.creation_timestamp_ms) as f64 / 1000.0;
        // A repeated event, as kubectl shows it: the last time, and how often over how long.
        let repeats = if e.count > 1 {
            let span = (e.timestamp_ms - e.first_timestamp_ms) as f64 / 1000.0;
            format!(" (x{} over {span:.1}s)", e.count)
        } else {
            String::new()
        };
        rows.push(vec![
            e.r#type.clone(),
            e.reason.clone(),
            format!("+{at:.3}s{repeats}"),
            e.source.clone(),
            e.message.clone(),
        ]);
    }
    let widths: Vec<usize> = (0..5)
        .map(|i| rows.iter().map(|r| r[i].len()).max().unwrap_or(0))
        .collect();
    for r in &rows {
        out.push_str(&format!(
            "  {:<w0$}  {:<w1$}  {:>w2$}  {:<w3$}  {}\n",
            r[0],
            r[1],
            r[2],
            r[3],
            r[4],
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2],
            w3 = widths[3]
        ));
    }
    out
}

/// `kubelab describe node`: kubectl's sections — labels, taints, conditions, capacity, the
/// node's pods with their requests, what is allocated, and the node's events.
pub fn describe_node(node: &api::Node, pods: &[api::Pod], events: &[api::Event]) -> String {
    let m = node.metadata.clone().unwrap_or_default();
    let spec = node.spec.clone().unwrap_or_default();
    let status = node.status.clone().unwrap_or_default();
    let t = |ms: i64| {
        time(ms)
            .map(|t| t.0.to_string())
            .unwrap_or_else(|| "<none>".into())
    };
    let mut out = format!("Name:               {}\n", m.name);
    let mut labels: Vec<String> = m.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    labels.sort();
    out.push_str(&format!(
        "Labels:             {}\n",
        if labels.is_empty() {
            "<none>".into()
        } else {
            labels.join("\n                    ")
        }
    ));
    out.push_str(&format!(
        "CreationTimestamp:  {}\n",
        t(m.creation_timestamp_ms)
    ));
    let taints: Vec<String> = spec
        .taints
        .iter()
        .map(|t| {
            if t.value.is_empty() {
                format!("{}:{}", t.key, t.effect)
            } else {
                format!("{}={}:{}", t.key, t.value, t.effect)
            }
        })
        .collect();
    out.push_str(&format!(
        "Taints:             {}\nUnschedulable:      {}\n",
        if taints.is_empty() {
            "<none>".into()
        } else {
            taints.join("\n                    ")
        },
        spec.unschedulable
    ));
    out.push_str("Conditions:\n");
    let mut rows = vec![[
        "Type",
        "Status",
        "LastHeartbeatTime",
        "LastTransitionTime",
        "Reason",
        "Message",
    ]
    .map(String::from)
    .to_vec()];
    for c in &status.conditions {
        rows.push(vec![
            c.r#type.clone(),
            c.status.clone(),
            t(c.last_heartbeat_time_ms),
            t(c.last_transition_time_ms),
            c.reason.clone(),
            c.message.clone(),
        ]);
    }
    indented_table(&mut out, &rows);
    out.push_str(&format!(
        "Addresses:\n  AgentEndpoint:  {}\n",
        if status.agent_endpoint.is_empty() {
            "<none>"
        } else {
            &status.agent_endpoint
        }
    ));
    for (title, r) in [
        ("Capacity", status.capacity),
        ("Allocatable", status.allocatable),
    ] {
        let r = r.unwrap_or_default();
        out.push_str(&format!(
            "{title}:\n  cpu:     {}m\n  memory:  {}\n  pods:    {}\n",
            r.cpu_millis,
            memory_quantity(r.memory_bytes),
            r.pods
        ));
    }
    out.push_str(&format!(
        "System Info:\n  Kernel Version:  {}\n  OS Image:        {}\nPodCIDR:            {}\n",
        status.kernel_version,
        status.os_image,
        if spec.pod_cidr.is_empty() {
            "<none>"
        } else {
            &spec.pod_cidr
        }
    ));
    // What the scheduler counts: the requests of the pods that have not ended.
    let running: Vec<&api::Pod> = pods
        .iter()
        .filter(|p| {
            p.status
                .as_ref()
                .is_none_or(|s| s.phase != "Succeeded" && s.phase != "Failed")
        })
        .collect();
    let alloc = status.allocatable.unwrap_or_default();
    let percent = |used: i64, of: i64| if of > 0 { used * 100 / of } else { 0 };
    out.push_str(&format!(
        "Non-terminated Pods:  ({} in total)\n",
        running.len()
    ));
    let mut rows = vec![[
        "Namespace",
        "Name",
        "CPU Requests",
        "Memory Requests",
        "Age",
    ]
    .map(String::from)
    .to_vec()];
    let (mut cpu, mut mem) = (0, 0);
    for p in &running {
        let pm = p.metadata.clone().unwrap_or_default();
        let (c, mm) = p
            .spec
            .iter()
            .flat_map(|s| &s.containers)
            .filter_map(|c| c.resources.as_ref())
            .fold((0, 0), |(c, mm), r| {
                (c + r.cpu_request_millis, mm + r.memory_request_bytes)
            });
        cpu += c;
        mem += mm;
        rows.push(vec![
            pm.namespace,
            pm.name,
            format!("{c}m ({}%)", percent(c, alloc.cpu_millis)),
            format!(
                "{} ({}%)",
                memory_quantity(mm),
                percent(mm, alloc.memory_bytes)
            ),
            age(pm.creation_timestamp_ms),
        ]);
    }
    indented_table(&mut out, &rows);
    out.push_str(&format!(
        "Allocated resources:\n  cpu:     {cpu}m ({}%)\n  memory:  {} ({}%)\n  pods:    {} of {}\n",
        percent(cpu, alloc.cpu_millis),
        memory_quantity(mem),
        percent(mem, alloc.memory_bytes),
        running.len(),
        alloc.pods
    ));
    out.push_str("Events:\n");
    if events.is_empty() {
        out.push_str("  <none>\n");
    } else {
        let mut rows = vec![["Type", "Reason", "Age", "From", "Message"]
            .map(String::from)
            .to_vec()];
        for e in events {
            rows.push(vec![
                e.r#type.clone(),
                e.reason.clone(),
                age(e.timestamp_ms),
                e.source.clone(),
                e.message.clone(),
            ]);
        }
        indented_table(&mut out, &rows);
    }
    out
}

/// A table indented by two spaces, columns two apart, into `out`.
fn indented_table(out: &mut String, rows: &[Vec<String>]) {
    let columns = rows.first().map(|r| r.len()).unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    for r in rows {
        let cells: Vec<String> = r
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(&format!("  {}\n", cells.join("  ").trim_end()));
    }
}
