//! The `kubelab` CLI as a kubectl user types it: kubectl's forms of `apply`, `get` and
//! `delete`, and a delete that says what it waits for.

use kubelab_tests::{pod_manifest, Lab};

/// A delete that has to wait (a container that ignores SIGTERM, as `sleep` as PID 1
/// does) says what it waits for and for how long, instead of going quiet.
#[test]
fn a_waiting_delete_says_what_it_waits_for() {
    let lab = Lab::start(1);
    let image = lab.push_busybox("1");
    lab.apply_ok(
        &pod_manifest("stubborn", &image, "Never", "exec sleep 600").replace(
            "terminationGracePeriodSeconds: 2",
            "terminationGracePeriodSeconds: 4",
        ),
    );
    lab.wait_for("stubborn", "Running");
    let out = lab.kubelab(&["delete", "pod", "stubborn"]);
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(
            "waiting up to 4s for the containers of pod \"stubborn\" to stop after SIGTERM"
        ),
        "{err}"
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "pod \"stubborn\" deleted\n"
    );
}

/// kubectl's habits work with kubelab's CLI too: `apply -f DIR`, `get po/NAME`, `delete
/// pod/NAME`, `delete pod A B`, `delete -f FILE`, `delete pods --all`.
#[test]
fn kubectl_forms_work_with_the_kubelab_cli() {
    let lab = Lab::start(1);
    let dir = lab.dir.path().join("manifests");
    std::fs::create_dir_all(&dir).expect("dir");
    for name in ["a", "b", "c", "d"] {
        std::fs::write(
            dir.join(format!("{name}.yaml")),
            pod_manifest(name, "127.0.0.1:1/none:1", "Never", "true"),
        )
        .expect("manifest");
    }
    std::fs::write(dir.join("notes.txt"), "not a manifest").expect("notes");
    let dir_text = dir.to_str().expect("utf-8");
    let out = lab.ok(&["apply", "-f", dir_text]);
    assert_eq!(
        out,
        "pod/a created\npod/b created\npod/c created\npod/d created\n"
    );
    assert!(lab.ok(&["get", "po/a"]).contains("a "));
    assert_eq!(lab.ok(&["delete", "pod/a"]), "pod \"a\" deleted\n");
    assert_eq!(
        lab.ok(&["delete", "pod", "b", "c"]),
        "pod \"b\" deleted\npod \"c\" deleted\n"
    );
    let d = dir.join("d.yaml");
    assert_eq!(
        lab.ok(&["delete", "-f", d.to_str().expect("utf-8")]),
        "pod \"d\" deleted\n"
    );
    lab.ok(&["apply", "-f", dir_text]);
    // A missing pod is named as kubectl names it, not by kubelab's storage key.
    let err = lab.fails(&["logs", "nosuch"]);
    assert!(err.contains(r#"pods "nosuch" not found"#), "{err}");
    let out = lab.ok(&["delete", "pods", "--all"]);
    assert_eq!(out.lines().count(), 4, "{out}");
}
