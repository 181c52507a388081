//! Who may do what: every call to the API is authenticated over TLS, and a node's
//! credential reaches only its own node and pods.

use kubelab_proto::credential::{init_tls, Credential};
use kubelab_proto::v1::agent_client::AgentClient;
use kubelab_proto::v1::namespaces_client::NamespacesClient;
use kubelab_proto::v1::nodes_client::NodesClient;
use kubelab_proto::v1::pods_client::PodsClient;
use kubelab_proto::v1::{
    HeartbeatRequest, ListPodsRequest, LogsRequest, Namespace, ObjectKey, ObjectMeta, PodStatus,
    UpdateNamespaceRequest, UpdatePodStatusRequest,
};
use kubelab_tests::{pod_manifest, Lab};

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Runtime::new().expect("runtime").block_on(f)
}

fn credential_of(lab: &Lab, node: &str) -> Credential {
    Credential::load(&lab.agent_root(node).join("node.conf")).expect("node credential")
}

/// Without a token, or with a wrong one, no call gets past UNAUTHENTICATED; the admin
/// credential file is readable by its owner only.
#[test]
fn calls_without_a_valid_token_are_refused() {
    init_tls();
    let lab = Lab::start(0);
    let admin = Credential::load(&lab.admin_config()).expect("admin credential");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(lab.admin_config())
            .expect("config")
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
    block_on(async {
        let channel = admin
            .endpoint()
            .expect("endpoint")
            .connect()
            .await
            .expect("TLS");
        let err = PodsClient::new(channel)
            .list(ListPodsRequest::default())
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err}");
        let forged = Credential {
            token: "0".repeat(64),
            ..admin.clone()
        };
        let err = PodsClient::new(forged.channel().expect("channel"))
            .list(ListPodsRequest::default())
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err}");
    });
}

/// Node A's credential may not read, list or write node B's pods, nor create or relabel
/// namespaces (it may read them); the CLI's (admin) credential may not act as a node;
/// nobody but the apiserver may call an agent: the hop is TLS with a certificate for the
/// node's name, and node A's credentials do not open node B's agent.
#[test]
fn a_node_reaches_only_its_own_pods_and_the_cli_cannot_act_as_a_node() {
    init_tls();
    let lab = Lab::start(2);
    let image = lab.push_busybox("1");
    let (a, b) = (&lab.node_names[0], &lab.node_names[1]);
    let manifest = pod_manifest("on-b", &image, "Always", "exec sleep 3600")
        .replace("spec:\n", &format!("spec:\n  nodeName: {b}\n"));
    lab.apply_ok(&manifest);
    lab.wait_for("on-b", "Running");
    let uid = lab.pod_json("on-b")["metadata"]["uid"]
        .as_str()
        .expect("uid")
        .to_string();
    let node_a = credential_of(&lab, a);
    let admin = Credential::load(&lab.admin_config()).expect("admin credential");
    block_on(async {
        let mut pods = PodsClient::new(node_a.channel().expect("channel"));
        let write = UpdatePodStatusRequest {
            namespace: "default".into(),
            name: "on-b".into(),
            uid: uid.clone(),
            status: Some(PodStatus {
                phase: "Failed".into(),
                ..Default::default()
            }),
            resource_version: 0,
        };
        let err = pods.update_status(write.clone()).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err}");
        let key = ObjectKey {
            namespace: "default".into(),
            name: "on-b".into(),
        };
        let err = pods.get(key).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err}");
        let all = ListPodsRequest {
            namespace: String::new(),
            node_name: b.clone(),
            label_selector: String::new(),
        };
        let err = pods.list(all).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err}");
        let err = NodesClient::new(node_a.channel().expect("channel"))
            .heartbeat(HeartbeatRequest { name: b.clone() })
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err}");
        let mut namespaces = NamespacesClient::new(node_a.channel().expect("channel"));
        let default = ObjectKey {
            namespace: String::new(),
            name: "default".into(),
        };
        namespaces
            .get(default)
            .await
            .expect("a node reads namespaces");
        let relabel = UpdateNamespaceRequest {
            name: "default".into(),
            labels: [(
                "pod-security.kubernetes.io/enforce".to_string(),
                "privileged".to_string(),
            )]
            .into(),
            resource_version: 0,
        };
        let err = namespaces.update(relabel).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err}");
        let create = Namespace {
            metadata: Some(ObjectMeta {
                name: "mine".into(),
                ..Default::default()
            }),
            status: None,
        };
        let err = namespaces.create(create).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err}");

        // The admin (the CLI's credential) is not a node either.
        let err = NodesClient::new(admin.channel().expect("channel"))
            .heartbeat(HeartbeatRequest { name: a.clone() })
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err}");
        let err = PodsClient::new(admin.channel().expect("channel"))
            .update_status(write)
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err}");
    });
    // And the pod is untouched.
    assert_eq!(lab.pod_json("on-b")["status"]["phase"], "Running");

    // An agent answers the apiserver only: a direct call with no token is refused.
    // The AGENT column of `get nodes -o wide`.
    let wide = lab.ok(&["get", "nodes", "-o", "wide"]);
    let endpoint = wide
        .lines()
        .find(|l| l.starts_with(b.as_str()))
        .and_then(|l| l.split_whitespace().find(|w| w.starts_with("127.0.0.1:")))
        .expect("agent endpoint")
        .to_string();
    let node_b = credential_of(&lab, b);
    let logs = LogsRequest {
        namespace: "default".into(),
        name: "on-b".into(),
        container: "main".into(),
        ..Default::default()
    };
    block_on(async {
        // The hop is TLS: plain HTTP gets nowhere.
        let plain = tonic::transport::Endpoint::from_shared(format!("http://{endpoint}"))
            .expect("endpoint")
            .connect()
            .await;
        if let Ok(channel) = plain {
            assert!(AgentClient::new(channel).logs(logs.clone()).await.is_err());
        }
        // B's agent proves it is B: its certificate, from the cluster CA, is for B's name
        // only, so a client expecting node A's agent there refuses it.
        let tls_as = |name: &str| {
            tonic::transport::Endpoint::from_shared(format!("https://{endpoint}"))
                .expect("endpoint")
                .tls_config(
                    tonic::transport::ClientTlsConfig::new()
                        .ca_certificate(tonic::transport::Certificate::from_pem(&node_b.ca))
                        .domain_name(name),
                )
                .expect("tls")
        };
        assert!(
            tls_as(a).connect().await.is_err(),
            "B's agent passed as {a}"
        );
        let channel = tls_as(b).connect().await.expect("TLS to B's agent");
        let call = |token: &str| {
            let mut agent = AgentClient::with_interceptor(
                channel.clone(),
                kubelab_proto::credential::Bearer::new(token),
            );
            let logs = logs.clone();
            async move { agent.logs(logs).await.map(|_| ()) }
        };
        // No token, node A's peer token, node A's own token: all refused. Each agent
        // knows only the token the apiserver shows it.
        for (what, token) in [
            ("no token", ""),
            ("node A's peer token", node_a.peer_token.as_str()),
            ("node A's token", node_a.token.as_str()),
            ("the admin token", admin.token.as_str()),
        ] {
            let err = call(token).await.expect_err(what);
            assert_eq!(err.code(), tonic::Code::Unauthenticated, "{what}: {err}");
        }
        assert_ne!(node_a.peer_token, node_b.peer_token);
        call(&node_b.peer_token)
            .await
            .expect("B's own peer token (the apiserver's) opens B's agent");
    });
    // Through the apiserver, the admin reads them.
    lab.ok(&["logs", "on-b"]);
    lab.ok(&["delete", "pod", "on-b", "--grace-period", "0"]);
}
