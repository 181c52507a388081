//! The comparison for rows 1 and 2: `runc run` of the same busybox rootfs, one after
//! another or several lanes at once. Skipped (None) when runc is missing or fails.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How `runc run` is timed: to the end of `/bin/true` (start, exit, clean-up), or, with
/// `-d`, until a detached `sleep` has started (what "Running" means for a pod).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Runc {
    True,
    DetachedSleep,
}

pub fn runc_run(
    rootfs: &std::path::Path,
    runs: usize,
    how: Runc,
    lane: usize,
) -> Option<Vec<Duration>> {
    if Command::new("runc").arg("--version").output().is_err() {
        eprintln!("runc not found (apt-get install runc): skipping the comparison");
        return None;
    }
    let dir = tempfile::Builder::new()
        .prefix("kubelab-bench-runc-")
        .tempdir()
        .expect("tempdir");
    let bundle = dir.path();
    let status = Command::new("cp")
        .arg("-a")
        .arg(rootfs)
        .arg(bundle.join("rootfs"))
        .status()
        .expect("cp");
    assert!(status.success());
    let status = Command::new("runc")
        .args(["spec", "--bundle"])
        .arg(bundle)
        .status()
        .expect("runc spec");
    assert!(status.success());
    let path = bundle.join("config.json");
    let mut spec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).expect("config")).expect("json");
    spec["process"]["terminal"] = false.into();
    spec["process"]["args"] = match how {
        Runc::True => serde_json::json!(["/bin/true"]),
        Runc::DetachedSleep => serde_json::json!(["sleep", "3600"]),
    };
    std::fs::write(&path, serde_json::to_vec(&spec).expect("json")).expect("write config");
    let mut times = Vec::new();
    for i in 0..runs {
        let id = format!("kubelab-bench-{}-{lane}-{i}", std::process::id());
        let mut cmd = Command::new("runc");
        cmd.arg("run");
        if how == Runc::DetachedSleep {
            cmd.arg("--detach");
        }
        // No pipes: a detached container would hold them open.
        cmd.arg("--bundle")
            .arg(bundle)
            .arg(&id)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let start = Instant::now();
        let status = cmd.status().expect("runc run");
        times.push(start.elapsed());
        let _ = Command::new("runc")
            .args(["delete", "--force", &id])
            .output();
        if !status.success() {
            eprintln!("runc run failed ({status}); skipping the comparison");
            return None;
        }
    }
    Some(times)
}

/// `count` detached runc containers started `width` at a time; the time until all started.
pub fn runc_parallel(rootfs: &std::path::Path, count: usize, width: usize) -> Option<Duration> {
    let start = Instant::now();
    let per_lane = count.div_ceil(width);
    let lanes: Vec<_> = (0..width)
        .map(|lane| {
            let rootfs = rootfs.to_path_buf();
            std::thread::spawn(move || {
                runc_run(&rootfs, per_lane, Runc::DetachedSleep, lane).is_some()
            })
        })
        .collect();
    let ok = lanes.into_iter().all(|l| l.join().unwrap_or(false));
    // runc_run also deletes each container right after starting it: that is counted too,
    // which makes the comparison kinder to runc than to us.
    ok.then(|| start.elapsed())
}
