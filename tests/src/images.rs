//! Images for tests: a busybox root filesystem pushed as an image, `kubelab image build`
//! with the lab's build root, and hand-made (even hostile) layers pushed as they are.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::{bin, Lab};

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
impl Lab {
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
        kubelab_proto::credential::init_tls();
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
}
