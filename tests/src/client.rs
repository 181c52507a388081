//! How tests talk to a `Lab`: the `kubelab` CLI (as a user would) and, for the bench and
//! raw calls, the API's gRPC clients as the admin. Starts no component.

use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use kubelab_proto::credential::{AuthChannel, Credential};
use kubelab_proto::v1;

use crate::{bin, wait_until, Lab};

impl Lab {
    /// The lab's pods API, as the admin (for benchmarks and raw gRPC calls).
    pub fn pods_client(&self) -> v1::pods_client::PodsClient<AuthChannel> {
        v1::pods_client::PodsClient::new(self.admin_channel())
    }

    /// The lab's nodes API, as the admin.
    pub fn nodes_client(&self) -> v1::nodes_client::NodesClient<AuthChannel> {
        v1::nodes_client::NodesClient::new(self.admin_channel())
    }

    /// The lab's events API, as the admin.
    pub fn events_client(&self) -> v1::events_client::EventsClient<AuthChannel> {
        v1::events_client::EventsClient::new(self.admin_channel())
    }

    /// A channel to the apiserver with the admin credential.
    fn admin_channel(&self) -> AuthChannel {
        let credential = Credential::load(&self.admin_config()).expect("admin credential");
        credential.channel().expect("channel")
    }

    /// A `kubelab` command against this lab's own apiserver, whatever the caller's
    /// environment says.
    fn cli(&self) -> Command {
        let mut command = Command::new(bin("kubelab"));
        command
            .env("KUBELAB_CONFIG", self.admin_config())
            .env_remove("KUBELAB_SERVER");
        command
    }

    /// Runs the CLI against this lab.
    pub fn kubelab(&self, args: &[&str]) -> Output {
        self.cli().args(args).output().expect("run kubelab")
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
        let mut child = self
            .cli()
            .args(["apply", "-f", "-"])
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

    /// A `kubectl` command against this lab: its kubeconfig, and a cache of its own (so
    /// that no discovery cached by another run is read).
    pub fn kubectl_command(&self) -> Command {
        let mut command = Command::new("kubectl");
        command
            .env("KUBECONFIG", self.admin_config())
            .env("KUBECACHEDIR", self.dir.path().join("kube-cache"))
            .stdin(Stdio::null());
        command
    }

    /// Runs kubectl against this lab.
    pub fn kubectl(&self, args: &[&str]) -> Output {
        self.kubectl_command()
            .args(args)
            .output()
            .expect("run kubectl (make test installs it)")
    }

    /// Runs kubectl and returns its stdout, failing the test (with stderr) if it fails.
    pub fn kubectl_ok(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        assert!(
            out.status.success(),
            "kubectl {args:?} failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs kubectl expecting failure; returns stderr.
    pub fn kubectl_fails(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        assert!(
            !out.status.success(),
            "kubectl {args:?} should have failed but printed:\n{}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// kubectl with `input` on its standard input (`apply -f -`, `exec -i`).
    pub fn kubectl_with_input(&self, args: &[&str], input: &str) -> Output {
        let mut child = self
            .kubectl_command()
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run kubectl");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input.as_bytes())
            .expect("write to kubectl");
        child.wait_with_output().expect("kubectl")
    }

    /// kubectl's minor version (kubectl 1.20 from Debian speaks no WebSocket exec).
    pub fn kubectl_minor(&self) -> u32 {
        let out = self.kubectl(&["version", "--client", "-o", "json"]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        v["clientVersion"]["minor"]
            .as_str()
            .and_then(|m| m.trim_end_matches('+').parse().ok())
            .unwrap_or(0)
    }
}
