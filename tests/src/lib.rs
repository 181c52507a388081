//! The end-to-end test harness: a real lab on this machine, torn down even on failure.
//!
//! `Lab::start` runs Debian's `docker-registry`, `kubelabd apiserver`, `kubelabd scheduler`
//! and N `kubelabd agent`s, each on a free loopback port with all state in one temporary
//! directory (named `kubelab-test-*`, so that anything left behind is easy to spot).
//! Tests drive it through the real `kubelab` CLI, as a user would. Dropping the `Lab` stops
//! the agents first (they stop their containers and remove mounts and cgroups), then the
//! rest, and removes the directory. Needs root, and `cargo build --bins` first.

#![forbid(unsafe_code)]

use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Where `kubelab` and `kubelabd` are: beside the running executable (the bench) or one
/// level up from a test's `deps/` directory.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe.parent().expect("executable dir");
    let candidates = [dir.join(name), dir.parent().unwrap_or(dir).join(name)];
    let found = candidates.iter().find(|p| p.exists()).cloned();
    found.unwrap_or_else(|| {
        panic!(
            "{name} not found beside {}: run `cargo build --bins` first (make test does)",
            dir.display()
        )
    })
}

/// A port that is free now, for a server a test starts. It is chosen below the kernel's
/// ephemeral range (32768 and up), so that no client connection or `:0` listener of another
/// test can take it between now and the server's bind.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    // Spread over 20000-32000 by process and call, so that concurrent test binaries differ.
    let seed = std::process::id().wrapping_mul(7919);
    for _ in 0..12_000 {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = 20_000 + (seed.wrapping_add(n.wrapping_mul(13)) % 12_000) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port between 20000 and 32000")
}

pub fn wait_until(what: &str, timeout: Duration, mut ready: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ready() {
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// An ordinary Kubernetes Pod manifest: one container `main` running `sh -c SCRIPT`, with a
/// short grace period (busybox's `sleep`, as PID 1, ignores SIGTERM).
pub fn pod_manifest(name: &str, image: &str, restart_policy: &str, script: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  restartPolicy: {restart_policy}\n  terminationGracePeriodSeconds: 2\n  containers:\n  - name: main\n    image: {image}\n    command: [\"sh\", \"-c\", {script:?}]\n"
    )
}

/// The line of `kubelab trace` output for a step ("4 scheduled"); fails the test without it.
pub fn trace_step(trace: &str, step: &str) -> String {
    trace
        .lines()
        .find(|l| l.trim_start().starts_with(step))
        .unwrap_or_else(|| panic!("no step {step:?} in:\n{trace}"))
        .to_string()
}

/// Makes a busybox root filesystem at `dir` with `examples/busybox-rootfs.sh`.
pub fn make_busybox_rootfs(dir: &Path) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/busybox-rootfs.sh");
    let status = Command::new("sh")
        .arg(script)
        .arg(dir)
        .status()
        .expect("run busybox-rootfs.sh");
    assert!(status.success(), "busybox-rootfs.sh failed");
}

/// A process a test started, stopped (SIGTERM, then SIGKILL) when dropped, so that a
/// failing test leaves nothing running.
pub struct Proc {
    name: String,
    child: Child,
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(30));
    }
}

impl Proc {
    /// Starts `cmd` with its output going to `log`.
    pub fn spawn(name: &str, cmd: &mut Command, log: &Path) -> Proc {
        let log = std::fs::File::create(log).expect("log file");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log fd"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Proc {
            name: name.into(),
            child,
        }
    }

    /// Sends SIGTERM (what Ctrl-C sends), as a user stopping it would; a process a test
    /// froze (SIGSTOP) is woken first, so that it can act on it.
    pub fn terminate(&self) {
        self.signal(nix::sys::signal::Signal::SIGCONT);
        self.signal(nix::sys::signal::Signal::SIGTERM);
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, signal);
    }

    /// Waits up to `timeout` for the process to exit by itself.
    pub fn wait_for_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// SIGTERM, then SIGKILL if it has not exited within `timeout`.
    pub fn stop(&mut self, timeout: Duration) {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        self.terminate();
        if self.wait_for_exit(timeout).is_some() {
            return;
        }
        eprintln!("{} did not stop within {timeout:?}: killing it", self.name);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGKILL: the process gets no chance to clean up.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub struct Lab {
    pub dir: tempfile::TempDir,
    pub server: String,
    pub registry: String,
    registry_proc: Option<Proc>,
    apiserver: Option<Proc>,
    scheduler: Option<Proc>,
    agents: Vec<Proc>,
    pub node_names: Vec<String>,
    rootfs: OnceLock<PathBuf>,
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
                .args(["--cni-bridge", &self.bridge_of(name)])
                .args(&self.agent_args)
                .args(own)
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

    /// The lab's pods API, as the admin (for benchmarks and raw gRPC calls).
    pub fn pods_client(
        &self,
    ) -> kubelab_proto::v1::pods_client::PodsClient<kubelab_proto::credential::AuthChannel> {
        let credential = kubelab_proto::credential::Credential::load(&self.admin_config())
            .expect("admin credential");
        kubelab_proto::v1::pods_client::PodsClient::new(credential.channel().expect("channel"))
    }

    /// The lab's nodes and events APIs, as the admin.
    pub fn nodes_client(
        &self,
    ) -> kubelab_proto::v1::nodes_client::NodesClient<kubelab_proto::credential::AuthChannel> {
        let credential = kubelab_proto::credential::Credential::load(&self.admin_config())
            .expect("admin credential");
        kubelab_proto::v1::nodes_client::NodesClient::new(credential.channel().expect("channel"))
    }

    pub fn events_client(
        &self,
    ) -> kubelab_proto::v1::events_client::EventsClient<kubelab_proto::credential::AuthChannel>
    {
        let credential = kubelab_proto::credential::Credential::load(&self.admin_config())
            .expect("admin credential");
        kubelab_proto::v1::events_client::EventsClient::new(credential.channel().expect("channel"))
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

    /// Runs the CLI against this lab.
    pub fn kubelab(&self, args: &[&str]) -> Output {
        Command::new(bin("kubelab"))
            .args(args)
            .env("KUBELAB_CONFIG", self.admin_config())
            // The lab's own apiserver, whatever the caller's environment says.
            .env_remove("KUBELAB_SERVER")
            .output()
            .expect("run kubelab")
    }

    /// Runs the CLI and returns its stdout, failing the test (with stderr) if it fails.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.kubelab(args);
        assert!(
            out.status.success(),
            "kubelab {args:?} failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs the CLI expecting failure; returns stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.kubelab(args);
        assert!(
            !out.status.success(),
            "kubelab {args:?} should have failed but printed:\n{}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// `kubelab apply -f -` with this manifest.
    pub fn apply(&self, manifest: &str) -> Output {
        let mut child = Command::new(bin("kubelab"))
            .args(["apply", "-f", "-"])
            .env("KUBELAB_CONFIG", self.admin_config())
            // The lab's own apiserver, whatever the caller's environment says.
            .env_remove("KUBELAB_SERVER")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run kubelab apply");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(manifest.as_bytes())
            .expect("write manifest");
        child.wait_with_output().expect("kubelab apply")
    }

    pub fn apply_ok(&self, manifest: &str) {
        let out = self.apply(manifest);
        assert!(
            out.status.success(),
            "apply failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// A busybox root filesystem in the lab's directory (made on first use).
    pub fn busybox_rootfs(&self) -> &Path {
        self.rootfs.get_or_init(|| {
            let dir = self.dir.path().join("rootfs");
            make_busybox_rootfs(&dir);
            dir
        })
    }

    /// Pushes the busybox rootfs as `REGISTRY/busybox:TAG` and returns the reference.
    pub fn push_busybox(&self, tag: &str) -> String {
        let reference = format!("{}/busybox:{tag}", self.registry);
        let rootfs = self
            .busybox_rootfs()
            .to_str()
            .expect("utf-8 path")
            .to_string();
        self.ok(&["image", "push", &rootfs, &reference, "--cmd", "sh"]);
        reference
    }

    /// Where this lab's `kubelab image build` keeps images, layers and its cache.
    pub fn build_root(&self) -> PathBuf {
        self.dir.path().join("build")
    }

    /// `kubelab image build DIR -t TAG ARGS...` with this lab's build root.
    pub fn build(&self, dir: &Path, tag: &str, args: &[&str]) -> Output {
        Command::new(bin("kubelab"))
            .args(["image", "build"])
            .arg(dir)
            .args(["-t", tag, "--root"])
            .arg(self.build_root())
            .args(args)
            .output()
            .expect("run kubelab image build")
    }

    /// The same, failing the test (with its output) unless it succeeds; returns stdout.
    pub fn build_ok(&self, dir: &Path, tag: &str, args: &[&str]) -> String {
        let out = self.build(dir, tag, args);
        assert!(
            out.status.success(),
            "kubelab image build {} failed:\n{}{}",
            dir.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Pushes an image made of these raw (uncompressed) tar layers, bottom first, as they
    /// are — hostile ones included, which `kubelab image push` would never make.
    pub fn push_raw_layers(&self, tag: &str, layers: Vec<Vec<u8>>) -> String {
        use oci_client::client::{ClientConfig, ClientProtocol, Config, ImageLayer};
        use sha2::Digest;
        let reference = format!("{}/raw:{tag}", self.registry);
        let diff_ids: Vec<String> = layers
            .iter()
            .map(|l| format!("sha256:{}", hex::encode(sha2::Sha256::digest(l))))
            .collect();
        let config = serde_json::json!({
            "architecture": "amd64", "os": "linux",
            "config": {"Cmd": ["sh"]},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        });
        let layers: Vec<ImageLayer> = layers
            .into_iter()
            .map(|l| ImageLayer::new(l, oci_client::manifest::IMAGE_LAYER_MEDIA_TYPE.into(), None))
            .collect();
        let config = Config::new(
            serde_json::to_vec(&config).expect("config"),
            oci_client::manifest::IMAGE_CONFIG_MEDIA_TYPE.into(),
            None,
        );
        let client = oci_client::Client::new(ClientConfig {
            protocol: ClientProtocol::Http,
            ..Default::default()
        });
        let parsed: oci_client::Reference = reference.parse().expect("reference");
        tokio::runtime::Runtime::new()
            .expect("runtime")
            .block_on(client.push(
                &parsed,
                &layers,
                config,
                &oci_client::secrets::RegistryAuth::Anonymous,
                None,
            ))
            .expect("push");
        reference
    }

    /// The pod as `kubelab get pod NAME -o json` prints it (Kubernetes' shape).
    pub fn pod_json(&self, name: &str) -> serde_json::Value {
        serde_json::from_str(&self.ok(&["get", "pod", name, "-o", "json"])).expect("pod JSON")
    }

    pub fn wait_for(&self, name: &str, phase: &str) {
        self.ok(&["wait", "pod", name, "--for", phase, "--timeout", "60"]);
    }

    /// Waits until the pod's STATUS column (kubectl's) shows `status`.
    pub fn wait_status(&self, name: &str, status: &str, timeout: Duration) {
        wait_until(&format!("pod {name} to show {status}"), timeout, || {
            self.ok(&["get", "pod", name])
                .lines()
                .nth(1)
                .is_some_and(|l| l.split_whitespace().nth(2) == Some(status))
        });
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
        // What CNI leaves by design (the bridges) and the agents' no-NAT rule.
        for node in &self.node_names {
            let _ = Command::new("ip")
                .args(["link", "del", &self.bridge_of(node)])
                .stderr(Stdio::null())
                .status();
        }
        // An agent that was killed left its masquerade rule (named by its bridge).
        let rules = Command::new("iptables")
            .args(["-w", "-t", "nat", "-S", "POSTROUTING"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        let ours = format!("(klt{}-", self.net.n);
        for rule in rules.lines().filter(|r| r.contains(&ours)) {
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

/// The lab's cgroups: `/kubelab/<node>` in every hierarchy (one per controller on v1).
fn node_cgroups(node: &str) -> Vec<PathBuf> {
    let mut roots = vec![PathBuf::from("/sys/fs/cgroup")];
    if let Ok(entries) = std::fs::read_dir("/sys/fs/cgroup") {
        roots.extend(entries.flatten().map(|e| e.path()));
    }
    roots
        .into_iter()
        .map(|r| r.join("kubelab").join(node))
        .filter(|p| p.is_dir())
        .collect()
}

fn kill_cgroup_processes(node: &str) {
    for dir in node_cgroups(node) {
        let mut stack = vec![dir];
        while let Some(d) = stack.pop() {
            for pid in std::fs::read_to_string(d.join("cgroup.procs"))
                .unwrap_or_default()
                .lines()
            {
                if let Ok(pid) = pid.trim().parse::<i32>() {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            }
            if let Ok(entries) = std::fs::read_dir(&d) {
                stack.extend(entries.flatten().map(|e| e.path()).filter(|p| p.is_dir()));
            }
        }
    }
}

/// Processes (other than this one) whose command line contains `needle`.
pub fn processes_mentioning(needle: &str) -> Vec<i32> {
    let me = std::process::id().to_string();
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name == me || !name.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            String::from_utf8_lossy(&cmdline)
                .contains(needle)
                .then(|| name.parse().ok())
                .flatten()
        })
        .collect()
}

/// SIGKILLs processes whose command line names `dir` (the shims of the lab's agents).
fn kill_processes_mentioning(dir: &Path) {
    for pid in processes_mentioning(&format!("{}/", dir.display())) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

/// Removes the node's cgroup trees (children first) and `/kubelab` when it is left empty.
fn remove_cgroups(node: &str) {
    for dir in node_cgroups(node) {
        // Killed processes take a moment to leave their cgroup.
        for _ in 0..50 {
            let mut dirs = Vec::new();
            let mut stack = vec![dir.clone()];
            while let Some(d) = stack.pop() {
                if let Ok(entries) = std::fs::read_dir(&d) {
                    stack.extend(entries.flatten().map(|e| e.path()).filter(|p| p.is_dir()));
                }
                dirs.push(d);
            }
            for d in dirs.iter().rev() {
                let _ = std::fs::remove_dir(d);
            }
            if !dir.exists() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if let Some(parent) = dir.parent() {
            let _ = std::fs::remove_dir(parent);
        }
    }
}

/// Mount points under `dir` (overlay rootfs of containers).
pub fn mounts_under(dir: &Path) -> Vec<String> {
    let root = dir.display().to_string();
    std::fs::read_to_string("/proc/self/mounts")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1).map(String::from))
        .filter(|t| t.starts_with(&root))
        .collect()
}

/// The processes in the cgroups whose path mentions `needle` (a pod uid, say).
pub fn processes_in_cgroups(needle: &str) -> Vec<i32> {
    let mut pids: Vec<i32> = cgroups_matching(needle)
        .iter()
        .flat_map(|d| {
            std::fs::read_to_string(d.join("cgroup.procs"))
                .unwrap_or_default()
                .lines()
                .filter_map(|l| l.trim().parse().ok())
                .collect::<Vec<i32>>()
        })
        .collect();
    pids.sort_unstable();
    pids.dedup();
    pids
}

/// cgroup directories (in any hierarchy) whose path mentions `needle`.
pub fn cgroups_matching(needle: &str) -> Vec<PathBuf> {
    fn walk(dir: &Path, needle: &str, depth: usize, out: &mut Vec<PathBuf>) {
        if depth == 0 {
            return;
        }
        if let Ok(entries) = std::fs::read_dir(dir) {
            for e in entries.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    let p = e.path();
                    if p.to_string_lossy().contains(needle) {
                        out.push(p.clone());
                    }
                    walk(&p, needle, depth - 1, out);
                }
            }
        }
    }
    let mut out = Vec::new();
    walk(Path::new("/sys/fs/cgroup"), needle, 6, &mut out);
    out
}
