//! The end-to-end test harness: a real lab on this machine, torn down even on failure.
//!
//! `Lab::start` runs Debian's `docker-registry`, `kubelabd apiserver`, `kubelabd scheduler`
//! and N `kubelabd agent`s, each on a free loopback port with all state in one temporary
//! directory (named `kubelab-test-*`, so that anything left behind is easy to spot).
//! Tests drive it through the real `kubelab` CLI, as a user would. Dropping the `Lab` stops
//! the agents first (they stop their containers and remove mounts and cgroups), then the
//! rest, and removes the directory. Needs root, and `cargo build --bins` first.
//!
//! The harness's parts: `lab` (starting and tearing down a lab), `client` (the CLI and
//! the gRPC clients against it), `images` (busybox images, builds, raw layers), `proc`
//! (a process a test started), `host` (processes, mounts and cgroups on this machine).
//! This file holds the small helpers every test uses.

#![forbid(unsafe_code)]

mod client;
mod host;
mod images;
mod lab;
mod proc;

pub use host::{
    cgroups_matching, kube_rules, mounts_under, processes_in_cgroups, processes_mentioning,
    proxy_lock,
};
pub use images::make_busybox_rootfs;
pub use lab::Lab;
pub use proc::Proc;

use std::net::TcpListener;
use std::path::PathBuf;
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

/// One HTTP/1.0 GET of `/` at `address` (`ip:port`); the body, trimmed, or empty when
/// nothing answered.
pub fn http_get(address: &str) -> String {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(address) else {
        return String::new();
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(3)));
    let _ = stream.write_all(b"GET / HTTP/1.0\r\n\r\n");
    let mut out = String::new();
    let _ = stream.read_to_string(&mut out);
    out.split("\r\n\r\n")
        .nth(1)
        .unwrap_or("")
        .trim()
        .to_string()
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
