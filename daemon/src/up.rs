//! `kubelabd up`: the whole lab in one command.
//!
//! Starts the apiserver, the controller manager, the cluster DNS and N agents as child
//! processes of this one, and runs the scheduler in-process (still only through the API).
//! One Ctrl-C (or SIGTERM) stops the controllers, then the agents (they stop their pods),
//! then the DNS and the apiserver. It owns only those child processes.
//!
//! It watches them too: a scheduler that stops is restarted (said on stderr and in the
//! log; if it keeps stopping, the lab stops); an apiserver, controller manager or agent
//! (or cluster DNS) that exits stops the lab, saying which one and how, and `up` exits non-zero. A lab
//! that silently runs on without its scheduler would leave every new pod Pending with no
//! word why.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

use crate::client::ApiClient;

#[derive(Debug, clap::Args)]
pub struct UpArgs {
    /// How many agents (nodes) to start: node-1, node-2, ... (at most 64 on one host).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(0..=64))]
    pub agents: u32,
    /// Where the lab keeps its data: apiserver/ and agents/NODE/.
    #[arg(long, default_value = "/var/lib/kubelab")]
    pub data_dir: PathBuf,
    /// Address of the apiserver.
    #[arg(long, default_value = "127.0.0.1:6443")]
    pub listen: std::net::SocketAddr,
    /// Do not run the scheduler (pods then stay Pending: a lesson in itself).
    #[arg(long)]
    pub no_scheduler: bool,
    /// Registries (HOST:PORT) the agents speak plain HTTP to; loopback ones always are.
    #[arg(long = "insecure-registry")]
    pub insecure_registries: Vec<String>,
    /// The agents' service proxy (iptables, or none when another lab on this host runs
    /// one).
    #[arg(long, value_enum, default_value_t = crate::agent::proxy::ProxyMode::Iptables)]
    pub proxy_mode: crate::agent::proxy::ProxyMode,
    /// Make each node a host of its own, as if the nodes were separate machines: a
    /// network namespace per node on the bridge kl-hosts (172.30.0.1/24), node-N at
    /// 172.30.0.(N+1), routes between them (host-gw).
    #[arg(long)]
    pub separate_hosts: bool,
    /// This host's address among the nodes (each agent's --node-ip), for nodes on other
    /// machines: they route this host's pods there, and it routes theirs (host-gw).
    #[arg(long, conflicts_with = "separate_hosts")]
    pub node_ip: Option<std::net::Ipv4Addr>,
    /// More networks the cluster DNS answers (the LAN of nodes on other machines, whose
    /// pods' queries arrive masqueraded behind their node's address).
    #[arg(long = "dns-allow")]
    pub dns_allow: Vec<String>,
    #[command(flatten)]
    pub cluster: crate::apiserver::ClusterArgs,
}

#[derive(Debug, thiserror::Error)]
pub enum UpError {
    #[error("cannot start {0}: {1}")]
    Spawn(String, std::io::Error),
    #[error("cannot listen on {0}: {1} (is a lab already running? stop it with `make down`, or choose another address with --listen)")]
    AddressInUse(std::net::SocketAddr, std::io::Error),
    #[error("the apiserver did not come up on {0}: {1}")]
    Apiserver(std::net::SocketAddr, String),
    #[error("the {0} stopped ({1}); the lab was stopped (see the log above)")]
    Died(String, String),
    #[error("the separate hosts' network: {0}")]
    SeparateHosts(#[from] crate::agent::separate_host::SeparateHostError),
}

/// A scheduler that stops this many times within `RESTART_WINDOW` stops the lab.
const MAX_RESTARTS: usize = 5;
const RESTART_WINDOW: Duration = Duration::from_secs(60);

pub async fn run(args: UpArgs, shutdown: crate::Shutdown) -> Result<(), UpError> {
    // Our apiserver must be the one answering on this address, not another lab's: a second
    // lab's agents would otherwise join the first one, under the same node names.
    if let Err(e) = std::net::TcpListener::bind(args.listen) {
        return Err(UpError::AddressInUse(args.listen, e));
    }
    let exe = std::env::current_exe().map_err(|e| UpError::Spawn("kubelabd".into(), e))?;
    let spawn = |what: &str, cmd: &mut Command| -> Result<Child, UpError> {
        // Own process groups: the terminal's Ctrl-C reaches only us, and we stop them in order.
        cmd.stdin(Stdio::null())
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| UpError::Spawn(what.into(), e))
    };
    let mut apiserver = spawn(
        "apiserver",
        Command::new(&exe)
            .arg("apiserver")
            .arg("--listen")
            .arg(args.listen.to_string())
            .arg("--data-dir")
            .arg(args.data_dir.join("apiserver"))
            .args(args.cluster.forwarded()),
    )?;
    let credentials = args.data_dir.join("apiserver");
    let api = wait_for_apiserver(&credentials, &mut apiserver, args.listen).await?;
    use crate::agent::separate_host::{make_lan, LAN_BRIDGE, LAN_GATEWAY, LAN_NETWORK};
    if args.separate_hosts {
        make_lan(LAN_BRIDGE, LAN_GATEWAY, LAN_NETWORK).await?;
    }
    // The cluster DNS is its own program, beside this one.
    let mut dns = Command::new(exe.with_file_name("kubelab-dns"));
    dns.arg("--kubeconfig")
        .arg(credentials.join("cluster-dns.conf"))
        .arg("--cluster-cidr")
        .arg(args.cluster.cluster_cidr.to_string());
    if args.separate_hosts {
        // The nodes' pods' queries arrive masqueraded behind their node's address.
        dns.args(["--allow", LAN_NETWORK]);
    }
    for network in &args.dns_allow {
        dns.args(["--allow", network]);
    }
    let mut cluster_dns = spawn("cluster DNS", &mut dns)?;
    // kube-dns's cluster IP, as the apiserver made it: the agents write it into pods'
    // resolv.conf (the kubelet's --cluster-dns).
    let dns_ip =
        crate::apiserver::services::allocate::dns_ip(args.cluster.service_cluster_ip_range);
    let mut agents = Vec::new();
    for i in 1..=args.agents {
        let name = format!("node-{i}");
        let mut cmd = Command::new(&exe);
        cmd.arg("agent")
            .arg("--node-name")
            .arg(&name)
            .arg("--bootstrap-config")
            .arg(credentials.join("bootstrap.conf"))
            .arg("--root-dir")
            .arg(args.data_dir.join("agents").join(&name))
            .arg("--cluster-cidr")
            .arg(args.cluster.cluster_cidr.to_string())
            .arg("--cluster-dns")
            .arg(dns_ip.to_string())
            // Heartbeats well within the grace period, when a lab shortens it to watch
            // eviction (Kubernetes' 10 s lease renewal against its 40 s).
            .arg("--heartbeat-period")
            .arg(format!(
                "{}ms",
                heartbeat_period(args.cluster.node_monitor_grace_period).as_millis()
            ));
        for r in &args.insecure_registries {
            cmd.arg("--insecure-registry").arg(r);
        }
        if args.proxy_mode == crate::agent::proxy::ProxyMode::None {
            cmd.args(["--proxy-mode", "none"]);
        }
        if args.separate_hosts {
            cmd.args(["--separate-host", LAN_BRIDGE])
                .arg("--node-ip")
                .arg(format!("172.30.0.{}", i + 1));
        } else if let Some(ip) = args.node_ip {
            cmd.arg("--node-ip").arg(ip.to_string());
        }
        agents.push(spawn(&format!("agent {name}"), &mut cmd)?);
    }
    let mut controller_manager = spawn(
        "controller manager",
        Command::new(&exe)
            .arg("controller-manager")
            .arg("--kubeconfig")
            .arg(credentials.join("controller-manager.conf")),
    )?;
    let start_scheduler = || tokio::spawn(crate::scheduler::run(api.clone()));
    let mut scheduler = (!args.no_scheduler).then(start_scheduler);
    println!(
        "kubelab is up: apiserver on {}, {} agent(s). Ctrl-C stops it all.",
        args.listen, args.agents
    );
    tokio::pin!(shutdown);
    let mut restarts: Vec<std::time::Instant> = Vec::new();
    let outcome = loop {
        tokio::select! {
            _ = &mut shutdown => break Ok(()),
            ended = async { scheduler.as_mut().expect("guarded").await }, if scheduler.is_some() => {
                let why = match ended {
                    Ok(Err(e)) => kubelab_proto::error_chain(&e),
                    other => crate::supervise::task_end(other),
                };
                restarts.retain(|t| t.elapsed() < RESTART_WINDOW);
                if restarts.len() >= MAX_RESTARTS {
                    break Err(UpError::Died("scheduler".into(), format!("{why}, {MAX_RESTARTS} times within a minute")));
                }
                restarts.push(std::time::Instant::now());
                eprintln!("kubelab up: the scheduler stopped ({why}); restarting it");
                tracing::error!(reason = %why, "the scheduler stopped; restarting it");
                tokio::time::sleep(Duration::from_secs(1)).await;
                scheduler = Some(start_scheduler());
            }
            status = apiserver.wait() => break Err(died("apiserver", status)),
            status = controller_manager.wait() => break Err(died("controller manager", status)),
            status = cluster_dns.wait() => break Err(died("cluster DNS", status)),
            (i, status) = first_exit(&mut agents) => {
                break Err(died(&format!("agent of node-{}", i + 1), status))
            }
        }
    };
    if let Err(e) = &outcome {
        tracing::error!(error = %e, "stopping the lab");
    }
    println!("stopping the lab...");
    if let Some(s) = scheduler {
        s.abort();
    }
    // The controllers first: none may replace the pods the agents are stopping.
    terminate(&controller_manager);
    let _ = controller_manager.wait().await;
    for agent in &agents {
        terminate(agent);
    }
    for mut agent in agents {
        let _ = agent.wait().await;
    }
    // The DNS removes its endpoint through the apiserver, so before it.
    terminate(&cluster_dns);
    let _ = cluster_dns.wait().await;
    terminate(&apiserver);
    let _ = apiserver.wait().await;
    if args.separate_hosts {
        crate::agent::separate_host::remove_lan(LAN_BRIDGE, LAN_NETWORK).await;
    }
    outcome
}

fn died(what: &str, status: std::io::Result<std::process::ExitStatus>) -> UpError {
    let how = match status {
        Ok(status) => format!("it exited with {status}"),
        Err(e) => format!("waiting for it failed: {e}"),
    };
    UpError::Died(what.into(), how)
}

/// The first of the agents to exit: its index and status. Never resolves without agents.
async fn first_exit(agents: &mut [Child]) -> (usize, std::io::Result<std::process::ExitStatus>) {
    if agents.is_empty() {
        return std::future::pending().await;
    }
    let waits = agents
        .iter_mut()
        .enumerate()
        .map(|(i, a)| Box::pin(async move { (i, a.wait().await) }));
    futures::future::select_all(waits).await.0
}

fn terminate(child: &Child) {
    if let Some(pid) = child.id() {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
    }
}

/// Waits until the apiserver has written its credentials and answers; returns a client
/// with the scheduler's credential (the scheduler runs in this process).
async fn wait_for_apiserver(
    credentials: &std::path::Path,
    apiserver: &mut Child,
    addr: std::net::SocketAddr,
) -> Result<ApiClient, UpError> {
    for _ in 0..200 {
        if let Ok(Some(status)) = apiserver.try_wait() {
            return Err(UpError::Apiserver(
                addr,
                format!("it exited with {status} (see its log above)"),
            ));
        }
        let credential =
            kubelab_proto::credential::Credential::load(&credentials.join("scheduler.conf"));
        if let Ok(api) = credential.map(|c| ApiClient::new(&c.with_server(Some(&addr.to_string()))))
        {
            let api = api.map_err(|e| UpError::Apiserver(addr, e.to_string()))?;
            let answered = api
                .nodes
                .clone()
                .list(kubelab_proto::v1::ListNodesRequest::default())
                .await;
            if answered.is_ok() {
                return Ok(api);
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(UpError::Apiserver(addr, "no answer after 10 s".into()))
}

/// A quarter of the node monitor grace period, at most the kubelet's 10 s.
fn heartbeat_period(grace: std::time::Duration) -> std::time::Duration {
    (grace / 4).clamp(
        std::time::Duration::from_millis(100),
        std::time::Duration::from_secs(10),
    )
}
