//! Images: layers stacked with whiteouts, unknown images, corrupted blobs.

use std::path::Path;
use std::time::Duration;

use kubelab_tests::{pod_manifest, Lab};

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::write(path, text).expect("write");
}

/// A three-layer image whose upper layers delete a file (`.wh.NAME`) and hide a directory's
/// lower contents (`.wh..wh..opq`) shows the container exactly the resulting tree.
#[test]
fn a_layered_image_with_whiteouts_unpacks_to_exactly_the_right_tree() {
    let lab = Lab::start(1);
    let layers = tempfile::Builder::new()
        .prefix("kubelab-test-layers-")
        .tempdir()
        .expect("tempdir");
    let (l2, l3) = (layers.path().join("l2"), layers.path().join("l3"));
    write(&l2.join("data/keep"), "kept\n");
    write(&l2.join("data/gone"), "deleted later\n");
    write(&l2.join("data/sub/old"), "hidden by opaque\n");
    write(&l2.join("opq/old1"), "hidden\n");
    write(&l2.join("opq/deep/old2"), "hidden\n");
    write(&l3.join("data/.wh.gone"), "");
    write(&l3.join("data/sub/.wh..wh..opq"), "");
    write(&l3.join("data/sub/new"), "new\n");
    write(&l3.join("opq/.wh..wh..opq"), "");
    write(&l3.join("opq/fresh"), "fresh\n");
    write(&l3.join("added"), "added\n");
    let image = format!("{}/layered:1", lab.registry);
    lab.ok(&[
        "image",
        "push",
        lab.busybox_rootfs().to_str().expect("path"),
        &image,
        "--layer",
        l2.to_str().expect("path"),
        "--layer",
        l3.to_str().expect("path"),
    ]);
    lab.apply_ok(&pod_manifest(
        "tree",
        &image,
        "Never",
        "find /data /opq /added | sort; cat /data/keep /data/sub/new",
    ));
    lab.wait_for("tree", "Succeeded");
    let logs = lab.ok(&["logs", "tree"]);
    let expected =
        "/added\n/data\n/data/keep\n/data/sub\n/data/sub/new\n/opq\n/opq/fresh\nkept\nnew\n";
    assert_eq!(logs, expected, "the container saw a different tree");
}

/// Two pods of one image share its unpacked layers: the second finds the image present.
#[test]
fn a_cached_image_is_not_pulled_again() {
    let lab = Lab::start(1);
    let image = lab.push_busybox("cached");
    lab.apply_ok(&pod_manifest("first", &image, "Never", "true"));
    lab.wait_for("first", "Succeeded");
    lab.apply_ok(&pod_manifest("second", &image, "Never", "true"));
    lab.wait_for("second", "Succeeded");
    let describe = lab.ok(&["describe", "pod", "second"]);
    assert!(
        describe.contains("already present on machine"),
        "{describe}"
    );
    assert!(!describe.contains(" Pulling "), "{describe}");
}

/// An image the registry does not have: the pod shows ErrImagePull with the registry's
/// answer, then ImagePullBackOff, and nothing panics.
#[test]
fn an_unknown_image_shows_err_image_pull_then_back_off() {
    let lab = Lab::start(1);
    let image = format!("{}/no-such-image:1", lab.registry);
    lab.apply_ok(&pod_manifest("missing", &image, "Never", "true"));
    lab.wait_status("missing", "ErrImagePull", Duration::from_secs(20));
    let json = lab.pod_json("missing");
    let message = json["status"]["containerStatuses"][0]["state"]["waiting"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        message.to_lowercase().contains("unknown") || message.contains("404"),
        "no registry answer in {message:?}"
    );
    lab.wait_status("missing", "ImagePullBackOff", Duration::from_secs(20));
    let describe = lab.ok(&["describe", "pod", "missing"]);
    assert!(describe.contains("Failed to pull image"), "{describe}");
    assert_eq!(json["status"]["phase"], "Pending");
}

/// A layer blob corrupted in the registry is refused (digest mismatch) and the pod shows
/// ErrImagePull; nothing of it is unpacked.
#[test]
fn a_corrupted_blob_is_refused() {
    let lab = Lab::start(1);
    let image = lab.push_busybox("corrupt");
    // The registry keeps blobs at blobs/sha256/XX/HEX/data: flip bytes in the largest (the layer).
    let blobs = lab
        .dir
        .path()
        .join("registry/docker/registry/v2/blobs/sha256");
    let mut largest: Option<(u64, std::path::PathBuf)> = None;
    for prefix in std::fs::read_dir(&blobs).expect("blob dir").flatten() {
        for blob in std::fs::read_dir(prefix.path())
            .expect("blob prefix")
            .flatten()
        {
            let data = blob.path().join("data");
            let size = std::fs::metadata(&data).map(|m| m.len()).unwrap_or(0);
            if largest.as_ref().is_none_or(|(s, _)| size > *s) {
                largest = Some((size, data));
            }
        }
    }
    let (_, data) = largest.expect("a layer blob");
    let mut bytes = std::fs::read(&data).expect("read blob");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    bytes[middle + 1] ^= 0xff;
    std::fs::write(&data, bytes).expect("corrupt blob");
    lab.apply_ok(&pod_manifest("corrupt", &image, "Never", "true"));
    lab.wait_status("corrupt", "ErrImagePull", Duration::from_secs(20));
    let json = lab.pod_json("corrupt");
    let message = json["status"]["containerStatuses"][0]["state"]["waiting"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_lowercase();
    assert!(
        message.contains("digest"),
        "message does not name the digest problem: {message:?}"
    );
    let layers = lab.agent_root(&lab.node_names[0]).join("images/layers");
    assert_eq!(
        std::fs::read_dir(layers).expect("layers dir").count(),
        0,
        "a corrupted layer was unpacked"
    );
}

/// An image pushed with Docker's schema 2 manifest and media types runs like an OCI one.
#[test]
fn a_docker_schema2_image_runs() {
    let lab = Lab::start(1);
    let image = format!("{}/docker-format:1", lab.registry);
    lab.ok(&[
        "image",
        "push",
        lab.busybox_rootfs().to_str().expect("path"),
        &image,
        "--format",
        "docker",
        "--cmd",
        "sh",
    ]);
    lab.apply_ok(&pod_manifest("docker", &image, "Never", "echo schema2"));
    lab.wait_for("docker", "Succeeded");
    assert_eq!(lab.ok(&["logs", "docker"]), "schema2\n");
}

/// A layer built to reach the node's files — a symlink to a host directory, then a
/// whiteout and a file through it, and a hard link to a host file — is refused when
/// pulled, and nothing of the host is touched.
#[test]
fn a_malicious_layer_is_refused_and_the_host_is_untouched() {
    let lab = Lab::start(1);
    let host = lab.dir.path().join("host-files");
    std::fs::create_dir_all(&host).expect("host dir");
    std::fs::write(host.join("victim"), "precious").expect("victim");
    let host_dir = host.to_str().expect("path").to_string();
    let victim = host.join("victim").to_str().expect("path").to_string();
    let mut tar = tar::Builder::new(Vec::new());
    let mut entry = |path: &str, kind: tar::EntryType, link: &str| {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(kind);
        header.set_size(0);
        header.set_mode(0o644);
        header.set_uid(0);
        header.set_gid(0);
        let name = &mut header.as_old_mut().name;
        name[..path.len()].copy_from_slice(path.as_bytes());
        if !link.is_empty() {
            let linkname = &mut header.as_old_mut().linkname;
            linkname[..link.len()].copy_from_slice(link.as_bytes());
        }
        header.set_cksum();
        tar.append(&header, std::io::empty()).expect("entry");
    };
    entry("bin", tar::EntryType::Directory, "");
    entry("evil", tar::EntryType::Symlink, &host_dir);
    entry("evil/.wh.victim", tar::EntryType::Regular, "");
    entry("evil/planted", tar::EntryType::Regular, "");
    entry("stolen", tar::EntryType::Link, &victim);
    let layer = tar.into_inner().expect("tar");
    let image = lab.push_raw_layers("evil", vec![layer]);
    lab.apply_ok(&pod_manifest("evil", &image, "Never", "true"));
    lab.wait_status("evil", "ErrImagePull", Duration::from_secs(20));
    let describe = lab.ok(&["describe", "pod", "evil"]);
    assert!(describe.contains("outside the layer"), "{describe}");
    assert_eq!(
        std::fs::read_to_string(host.join("victim")).expect("victim"),
        "precious"
    );
    assert_eq!(
        std::fs::read_dir(&host).expect("host dir").count(),
        1,
        "nothing planted"
    );
}
