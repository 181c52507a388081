//! Fuzz target: any bytes given as a layer unpack into the target directory or fail, never
//! panic or write outside it. The unpacker is the node's own (`kubelab_daemon::container::image`).
#![no_main]

use kubelab_daemon::container::image::unpack;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(dir) = tempfile::tempdir() else { return };
    let blob = dir.path().join("layer");
    if std::fs::write(&blob, data).is_err() {
        return;
    }
    let target = dir.path().join("out");
    let media_type = if data.starts_with(&[0x1f, 0x8b]) {
        "application/vnd.oci.image.layer.v1.tar+gzip"
    } else {
        "application/vnd.oci.image.layer.v1.tar"
    };
    // Any diff_id: the unpacking runs to the end before the digest is compared.
    let _ = unpack::unpack_layer(&blob, media_type, "sha256:0", &target, 64 << 20);
    // Nothing may have landed beside the target.
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(names.len() <= 2, "written outside the target: {names:?}");
});
