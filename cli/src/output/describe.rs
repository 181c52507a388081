//! `kubelab describe pod|node`: kubectl's sections as text, events and all. Builds the
//! text only; the command prints it.

use kubelab_proto::v1 as api;
use kubelab_proto::v1::container_state::State;

use super::table::Table;
use super::values::{age, or_none};
use kubelab_proto::k8s::printers::pod_status_text;
use kubelab_proto::k8s::{memory_quantity, time};

fn describe_state(out: &mut String, label: &str, state: &Option<api::ContainerState>) {
    let Some(s) = state.as_ref().and_then(|s| s.state.as_ref()) else {
        return;
    };
    let t = timestamp;
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
    let t = |ms: i64| or_none(&timestamp(ms));
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
        or_none(&status.pod_ip),
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
    out.push_str(&Table::indented().right(2).render(&rows));
    out
}

/// `kubelab describe node`: kubectl's sections — labels, taints, conditions, capacity, the
/// node's pods with their requests, what is allocated, and the node's events.
pub fn describe_node(node: &api::Node, pods: &[api::Pod], events: &[api::Event]) -> String {
    let m = node.metadata.clone().unwrap_or_default();
    let spec = node.spec.clone().unwrap_or_default();
    let status = node.status.clone().unwrap_or_default();
    let t = |ms: i64| or_none(&timestamp(ms));
    let mut out = format!("Name:               {}\n", m.name);
    let mut labels: Vec<String> = m.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    labels.sort();
    out.push_str(&format!(
        "Labels:             {}\n",
        or_none(&labels.join("\n                    "))
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
        or_none(&taints.join("\n                    ")),
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
    out.push_str(&Table::indented().render(&rows));
    out.push_str(&format!(
        "Addresses:\n  AgentEndpoint:  {}\n",
        or_none(&status.agent_endpoint)
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
        or_none(&spec.pod_cidr)
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
    out.push_str(&Table::indented().render(&rows));
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
        out.push_str(&Table::indented().render(&rows));
    }
    out
}

/// A time as RFC 3339, or nothing when it is not set.
fn timestamp(ms: i64) -> String {
    time(ms).map(|t| t.0.to_string()).unwrap_or_default()
}
