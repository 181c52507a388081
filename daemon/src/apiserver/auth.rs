//! Who is calling: the cluster's keys, its bearer tokens, and the identity behind each.
//!
//! Made once in `<data-dir>/pki/`: a CA and the apiserver's certificate (rcgen), and the
//! tokens — admin (the CLI), scheduler, controller manager, cluster DNS, bootstrap (for
//! nodes joining), and two per node,
//! issued when it joins: the node's own, and the peer token the apiserver shows that
//! node's agent. With the node's token comes its agent's serving certificate, for the
//! node's name and signed by the CA: the apiserver→agent hop is TLS, and no node's
//! credential opens another node's agent (each agent knows only its own peer token). Every call must carry
//! `authorization: Bearer TOKEN`; none gets past `UNAUTHENTICATED` without a valid one.
//! What each identity may do is decided by the services (`may` helpers here). Never
//! stores anything but the pki directory.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::RwLock;

use super::ApiError;
use kubelab_proto::credential::{Credential, SERVER_NAME};
use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("{0}: {1}")]
    Io(PathBuf, std::io::Error),
    #[error("making the cluster's certificates: {0}")]
    Certificate(String),
    #[error("{0}")]
    Credential(#[from] kubelab_proto::credential::CredentialError),
}

/// Who a call comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Identity {
    Admin,
    Scheduler,
    /// The controllers (ReplicaSet, Deployment, Job, garbage collector): they create and
    /// delete pods and write their workloads' status.
    ControllerManager,
    /// May only join a node (and get that node's own credential).
    Bootstrap,
    /// The cluster DNS (`kubelab-dns`, CoreDNS's role): reads Services and
    /// EndpointSlices, and writes its own EndpointSlice in kube-system.
    ClusterDns,
    Node(String),
}

impl std::fmt::Display for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Identity::Admin => write!(f, "the admin"),
            Identity::Scheduler => write!(f, "the scheduler"),
            Identity::ControllerManager => write!(f, "the controller manager"),
            Identity::Bootstrap => write!(f, "the bootstrap credential"),
            Identity::ClusterDns => write!(f, "the cluster DNS"),
            Identity::Node(name) => write!(f, "node {name:?}"),
        }
    }
}

impl Identity {
    /// Refused (Forbidden, gRPC's `PERMISSION_DENIED`), naming who and what.
    pub fn denied(&self, what: &str) -> ApiError {
        ApiError::Forbidden(format!("{self} may not {what}"))
    }

    /// The user name Kubernetes would give this identity (`kubectl auth whoami`).
    pub fn user_name(&self) -> String {
        match self {
            Identity::Admin => "kubernetes-admin".into(),
            Identity::Scheduler => "system:kube-scheduler".into(),
            Identity::ControllerManager => "system:kube-controller-manager".into(),
            Identity::Bootstrap => "system:bootstrap:kubelab".into(),
            Identity::ClusterDns => "system:serviceaccount:kube-system:coredns".into(),
            Identity::Node(name) => format!("system:node:{name}"),
        }
    }

    /// Its groups, as Kubernetes names them.
    pub fn groups(&self) -> Vec<String> {
        let group = match self {
            Identity::Admin => "kubeadm:cluster-admins",
            Identity::Scheduler => "system:kube-scheduler",
            Identity::ControllerManager => "system:kube-controller-manager",
            Identity::Bootstrap => "system:bootstrappers",
            Identity::ClusterDns => "system:serviceaccounts",
            Identity::Node(_) => "system:nodes",
        };
        vec![group.into(), "system:authenticated".into()]
    }

    /// Only these identities may do `what`.
    pub fn require(&self, allowed: &[Identity], what: &str) -> Result<(), ApiError> {
        if allowed.contains(self) {
            Ok(())
        } else {
            Err(self.denied(what))
        }
    }

    /// Admin, scheduler or controller manager: the cluster-wide readers and writers.
    pub fn require_cluster(&self, what: &str) -> Result<(), ApiError> {
        self.require(
            &[
                Identity::Admin,
                Identity::Scheduler,
                Identity::ControllerManager,
            ],
            what,
        )
    }

    /// Admin or controller manager: who writes workloads and the pods they own.
    pub fn require_workloads(&self, what: &str) -> Result<(), ApiError> {
        self.require(&[Identity::Admin, Identity::ControllerManager], what)
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Tokens {
    admin: String,
    scheduler: String,
    /// Made on first use by an apiserver from before the controller manager.
    #[serde(default)]
    controller_manager: String,
    bootstrap: String,
    /// Made on first use by an apiserver from before the cluster DNS.
    #[serde(default)]
    cluster_dns: String,
    nodes: BTreeMap<String, String>,
    /// Per node: what the apiserver presents to that node's agent.
    #[serde(default)]
    peers: BTreeMap<String, String>,
}

/// What a joining node gets: its token, its agent's peer token and serving identity.
pub struct NodeCredential {
    pub token: String,
    pub peer_token: String,
    /// PEM; empty when not asked for (hollow nodes serve nothing).
    pub serving_cert: String,
    pub serving_key: String,
}

/// The certificate and key the apiserver serves with, PEM.
pub struct ServerIdentity {
    pub cert: String,
    pub key: String,
}

pub struct Authenticator {
    dir: PathBuf,
    ca: String,
    tokens: RwLock<Tokens>,
}

fn new_token() -> String {
    // Two v4 UUIDs: 244 random bits from the OS, in hex.
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

/// Compares in time independent of where the strings differ.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

fn write_private(path: &Path, data: &[u8]) -> Result<(), AuthError> {
    kubelab_proto::credential::write_private(path, data)
        .map_err(|e| AuthError::Io(path.to_path_buf(), e))
}

impl Authenticator {
    /// Loads `<data-dir>/pki/`, making the CA, the server certificate and the tokens the
    /// first time.
    pub fn load_or_create(data_dir: &Path) -> Result<(Authenticator, ServerIdentity), AuthError> {
        let dir = data_dir.join("pki");
        std::fs::create_dir_all(&dir).map_err(|e| AuthError::Io(dir.clone(), e))?;
        let paths = ["ca.pem", "server.pem", "server-key.pem", "tokens.json"].map(|f| dir.join(f));
        if !paths.iter().all(|p| p.exists()) {
            Self::create(&dir)?;
        }
        let read =
            |p: &PathBuf| std::fs::read_to_string(p).map_err(|e| AuthError::Io(p.clone(), e));
        let ca = read(&paths[0])?;
        let server = ServerIdentity {
            cert: read(&paths[1])?,
            key: read(&paths[2])?,
        };
        let mut tokens: Tokens = serde_json::from_str(&read(&paths[3])?)
            .map_err(|e| AuthError::Io(paths[3].clone(), std::io::Error::other(e)))?;
        if tokens.controller_manager.is_empty() || tokens.cluster_dns.is_empty() {
            for token in [&mut tokens.controller_manager, &mut tokens.cluster_dns] {
                if token.is_empty() {
                    *token = new_token();
                }
            }
            let text = serde_json::to_vec_pretty(&tokens)
                .map_err(|e| AuthError::Io(paths[3].clone(), std::io::Error::other(e)))?;
            write_private(&paths[3], &text)?;
        }
        Ok((
            Authenticator {
                dir,
                ca,
                tokens: RwLock::new(tokens),
            },
            server,
        ))
    }

    fn create(dir: &Path) -> Result<(), AuthError> {
        use rcgen::{CertificateParams, DnType, KeyPair};
        let err = |e: rcgen::Error| AuthError::Certificate(e.to_string());
        let ca_key = KeyPair::generate().map_err(err)?;
        let ca = ca_params()?.self_signed(&ca_key).map_err(err)?;
        let key = KeyPair::generate().map_err(err)?;
        // The apiserver listens on loopback by default; clients name it `localhost`.
        let names = vec![
            SERVER_NAME.to_string(),
            "127.0.0.1".to_string(),
            "::1".to_string(),
        ];
        let mut params = CertificateParams::new(names).map_err(err)?;
        params
            .distinguished_name
            .push(DnType::CommonName, "kubelab apiserver");
        let cert = params.signed_by(&key, &ca, &ca_key).map_err(err)?;
        let tokens = Tokens {
            admin: new_token(),
            scheduler: new_token(),
            controller_manager: new_token(),
            bootstrap: new_token(),
            cluster_dns: new_token(),
            nodes: BTreeMap::new(),
            peers: BTreeMap::new(),
        };
        write_private(&dir.join("ca.pem"), ca.pem().as_bytes())?;
        write_private(&dir.join("ca-key.pem"), ca_key.serialize_pem().as_bytes())?;
        write_private(&dir.join("server.pem"), cert.pem().as_bytes())?;
        write_private(&dir.join("server-key.pem"), key.serialize_pem().as_bytes())?;
        let text = serde_json::to_vec_pretty(&tokens)
            .map_err(|e| AuthError::Io(dir.into(), std::io::Error::other(e)))?;
        write_private(&dir.join("tokens.json"), &text)?;
        tracing::info!(dir = %dir.display(), "made the cluster's CA, certificate and tokens");
        Ok(())
    }

    /// Writes the admin, scheduler, controller manager, cluster DNS and bootstrap
    /// credentials for an apiserver at `server`:
    /// `<data-dir>/{admin,scheduler,controller-manager,cluster-dns,bootstrap}.conf`,
    /// and the admin one at `admin_config`.
    pub fn write_credentials(
        &self,
        data_dir: &Path,
        server: &str,
        admin_config: Option<&Path>,
    ) -> Result<(), AuthError> {
        let tokens = self
            .tokens
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let credential = |token: &str| Credential {
            server: server.to_string(),
            ca: self.ca.clone(),
            token: token.to_string(),
            peer_token: String::new(),
            serving_cert: String::new(),
            serving_key: String::new(),
        };
        credential(&tokens.admin).save(&data_dir.join("admin.conf"))?;
        credential(&tokens.scheduler).save(&data_dir.join("scheduler.conf"))?;
        credential(&tokens.controller_manager).save(&data_dir.join("controller-manager.conf"))?;
        credential(&tokens.bootstrap).save(&data_dir.join("bootstrap.conf"))?;
        credential(&tokens.cluster_dns).save(&data_dir.join("cluster-dns.conf"))?;
        if let Some(path) = admin_config {
            credential(&tokens.admin).save(path)?;
        }
        Ok(())
    }

    /// The identity behind a call's `authorization: Bearer TOKEN` (gRPC metadata or
    /// HTTP header, the same text).
    pub fn identify(&self, authorization: Option<&str>) -> Result<Identity, ApiError> {
        let token = authorization
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(|| {
                ApiError::Unauthorized(
                    "no credentials: use the kubeconfig the apiserver wrote (~/.kubelab/config, or --kubeconfig FILE)".into(),
                )
            })?;
        let tokens = self.tokens.read().unwrap_or_else(|e| e.into_inner());
        let known = [
            (&tokens.admin, Identity::Admin),
            (&tokens.scheduler, Identity::Scheduler),
            (&tokens.controller_manager, Identity::ControllerManager),
            (&tokens.bootstrap, Identity::Bootstrap),
            (&tokens.cluster_dns, Identity::ClusterDns),
        ];
        if let Some((_, who)) = known.into_iter().find(|(t, _)| same(t, token)) {
            return Ok(who);
        }
        tokens
            .nodes
            .iter()
            .find(|(_, t)| same(t, token))
            .map(|(node, _)| Identity::Node(node.clone()))
            .ok_or_else(|| {
                ApiError::Unauthorized(
                    "invalid token: this credential is not (or no longer) valid for this cluster"
                        .into(),
                )
            })
    }

    /// A node joins: it gets a token of its own and a peer token for its agent (new ones
    /// replace any earlier ones), and, unless `serving` is false, its agent's serving
    /// certificate for the name `node`.
    pub fn issue_node_credential(
        &self,
        node: &str,
        serving: bool,
    ) -> Result<NodeCredential, AuthError> {
        // Made before the lock: signing takes a little while.
        let (serving_cert, serving_key) = if serving {
            self.sign_serving_certificate(node)?
        } else {
            Default::default()
        };
        let mut tokens = self.tokens.write().unwrap_or_else(|e| e.into_inner());
        let token = new_token();
        let peer_token = new_token();
        tokens.nodes.insert(node.to_string(), token.clone());
        tokens.peers.insert(node.to_string(), peer_token.clone());
        let text = serde_json::to_vec_pretty(&*tokens)
            .map_err(|e| AuthError::Io(self.dir.clone(), std::io::Error::other(e)))?;
        write_private(&self.dir.join("tokens.json"), &text)?;
        Ok(NodeCredential {
            token,
            peer_token,
            serving_cert,
            serving_key,
        })
    }

    /// A certificate for `node`'s agent (its name as the DNS name, as the kubelet's serving
    /// certificate has), signed by the cluster CA; PEM certificate and key.
    fn sign_serving_certificate(&self, node: &str) -> Result<(String, String), AuthError> {
        use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, KeyPair};
        let err = |e: rcgen::Error| AuthError::Certificate(e.to_string());
        let ca_key_path = self.dir.join("ca-key.pem");
        let ca_key_pem = std::fs::read_to_string(&ca_key_path)
            .map_err(|e| AuthError::Io(ca_key_path.clone(), e))?;
        let ca_key = KeyPair::from_pem(&ca_key_pem).map_err(err)?;
        // The CA's own parameters signed again with its key: the same subject and key, so
        // what it signs chains to the CA certificate the clients hold.
        let ca = ca_params()?.self_signed(&ca_key).map_err(err)?;
        let key = KeyPair::generate().map_err(err)?;
        let mut params = CertificateParams::new(vec![node.to_string()]).map_err(err)?;
        params
            .distinguished_name
            .push(DnType::CommonName, format!("system:node:{node}"));
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let cert = params.signed_by(&key, &ca, &ca_key).map_err(err)?;
        Ok((cert.pem(), key.serialize_pem()))
    }

    /// What the apiserver presents to `node`'s agent; `None` for a node that never joined.
    pub fn peer_token_of(&self, node: &str) -> Option<String> {
        self.tokens
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .peers
            .get(node)
            .cloned()
    }

    /// The cluster's CA certificate, PEM: what agents' certificates are checked against.
    pub fn ca(&self) -> &str {
        &self.ca
    }
}

/// The CA certificate's parameters (kept the same so that it can sign again after a
/// restart with only its key).
fn ca_params() -> Result<rcgen::CertificateParams, AuthError> {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyUsagePurpose};
    let mut ca_params = CertificateParams::new(Vec::<String>::new())
        .map_err(|e| AuthError::Certificate(e.to_string()))?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "kubelab CA");
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    Ok(ca_params)
}
