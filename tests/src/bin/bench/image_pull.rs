//! Row 6: a cold image pull and unpack by an agent, beside `skopeo copy` and `umoci
//! unpack` of the same image.

use std::process::{Command, Stdio};
use std::time::Instant;

use kubelab_tests::Lab;

use crate::pods::{start_one, Via};
use crate::Row;

/// Row 6: a cold pull and unpack by an agent, beside skopeo and umoci on the same image.
pub async fn run(rows: &mut Vec<Row>) {
    let lab = Lab::start_with_agent_log(1, "info");
    // A larger image than busybox, so that bytes matter: busybox plus a layer of the
    // host's /usr/share/perl (present on Debian; tens of MB of small files).
    let extra = ["/usr/share/perl", "/usr/share/perl5", "/usr/lib/python3"]
        .into_iter()
        .map(std::path::Path::new)
        .find(|p| p.is_dir());
    let layer_dir = lab.dir.path().join("extra-layer");
    if let Some(src) = extra {
        let dest = layer_dir.join("usr/share/extra");
        std::fs::create_dir_all(&dest).expect("mkdir");
        let status = Command::new("cp")
            .arg("-a")
            .arg(src)
            .arg(&dest)
            .status()
            .expect("cp");
        assert!(status.success());
    }
    let image = format!("{}/pullbench:1", lab.registry);
    let mut push = Command::new(kubelab_tests::bin("kubelab"));
    push.args(["image", "push"])
        .arg(lab.busybox_rootfs())
        .arg(&image);
    if extra.is_some() {
        push.arg("--layer").arg(&layer_dir);
    }
    let out = push
        .env("KUBELAB_CONFIG", lab.admin_config())
        .output()
        .expect("push");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut pods = lab.pods_client();
    start_one(Via::Api, &mut pods, "cold", &image).await;
    let mut events = lab.events_client();
    let pulled = events
        .list(kubelab_proto::v1::ListEventsRequest::default())
        .await
        .expect("events")
        .into_inner()
        .items
        .into_iter()
        .find(|e| e.reason == "Pulled" && e.message.starts_with("Successfully pulled"))
        .map(|e| e.message)
        .unwrap_or_default();
    let seconds: f64 = pulled
        .split(" in ")
        .nth(1)
        .and_then(|r| r.split('s').next())
        .and_then(|s| s.parse().ok())
        .unwrap_or(f64::NAN);
    let size: String = pulled
        .split("Image size: ")
        .nth(1)
        .map(|s| s.trim_end_matches(" bytes.").to_string())
        .unwrap_or_default();
    let mb = size.parse::<f64>().unwrap_or(0.0) / 1e6;
    let work = lab.dir.path().join("skopeo");
    std::fs::create_dir_all(&work).expect("skopeo dir");
    let start = Instant::now();
    let copied = Command::new("skopeo")
        .args(["copy", "--quiet", "--src-tls-verify=false"])
        .arg(format!("docker://{image}"))
        .arg(format!("oci:{}:1", work.join("layout").display()))
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    let copy = start.elapsed();
    let start = Instant::now();
    let unpacked = copied
        && Command::new("umoci")
            .args(["unpack", "--rootless", "--image"])
            .arg(format!("{}:1", work.join("layout").display()))
            .arg(work.join("bundle"))
            .stdout(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
    let unpack = start.elapsed();
    rows.push(Row {
        what: format!("6. image pull + unpack, cold, by an agent (image of {mb:.1} MB, time from the `Pulled` event)"),
        ours: format!("{seconds:.2} s"),
        comparison: if unpacked {
            format!(
                "`skopeo copy` {:.2} s + `umoci unpack` {:.2} s = {:.2} s",
                copy.as_secs_f64(),
                unpack.as_secs_f64(),
                (copy + unpack).as_secs_f64()
            )
        } else {
            "skopeo or umoci missing (apt-get install skopeo umoci)".into()
        },
        target: "-".into(),
    });
}
