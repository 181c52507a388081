//! `Lab`: one cluster on this machine (a registry, an apiserver, a scheduler, agents),
//! started, restarted and killed part by part, and torn down when dropped: processes,
//! mounts, cgroups, bridges and NAT rules. How tests talk to it is `client.rs`; its
//! images are `images.rs`; what it looks for on the host is `host.rs`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::host::{kill_cgroup_processes, kill_processes_mentioning, mounts_under, remove_cgroups};
use crate::{bin, free_port, wait_until, Proc};

pub struct Lab {
    pub dir: tempfile::TempDir,
    pub server: String,
    pub registry: String,
    registry_proc: Option<Proc>,
    apiserver: Option<Proc>,
    scheduler: Option<Proc>,
    controller_manager: Option<Proc>,
    cluster_dns: Option<Proc>,
    agents: Vec<Proc>,
    pub node_names: Vec<String>,
    pub(crate) rootfs: OnceLock<PathBuf>,
    /// RUST_LOG of the agents.
    agent_log: String,
    /// Extra arguments of every agent.
    agent_args: Vec<String>,
    /// Extra arguments of one agent (by index), added by `add_agent`.
    own_agent_args: Vec<Vec<String>>,
    /// Extra arguments of the apiserver (`--pod-security-default privileged`, ...).
    apiserver_args: Vec<String>,
    /// This lab's pod addresses, `10.N.0.0/16`, N held for the lab's life (see `NetSlot`).
    pub cluster_cidr: String,
    net: NetSlot,
}

/// A second octet for a lab's cluster CIDR and bridge names, held with a lock file so
/// that labs running at the same time (test threads, other test runs, the demo's
/// 10.88.0.0/16) never share addresses or bridges. The kernel drops the lock when the
/// process ends, so a crashed run leaves nothing held.
struct NetSlot {
    n: u8,
    _lock: nix::fcntl::Flock<std::fs::File>,
}

impl NetSlot {
    fn take() -> NetSlot {
        let dir = Path::new("/run/kubelab-tests");
        std::fs::create_dir_all(dir).expect("lock dir");
        for n in 100..=250u8 {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(dir.join(format!("net-{n}.lock")))
                .expect("lock file");
            if let Ok(lock) =
                nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock)
            {
                return NetSlot { n, _lock: lock };
            }
        }
        panic!("no free test network: 151 labs at once?");
    }
}
impl Lab {
    /// A registry, an apiserver, a scheduler and `agents` agents, all Ready.
    pub fn start(agents: usize) -> Lab {
        // Tests keep the agents' step-by-step story, printed when a test fails.
        Lab::start_with_agent_log(agents, "info,kubelabd=debug")
    }

    /// As `start`, with the agents' RUST_LOG chosen (the bench measures the default, `info`).
    pub fn start_with_agent_log(agents: usize, agent_log: &str) -> Lab {
        Lab::start_with(agents, agent_log, &[], &[])
    }

    /// As `start`, with extra agent arguments (`--backoff-reset 2s`, ...).
    pub fn start_with_agent_args(agents: usize, agent_args: &[&str]) -> Lab {
        Lab::start_with(agents, "info,kubelabd=debug", agent_args, &[])
    }

    /// As `start`, with extra arguments for every agent and for the apiserver.
    pub fn start_with_args(agents: usize, agent_args: &[&str], apiserver_args: &[&str]) -> Lab {
        Lab::start_with(agents, "info,kubelabd=debug", agent_args, apiserver_args)
    }

    /// As `start`, with extra apiserver arguments (`--pod-security-default privileged`, ...).
    pub fn start_with_apiserver_args(agents: usize, apiserver_args: &[&str]) -> Lab {
        Lab::start_with(agents, "info,kubelabd=debug", &[], apiserver_args)
    }

    /// Only a registry, an apiserver and `agents` agents: pods stay unbound until
    /// `start_scheduler` (the bench times the scheduler alone this way).
    pub fn start_without_scheduler(agents: usize, agent_log: &str, apiserver_args: &[&str]) -> Lab {
        Lab::start_full(agents, agent_log, &[], apiserver_args, false)
    }

    pub fn start_scheduler(&mut self) {
        self.scheduler = Some(Proc::spawn(
            "scheduler",
            Command::new(bin("kubelabd"))
                .args(["scheduler", "--config"])
                .arg(self.dir.path().join("apiserver/scheduler.conf")),
            &self.dir.path().join("scheduler.log"),
        ));
    }

    /// The controller manager (ReplicaSets, garbage collection), with its own credential.
    pub fn start_controller_manager(&mut self) {
        self.start_controller_manager_logging("debug,kubelab_daemon::controllers::client=info");
    }

    /// The same with its RUST_LOG (the bench's rows log less).
    pub fn start_controller_manager_logging(&mut self, log: &str) {
        self.controller_manager = Some(Proc::spawn(
            "controller-manager",
            Command::new(bin("kubelabd"))
                .args(["controller-manager", "--kubeconfig"])
                .arg(self.dir.path().join("apiserver/controller-manager.conf"))
                .env("RUST_LOG", log),
            &self.dir.path().join("controller-manager.log"),
        ));
    }

    /// The cluster DNS (`kubelab-dns`), forwarding other names to the name
    /// servers of `resolv_conf`. Pods reach it through kube-dns's cluster IP, so only
    /// through a lab that runs the service proxy.
    pub fn start_cluster_dns(&mut self, resolv_conf: &Path) {
        self.cluster_dns = Some(Proc::spawn(
            "kubelab-dns",
            Command::new(bin("kubelab-dns"))
                .arg("--kubeconfig")
                .arg(self.dir.path().join("apiserver/cluster-dns.conf"))
                .args(["--cluster-cidr", &self.cluster_cidr])
                // The separate hosts' LAN: their pods' queries arrive masqueraded.
                .args(["--allow", &format!("172.30.{}.0/24", self.net.n)])
                .arg("--resolv-conf")
                .arg(resolv_conf)
                .env("RUST_LOG", "debug"),
            &self.dir.path().join("cluster-dns.log"),
        ));
    }

    /// `kill -9` of the controller manager.
    pub fn kill_controller_manager(&mut self) {
        if let Some(mut p) = self.controller_manager.take() {
            p.kill();
        }
    }

    /// The pids of the apiserver and of agent `i`, for memory figures.
    pub fn apiserver_pid(&self) -> Option<u32> {
        self.apiserver.as_ref().map(Proc::pid)
    }

    pub fn agent_pid(&self, i: usize) -> Option<u32> {
        self.agents.get(i).map(Proc::pid)
    }

    /// Every choice: the agents' RUST_LOG, their arguments and the apiserver's.
    pub fn start_with(
        agents: usize,
        agent_log: &str,
        agent_args: &[&str],
        apiserver_args: &[&str],
    ) -> Lab {
        Lab::start_full(agents, agent_log, agent_args, apiserver_args, true)
    }

    fn start_full(
        agents: usize,
        agent_log: &str,
        agent_args: &[&str],
        apiserver_args: &[&str],
        with_scheduler: bool,
    ) -> Lab {
        let dir = tempfile::Builder::new()
            .prefix("kubelab-test-")
            .tempdir()
            .expect("tempdir");
        let registry = format!("127.0.0.1:{}", free_port());
        let server = format!("127.0.0.1:{}", free_port());
        let net = NetSlot::take();
        let mut lab = Lab {
            dir,
            server,
            registry,
            registry_proc: None,
            apiserver: None,
            scheduler: None,
            controller_manager: None,
            cluster_dns: None,
            agents: Vec::new(),
            node_names: Vec::new(),
            rootfs: OnceLock::new(),
            agent_log: agent_log.to_string(),
            agent_args: agent_args.iter().map(|a| a.to_string()).collect(),
            own_agent_args: Vec::new(),
            apiserver_args: apiserver_args.iter().map(|a| a.to_string()).collect(),
            cluster_cidr: format!("10.{}.0.0/16", net.n),
            net,
        };
        lab.start_registry();
        lab.start_apiserver();
        for _ in 0..agents {
            lab.start_agent(&[]);
        }
        if with_scheduler {
            lab.start_scheduler();
        }
        let n = agents;
        let start = Instant::now();
        loop {
            let out = lab.kubelab(&["get", "nodes"]);
            let text = String::from_utf8_lossy(&out.stdout);
            if text.matches(" Ready ").count() == n {
                break;
            }
            let last = format!("{text}{}", String::from_utf8_lossy(&out.stderr));
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "timed out after 20s waiting for the nodes to be Ready; `get nodes` said:\n{last}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        lab
    }

    fn start_registry(&mut self) {
        let storage = self.dir.path().join("registry");
        let config = self.dir.path().join("registry.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {}\n  secret: kubelab-test\n",
                storage.display(),
                self.registry
            ),
        )
        .expect("registry config");
        self.registry_proc = Some(Proc::spawn(
            "docker-registry",
            Command::new("docker-registry").arg("serve").arg(&config),
            &self.dir.path().join("registry.log"),
        ));
        let addr = self.registry.clone();
        wait_until("the registry", Duration::from_secs(10), || {
            std::net::TcpStream::connect(&addr).is_ok()
        });
    }

    pub fn start_apiserver(&mut self) {
        let data = self.dir.path().join("apiserver");
        self.apiserver = Some(Proc::spawn(
            "apiserver",
            Command::new(bin("kubelabd"))
                .arg("apiserver")
                .arg("--listen")
                .arg(&self.server)
                .arg("--data-dir")
                .arg(&data)
                .arg("--cluster-cidr")
                .arg(&self.cluster_cidr)
                .arg("--admin-config")
                .arg(self.admin_config())
                .args(&self.apiserver_args),
            &self.dir.path().join("apiserver.log"),
        ));
        let addr = self.server.clone();
        // Listening comes a moment before the credentials are written: wait for both.
        let written = ["scheduler.conf", "bootstrap.conf"].map(|f| data.join(f));
        wait_until("the apiserver", Duration::from_secs(10), || {
            std::net::TcpStream::connect(&addr).is_ok() && written.iter().all(|f| f.exists())
        });
    }

    /// `kill -9` of the apiserver: nothing gets a chance to flush.
    pub fn kill_apiserver(&mut self) {
        if let Some(mut p) = self.apiserver.take() {
            p.kill();
        }
    }

    /// `kill -9` of agent `i`: its containers keep running under their shims.
    pub fn kill_agent(&mut self, i: usize) {
        if let Some(agent) = self.agents.get_mut(i) {
            agent.kill();
        }
    }

    /// Starts agent `i` again, on the same node name and root directory.
    pub fn restart_agent(&mut self, i: usize) {
        let name = self.node_names[i].clone();
        let log = self.dir.path().join(format!("agent-{name}.log"));
        let old = std::fs::read_to_string(&log).unwrap_or_default();
        std::fs::write(
            self.dir
                .path()
                .join(format!("agent-{name}-before-restart.log")),
            old,
        )
        .expect("keep the old log");
        let agent = self.spawn_agent(&name);
        self.agents[i] = agent;
    }

    /// Starts one more agent with its own extra arguments (`--node-labels`, ...) and
    /// waits until its node is Ready; returns the node's name.
    pub fn add_agent(&mut self, args: &[&str]) -> String {
        let name = self.start_agent(args);
        wait_until("the new node to be Ready", Duration::from_secs(20), || {
            self.kubelab(&["get", "node", &name])
                .stdout
                .windows(7)
                .any(|w| w == b" Ready ")
        });
        name
    }

    fn start_agent(&mut self, args: &[&str]) -> String {
        let suffix = self
            .dir
            .path()
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("x")
            .trim_start_matches("kubelab-test-")
            .to_lowercase();
        let name = format!("node-{}-{suffix}", self.agents.len() + 1).replace('_', "-");
        self.own_agent_args
            .push(args.iter().map(|a| a.to_string()).collect());
        self.node_names.push(name.clone());
        let agent = self.spawn_agent(&name);
        self.agents.push(agent);
        name
    }

    /// The bridge standing for the LAN of this lab's separate hosts, and its address.
    pub fn hosts_bridge(&self) -> (String, String) {
        (
            format!("klh{}", self.net.n),
            format!("172.30.{}.1", self.net.n),
        )
    }

    /// Starts one more agent whose node is a host of its own (`--separate-host`): a
    /// network namespace on this lab's hosts bridge (made on first use), at
    /// 172.30.N.(2 + its index); waits until it is Ready and returns its name.
    pub fn add_separate_host_agent(&mut self, args: &[&str]) -> String {
        let (bridge, gateway) = self.hosts_bridge();
        if !Path::new("/sys/class/net").join(&bridge).exists() {
            for cmd in [
                format!("ip link add {bridge} type bridge"),
                format!("ip addr add {gateway}/24 dev {bridge}"),
                format!("ip link set {bridge} up"),
            ] {
                let ok = Command::new("sh").arg("-c").arg(&cmd).status();
                assert!(ok.is_ok_and(|s| s.success()), "{cmd}");
            }
        }
        let ip = format!("172.30.{}.{}", self.net.n, self.agents.len() + 2);
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["--separate-host", &bridge, "--node-ip", &ip]);
        self.add_agent(&all)
    }

    /// Sends a signal to agent `i` (SIGSTOP makes it a silent node; SIGCONT wakes it).
    pub fn signal_agent(&self, i: usize, signal: nix::sys::signal::Signal) {
        self.agents[i].signal(signal);
    }

    fn spawn_agent(&self, name: &str) -> Proc {
        let own: &[String] = self
            .node_names
            .iter()
            .position(|n| n == name)
            .and_then(|i| self.own_agent_args.get(i))
            .map(|a| a.as_slice())
            .unwrap_or(&[]);
        let root = self.agent_root(name);
        let log = self.dir.path().join(format!("agent-{name}.log"));
        Proc::spawn(
            &format!("agent {name}"),
            Command::new(bin("kubelabd"))
                .args(["agent", "--node-name", name, "--bootstrap-config"])
                .arg(self.dir.path().join("apiserver/bootstrap.conf"))
                // Short back-off keeps restart tests fast: 1s, 2s, 4s (the kubelet: 10s to 5m).
                .args(["--backoff-initial", "1s", "--backoff-max", "4s"])
                .args(["--cluster-cidr", &self.cluster_cidr])
                // kube-dns's address, as `kubelabd up` gives it.
                .args(["--cluster-dns", "10.96.0.10"])
                .args(["--cni-bridge", &self.bridge_of(name)])
                .args(&self.agent_args)
                .args(own)
                // One lab per host programs the Services' iptables rules: the tests that
                // route traffic ask for it (and take the host's proxy lock).
                .args(
                    (!self
                        .agent_args
                        .iter()
                        .chain(own)
                        .any(|a| a == "--proxy-mode"))
                    .then_some(["--proxy-mode", "none"])
                    .into_iter()
                    .flatten(),
                )
                .arg("--root-dir")
                .arg(&root)
                .env("RUST_LOG", &self.agent_log),
            &log,
        )
    }

    /// The admin credential the lab's apiserver writes (what the CLI uses).
    pub fn admin_config(&self) -> PathBuf {
        self.dir.path().join("admin.conf")
    }

    /// The CNI bridge of an agent of this lab: `klt<N>-<i>`.
    pub fn bridge_of(&self, node: &str) -> String {
        let i = node
            .strip_prefix("node-")
            .and_then(|r| r.split('-').next())
            .unwrap_or("0");
        format!("klt{}-{i}", self.net.n)
    }

    pub fn agent_root(&self, node: &str) -> PathBuf {
        self.dir.path().join("agents").join(node)
    }

    /// A log of everything the lab's components said, for failure messages.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        if let Ok(entries) = std::fs::read_dir(self.dir.path()) {
            for e in entries.flatten() {
                if e.path().extension().is_some_and(|x| x == "log") {
                    out.push_str(&format!(
                        "--- {}\n{}\n",
                        e.path().display(),
                        std::fs::read_to_string(e.path()).unwrap_or_default()
                    ));
                }
            }
        }
        out
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.logs());
        }
        if let Some(mut s) = self.scheduler.take() {
            s.stop(Duration::from_secs(5));
        }
        if let Some(mut c) = self.controller_manager.take() {
            c.stop(Duration::from_secs(5));
        }
        if let Some(mut d) = self.cluster_dns.take() {
            d.stop(Duration::from_secs(5));
        }
        // Agents first: on SIGTERM they stop their pods and remove mounts and cgroups.
        for agent in &mut self.agents {
            agent.stop(Duration::from_secs(30));
        }
        if let Some(mut a) = self.apiserver.take() {
            a.stop(Duration::from_secs(5));
        }
        if let Some(mut r) = self.registry_proc.take() {
            r.stop(Duration::from_secs(5));
        }
        // A test that killed an agent (or an agent that had to be SIGKILLed) leaves its
        // shims and containers running: kill them, then remove their mounts and cgroups.
        for node in &self.node_names {
            kill_cgroup_processes(node);
        }
        kill_processes_mentioning(self.dir.path());
        for target in mounts_under(self.dir.path()) {
            let _ = nix::mount::umount2(target.as_str(), nix::mount::MntFlags::MNT_DETACH);
        }
        for node in &self.node_names {
            remove_cgroups(node);
        }
        // What CNI leaves by design (the bridges) and the agents' no-NAT rule; the
        // network namespaces of separate hosts whose agent was killed, and their LAN.
        for node in &self.node_names {
            let _ = Command::new("ip")
                .args(["link", "del", &self.bridge_of(node)])
                .stderr(Stdio::null())
                .status();
            let _ = Command::new("ip")
                .args(["netns", "del", &format!("kl-{node}")])
                .stderr(Stdio::null())
                .status();
        }
        let _ = Command::new("ip")
            .args(["link", "del", &self.hosts_bridge().0])
            .stderr(Stdio::null())
            .status();
        // An agent that was killed left its masquerade rule (named by its bridge).
        let rules = Command::new("iptables")
            .args(["-w", "-t", "nat", "-S", "POSTROUTING"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        // Ours: named by one of this lab's bridges, or (agents started by `kubelabd up`
        // beside this lab, with default bridge names) about this lab's cluster CIDR.
        let ours = format!("(klt{}-", self.net.n);
        let our_cidr = format!("! -d {} ", self.cluster_cidr);
        for rule in rules
            .lines()
            .filter(|r| r.contains(&ours) || r.contains(&our_cidr))
        {
            let Some(spec) = rule.strip_prefix("-A ") else {
                continue;
            };
            // `iptables -S` quotes the comment; the shell undoes that quoting.
            let _ = Command::new("sh")
                .arg("-c")
                .arg(format!("iptables -w -t nat -D {spec}"))
                .status();
        }
    }
}
