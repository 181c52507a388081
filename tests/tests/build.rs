//! Step 1 of the workflow: `kubelab image build`, with a real registry, real RUN
//! containers and real pods running what it built.

use std::path::Path;
use std::process::Command;

use kubelab_tests::{mounts_under, Lab};

/// A build directory using every instruction kubelab builds.
const EVERY_INSTRUCTION: &str = r#"# every instruction kubelab builds
ARG BASE
FROM ${BASE}
ARG GREETING=hello
ENV GREETING=${GREETING} APP_HOME=/app
LABEL org.example.app="built in a test"
WORKDIR $APP_HOME
COPY site/ ./site/
ADD bundle.tar.gz /app/extra/
RUN echo "$GREETING from RUN as $(id -u)" > /app/run.txt \
 && echo "web:x:1000:1000::/app:/bin/sh" >> /etc/passwd \
 && rm /app/site/drop.txt \
 && echo "RUN says $GREETING" \
 && echo "resolv.conf: $(test -e /etc/resolv.conf && echo yes || echo no)"
USER web
EXPOSE 8080/tcp
ENTRYPOINT ["/bin/sh", "-c"]
CMD ["cat /app/site/index.html /app/extra/a.txt /app/run.txt; echo \"$GREETING $(id -u):$(id -g) $(pwd)\"; ls /app/site"]
"#;

fn write_context(dir: &Path) {
    std::fs::create_dir_all(dir.join("site")).unwrap();
    std::fs::write(dir.join("Containerfile"), EVERY_INSTRUCTION).unwrap();
    std::fs::write(dir.join("site/index.html"), "<h1>built</h1>\n").unwrap();
    std::fs::write(dir.join("site/drop.txt"), "deleted by a RUN\n").unwrap();
    let src = dir.join("archive");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("a.txt"), "from the archive\n").unwrap();
    let status = Command::new("tar")
        .arg("czf")
        .arg(dir.join("bundle.tar.gz"))
        .arg("-C")
        .arg(&src)
        .arg("a.txt")
        .status()
        .unwrap();
    assert!(status.success());
    std::fs::remove_dir_all(&src).unwrap();
}

fn skopeo_inspect(args: &[&str], image: &str) -> serde_json::Value {
    let out = Command::new("skopeo")
        .args(["inspect", "--tls-verify=false"])
        .args(args)
        .arg(format!("docker://{image}"))
        .output()
        .expect("skopeo (make test installs it)");
    assert!(
        out.status.success(),
        "skopeo inspect: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// An image built from a Containerfile with every supported instruction (ARG, FROM an
/// image in the registry, ENV, LABEL, WORKDIR, COPY, ADD of an archive, RUN, USER,
/// EXPOSE, ENTRYPOINT, CMD) is pushed, is a standard OCI image (`skopeo inspect` and
/// `umoci unpack` read it, a RUN's deletion is a whiteout), and runs as a pod that sees
/// each instruction's effect; `kubelab trace` then shows all seven steps, the build
/// included.
#[test]
fn an_image_built_with_every_instruction_runs_as_a_pod_and_trace_shows_seven_steps() {
    let lab = Lab::start(1);
    let base = lab.push_busybox("1");
    let context = lab.dir.path().join("app");
    write_context(&context);
    let image = format!("{}/app:1", lab.registry);
    let built = lab.build_ok(
        &context,
        &image,
        &[
            "--push",
            "--build-arg",
            &format!("BASE={base}"),
            "--build-arg",
            "GREETING=hi",
        ],
    );
    for expected in [
        "STEP 1/13: ARG BASE",
        "STEP 2/13: FROM ${BASE}",
        "--> pulled ",
        "STEP 9/13: RUN echo",
        "RUN says hi\n",
        "--> user web is 1000:1000",
        &format!("Successfully tagged {image}"),
        &format!("pushed {image}@sha256:"),
    ] {
        assert!(built.contains(expected), "no {expected:?} in:\n{built}");
    }

    // What a registry client sees.
    let inspected = skopeo_inspect(&[], &image);
    assert_eq!(
        inspected["Labels"]["org.example.app"], "built in a test",
        "{inspected}"
    );
    assert!(
        inspected["Labels"]["io.kubelab.image.built"].is_string(),
        "{inspected}"
    );
    // busybox + WORKDIR + COPY + ADD + RUN.
    assert_eq!(
        inspected["Layers"].as_array().map(Vec::len),
        Some(5),
        "{inspected}"
    );
    let config = skopeo_inspect(&["--config"], &image);
    let c = &config["config"];
    assert_eq!(c["User"], "1000:1000", "{config}");
    assert_eq!(c["WorkingDir"], "/app", "{config}");
    assert!(c["ExposedPorts"]["8080/tcp"].is_object(), "{config}");
    assert_eq!(
        c["Entrypoint"],
        serde_json::json!(["/bin/sh", "-c"]),
        "{config}"
    );
    assert!(
        c["Env"]
            .as_array()
            .unwrap()
            .contains(&serde_json::json!("GREETING=hi")),
        "{config}"
    );
    assert!(
        c["Env"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| !e.as_str().unwrap().starts_with("BASE=")),
        "ARGs do not persist: {config}"
    );

    // umoci unpacks it, the RUN's deletion applied.
    let oci = lab.dir.path().join("oci-copy");
    let status = Command::new("skopeo")
        .args([
            "copy",
            "--quiet",
            "--src-tls-verify=false",
            &format!("docker://{image}"),
        ])
        .arg(format!("oci:{}:app", oci.display()))
        .status()
        .unwrap();
    assert!(status.success(), "skopeo copy");
    let bundle = lab.dir.path().join("umoci-bundle");
    let out = Command::new("umoci")
        .args(["unpack", "--image"])
        .arg(format!("{}:app", oci.display()))
        .arg(&bundle)
        .output()
        .expect("umoci (make test installs it)");
    assert!(
        out.status.success(),
        "umoci unpack: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rootfs = bundle.join("rootfs");
    assert_eq!(
        std::fs::read_to_string(rootfs.join("app/run.txt")).unwrap(),
        "hi from RUN as 0\n"
    );
    assert!(rootfs.join("app/site/index.html").is_file());
    assert!(
        !rootfs.join("app/site/drop.txt").exists(),
        "the whiteout was not applied"
    );

    // A pod runs it as built.
    lab.apply_ok(&format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: built\nspec:\n  restartPolicy: Never\n  containers:\n  - name: app\n    image: {image}\n"
    ));
    lab.wait_for("built", "Succeeded");
    let logs = lab.ok(&["logs", "built"]);
    assert_eq!(
        logs,
        "<h1>built</h1>\nfrom the archive\nhi from RUN as 0\nhi 1000:1000 /app\nindex.html\n"
    );

    // And trace has every step, the build's from the image's labels.
    let trace = lab.ok(&["trace", "pod", "built"]);
    let line = |step: &str| kubelab_tests::trace_step(&trace, step);
    let built = line("1 image built");
    assert!(
        built.contains("by kubelab image build: 5 layers"),
        "{trace}"
    );
    let at = built.split_whitespace().nth(3).unwrap_or_default();
    assert!(at.starts_with('-'), "the build is before the pod: {trace}");
    assert!(
        line("2 image pushed").contains(&format!("{image} is in its registry")),
        "{trace}"
    );
    assert!(line("3 pod created").contains("+0 ms"), "{trace}");
    assert!(
        line("4 scheduled").contains("Successfully assigned default/built"),
        "{trace}"
    );
    assert!(
        line("5 accepted by the agent").contains("took the pod"),
        "{trace}"
    );
    assert!(
        line("6 image pulled").contains("Successfully pulled image"),
        "{trace}"
    );
    assert!(
        line("7 container started").contains("Started container app (pid "),
        "{trace}"
    );
}

/// Building again with nothing changed takes every layer from the cache, adds none, and
/// gives the same image (same digest); changing a copied file makes that step and the
/// ones after it again, not the ones before.
#[test]
fn a_cached_rebuild_adds_no_layer() {
    let lab = Lab::start(0);
    let base = lab.push_busybox("1");
    let context = lab.dir.path().join("app");
    write_context(&context);
    let image = format!("{}/cached:1", lab.registry);
    let args = ["--build-arg", &format!("BASE={base}")];
    let layers = |lab: &Lab| {
        let out = Command::new("skopeo")
            .arg("inspect")
            .arg(format!(
                "oci:{}:{image}",
                lab.build_root().join("oci").display()
            ))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v["Layers"].as_array().cloned().unwrap_or_default()
    };
    let first = lab.build_ok(&context, &image, &args);
    assert!(
        first.contains("(4 made now, 0 from the cache, 1 from the base image)"),
        "{first}"
    );
    let layers_first = layers(&lab);
    let again = lab.build_ok(&context, &image, &args);
    assert_eq!(again.matches("--> Using cache ").count(), 4, "{again}");
    assert!(
        again.contains("(0 made now, 4 from the cache, 1 from the base image)"),
        "{again}"
    );
    assert!(first.contains("RUN says hello\n"), "{first}");
    assert!(
        !again.contains("RUN says hello"),
        "the RUN ran again:\n{again}"
    );
    assert_eq!(layers(&lab), layers_first);
    // Nothing changed, so it is the same image: same digest (and the first build's time).
    let digest = |out: &str| {
        out.lines()
            .find(|l| l.starts_with("--> built in "))
            .and_then(|l| l.split(": ").nth(1))
            .map(String::from)
    };
    assert!(again.contains("--> every step as before"), "{again}");
    assert_eq!(digest(&again), digest(&first));

    std::fs::write(context.join("site/index.html"), "<h1>changed</h1>\n").unwrap();
    let changed = lab.build_ok(&context, &image, &args);
    // WORKDIR stays cached; COPY changed, so ADD and RUN after it are made again.
    assert!(
        changed.contains("(3 made now, 1 from the cache, 1 from the base image)"),
        "{changed}"
    );
    let layers_changed = layers(&lab);
    assert_eq!(layers_changed[..2], layers_first[..2]);
    assert_ne!(layers_changed[2], layers_first[2]);
    assert_ne!(digest(&changed), digest(&first));
}

/// A Containerfile kubelab cannot build fails with one line naming the file, the line and
/// the problem; a failing RUN names its line and exit code; nothing is left mounted.
#[test]
fn an_unsupported_instruction_fails_with_its_line() {
    let lab = Lab::start(0);
    let context = lab.dir.path().join("bad");
    std::fs::create_dir_all(&context).unwrap();
    std::fs::write(context.join("a.txt"), "a").unwrap();
    let file = context.join("Containerfile");
    let one_line_error = |out: &std::process::Output| {
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        stderr
    };

    std::fs::write(
        &file,
        "FROM scratch\nCOPY a.txt /a.txt\n\nHEALTHCHECK CMD true\n",
    )
    .unwrap();
    let stderr = one_line_error(&lab.build(&context, "bad:1", &[]));
    assert!(
        stderr.starts_with(&format!(
            "error: build: {}: line 4: HEALTHCHECK is not supported by kubelab image build (supported: FROM, RUN, COPY, ADD",
            file.display()
        )),
        "{stderr}"
    );

    std::fs::write(&file, "FROM scratch\nCOPY missing.txt /\n").unwrap();
    let stderr = one_line_error(&lab.build(&context, "bad:1", &[]));
    assert!(stderr.contains("line 2: COPY missing.txt /: missing.txt: no such file or directory in the build directory"), "{stderr}");

    std::fs::write(&file, format!("FROM {}/nope:1\n", lab.registry)).unwrap();
    let stderr = one_line_error(&lab.build(&context, "bad:1", &[]));
    assert!(
        stderr.contains("line 1: FROM")
            && stderr.contains(
                "(the registry has no such image or tag: push it first, or check the name)"
            ),
        "{stderr}"
    );
    let stderr = one_line_error(&lab.build(&context, "bad:1", &["--push"]));
    assert!(stderr.contains("\"bad:1\" names no registry"), "{stderr}");

    let base = lab.push_busybox("1");
    std::fs::write(
        &file,
        format!("FROM {base}\nCOPY a.txt /a.txt\nRUN echo about to fail; exit 3\n"),
    )
    .unwrap();
    let out = lab.build(&context, "bad:1", &[]);
    let stderr = one_line_error(&out);
    assert!(
        stderr.contains("line 3: RUN echo about to fail; exit 3: the command exited with code 3"),
        "{stderr}"
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("about to fail"),
        "the RUN's output is shown"
    );
    assert!(
        mounts_under(&lab.build_root()).is_empty(),
        "{:?}",
        mounts_under(&lab.build_root())
    );
    let steps: Vec<_> = std::fs::read_dir(lab.build_root().join("steps"))
        .unwrap()
        .collect();
    assert!(steps.is_empty(), "scratch left: {steps:?}");

    let stderr = one_line_error(&lab.build(&lab.dir.path().join("nowhere"), "bad:1", &[]));
    assert!(
        stderr.contains("build directory") && stderr.contains("nowhere"),
        "{stderr}"
    );
}

/// Ctrl-C during a long RUN (SIGINT to the terminal's process group) stops the build at
/// once: the container is killed, and no mount, process or cgroup of the build is left.
#[test]
fn ctrl_c_stops_a_running_build_and_leaves_nothing() {
    use std::os::unix::process::CommandExt;
    let lab = Lab::start(0);
    let base = lab.push_busybox("1");
    let context = lab.dir.path().join("slow");
    std::fs::create_dir_all(&context).unwrap();
    let marker = format!("kubelab-ctrl-c-{}", std::process::id());
    std::fs::write(
        context.join("Containerfile"),
        format!("FROM {base}\nRUN echo started; sleep 300; echo {marker}\nRUN echo never\n"),
    )
    .unwrap();
    let child = Command::new(kubelab_tests::bin("kubelab"))
        .args(["image", "build"])
        .arg(&context)
        .args(["-t", "slow:1", "--root"])
        .arg(lab.build_root())
        // Its own process group, as a terminal's foreground job has.
        .process_group(0)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let running = || kubelab_tests::processes_mentioning(&marker);
    kubelab_tests::wait_until(
        "the RUN's sleep",
        std::time::Duration::from_secs(30),
        || !running().is_empty(),
    );
    let started = std::time::Instant::now();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(-(child.id() as i32)),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    assert!(!out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stdout.contains("--> interrupted: the container was killed"),
        "{stdout}"
    );
    assert!(!stdout.contains("never"), "{stdout}");
    assert_eq!(stderr.trim(), "error: build: interrupted (Ctrl-C)");
    assert!(running().is_empty(), "left running: {:?}", running());
    assert!(mounts_under(&lab.build_root()).is_empty());
    let steps: Vec<_> = std::fs::read_dir(lab.build_root().join("steps"))
        .unwrap()
        .collect();
    assert!(steps.is_empty(), "scratch left: {steps:?}");
}
