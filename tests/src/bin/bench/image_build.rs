//! Row 7: `kubelab image build examples/site` cold, cached and with one file changed,
//! beside `buildah bud --layers`.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kubelab_tests::Lab;

use crate::measure::percentile;
use crate::Row;

/// Row 7: `kubelab image build` of examples/site: cold (nothing cached, the base image
/// pulled), cached (nothing changed), and with one copied file changed.
pub async fn run(rows: &mut Vec<Row>) {
    let lab = Lab::start(0);
    lab.push_busybox("demo");
    let context = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/site");
    // A copy, so that "one file changed" does not touch the repository.
    let copy = lab.dir.path().join("site");
    let status = Command::new("cp")
        .arg("-a")
        .arg(&context)
        .arg(&copy)
        .status()
        .expect("cp");
    assert!(status.success());
    let image = format!("{}/site:bench", lab.registry);
    let build = |root: &std::path::Path| {
        let start = Instant::now();
        let out = Command::new(kubelab_tests::bin("kubelab"))
            .args(["image", "build"])
            .arg(&copy)
            .args([
                "-t",
                &image,
                "--build-arg",
                &format!("REGISTRY={}", lab.registry),
                "--root",
            ])
            .arg(root)
            .output()
            .expect("kubelab image build");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        start.elapsed()
    };
    let runs = 5;
    let mut cold: Vec<Duration> = (0..runs)
        .map(|i| build(&lab.dir.path().join(format!("cold-{i}"))))
        .collect();
    let root = lab.dir.path().join("warm");
    build(&root);
    let mut cached: Vec<Duration> = (0..runs).map(|_| build(&root)).collect();
    let mut changed: Vec<Duration> = (0..runs)
        .map(|i| {
            std::fs::write(
                copy.join("www/index.html"),
                format!("<h1>version {i}</h1>\n"),
            )
            .expect("edit");
            build(&root)
        })
        .collect();
    // The same three with buildah (Debian's; `buildah bud --layers`, its own storage).
    let buildah = |root: &std::path::Path| {
        let start = Instant::now();
        let ok = Command::new("buildah")
            .arg("--root")
            .arg(root.join("root"))
            .arg("--runroot")
            .arg(root.join("run"))
            .args([
                "--storage-driver",
                "overlay",
                "bud",
                "--layers",
                "--quiet",
                "--tls-verify=false",
            ])
            .args([
                "--build-arg",
                &format!("REGISTRY={}", lab.registry),
                "-t",
                "site:bench",
            ])
            .arg(&copy)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| start.elapsed())
    };
    let theirs: Option<[Vec<Duration>; 3]> = (|| {
        let cold = (0..runs)
            .map(|i| buildah(&lab.dir.path().join(format!("buildah-cold-{i}"))))
            .collect::<Option<Vec<_>>>()?;
        let root = lab.dir.path().join("buildah-warm");
        buildah(&root)?;
        let cached = (0..runs)
            .map(|_| buildah(&root))
            .collect::<Option<Vec<_>>>()?;
        let changed = (0..runs)
            .map(|i| {
                std::fs::write(
                    copy.join("www/index.html"),
                    format!("<h1>buildah {i}</h1>\n"),
                )
                .ok()?;
                buildah(&root)
            })
            .collect::<Option<Vec<_>>>()?;
        Some([cold, cached, changed])
    })();
    for v in [&mut cold, &mut cached, &mut changed] {
        v.sort();
    }
    let ms = |v: &[Duration]| percentile(v, 50.0).as_secs_f64() * 1000.0;
    rows.push(Row {
        what: format!("7. `kubelab image build examples/site` (12 steps, 4 layers on busybox), median of {runs}: cold (base pulled) / cached / one copied file changed"),
        ours: format!("{:.0} ms / {:.0} ms / {:.0} ms", ms(&cold), ms(&cached), ms(&changed)),
        comparison: match theirs {
            Some(mut t) => {
                for v in &mut t {
                    v.sort();
                }
                format!("`buildah bud --layers`, same steps: {:.0} ms / {:.0} ms / {:.0} ms", ms(&t[0]), ms(&t[1]), ms(&t[2]))
            }
            None => "buildah missing or failed (apt-get install buildah)".into(),
        },
        target: "-".into(),
    });
}
