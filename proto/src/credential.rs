//! Credentials: where the API is and how to be let in, kept in kubeconfig files.
//!
//! A credential holds the apiserver's address, the CA that signed its certificate,
//! and a bearer token; its file is a standard kubeconfig that kubectl reads as it is. The apiserver writes one for the admin (the CLI's), one for the
//! scheduler and one for bootstrapping nodes; an agent trades the bootstrap one for its
//! node's own. Clients connect over TLS, checking the server against that CA, and send
//! the token with every call. Owns the file format and the connection; decides nothing
//! about who may do what (the apiserver's `auth.rs` does).

use std::path::Path;

use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

use crate::kubeconfig::{
    Cluster, Context, Kubeconfig, NamedCluster, NamedContext, NamedExtension, NamedUser, User,
};

/// Chooses rustls' cryptography (ring) for this process: the registry client (reqwest,
/// without a provider of its own) and every other TLS user take the process's. Call
/// once at start, before any TLS connection. Calling again does nothing.
pub fn init_tls() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The name the apiserver's certificate is issued to (with its loopback addresses).
pub const SERVER_NAME: &str = "localhost";

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Credential {
    /// `HOST:PORT` of the apiserver.
    pub server: String,
    /// The cluster's CA certificate, PEM.
    pub ca: String,
    pub token: String,
    /// For a node: the token the apiserver presents when it calls this agent.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub peer_token: String,
    /// For a node: its agent's TLS certificate and key (PEM), for its own name.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub serving_cert: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub serving_key: String,
}

#[derive(Debug)]
pub enum CredentialError {
    Read(String, std::io::Error),
    Parse(String, String),
    Write(String, std::io::Error),
    Connect(String),
}

impl std::fmt::Display for CredentialError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CredentialError::Read(path, e) => write!(f, "cannot read credentials {path}: {e}"),
            CredentialError::Parse(path, e) => write!(f, "kubeconfig {path} is not valid: {e}"),
            CredentialError::Write(path, e) => write!(f, "cannot write credentials {path}: {e}"),
            CredentialError::Connect(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for CredentialError {}

/// Writes a secret: mode 0600 from the start, under a temporary name renamed into place
/// (a reader never sees half of it).
pub fn write_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(&tmp)?;
    file.write_all(data)?;
    std::fs::rename(&tmp, path)
}

/// Adds `authorization: Bearer TOKEN` to every call.
#[derive(Clone)]
pub struct Bearer(MetadataValue<Ascii>);

impl tonic::service::Interceptor for Bearer {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        request
            .metadata_mut()
            .insert("authorization", self.0.clone());
        Ok(request)
    }
}

impl Bearer {
    pub fn new(token: &str) -> Bearer {
        let value = format!("Bearer {token}")
            .parse()
            .unwrap_or_else(|_| MetadataValue::from_static("Bearer invalid"));
        Bearer(value)
    }
}

/// A connection that sends its credential's token with every call.
pub type AuthChannel = InterceptedService<Channel, Bearer>;

/// The name of the cluster, user and context kubelab writes (`kubectl config
/// use-context kubelab`).
pub const CONTEXT: &str = "kubelab";
/// The user extension holding a node's own extras.
const NODE_EXTENSION: &str = "kubelab.dev/node";

impl Credential {
    /// Reads a kubeconfig (the current context's cluster and user).
    pub fn load(path: &Path) -> Result<Credential, CredentialError> {
        let shown = path.display().to_string();
        let text = std::fs::read(path).map_err(|e| CredentialError::Read(shown.clone(), e))?;
        Credential::parse(&text).map_err(|e| CredentialError::Parse(shown, e))
    }

    /// A kubeconfig's text as a credential.
    pub fn parse(text: &[u8]) -> Result<Credential, String> {
        use base64::Engine;
        // Labs made before credentials were kubeconfigs wrote this struct as JSON.
        if let Ok(old) = serde_json::from_slice::<Credential>(text) {
            return Ok(old);
        }
        let config: Kubeconfig = yaml_serde::from_slice(text).map_err(|e| e.to_string())?;
        let (cluster, user, _) = config
            .current()
            .ok_or("it has no current context (with a cluster and a user)")?;
        let ca = if cluster.certificate_authority_data.is_empty() {
            std::fs::read_to_string(&cluster.certificate_authority).map_err(|e| {
                format!(
                    "its cluster has no certificate-authority-data and its certificate-authority {:?} cannot be read: {e}",
                    cluster.certificate_authority
                )
            })?
        } else {
            let pem = base64::engine::general_purpose::STANDARD
                .decode(cluster.certificate_authority_data.trim())
                .map_err(|e| format!("certificate-authority-data is not base64: {e}"))?;
            String::from_utf8(pem).map_err(|_| "certificate-authority-data is not a PEM text")?
        };
        let extra = user
            .extensions
            .iter()
            .find(|e| e.name == NODE_EXTENSION)
            .map(|e| e.extension.clone())
            .unwrap_or_default();
        let field = |name: &str| extra[name].as_str().unwrap_or_default().to_string();
        Ok(Credential {
            server: cluster
                .server
                .trim_start_matches("https://")
                .trim_end_matches('/')
                .to_string(),
            ca,
            token: user.token.clone(),
            peer_token: field("peerToken"),
            serving_cert: field("servingCert"),
            serving_key: field("servingKey"),
        })
    }

    /// This credential as a kubeconfig kubectl reads.
    pub fn to_kubeconfig(&self) -> Kubeconfig {
        use base64::Engine;
        let mut extensions = Vec::new();
        if !self.peer_token.is_empty() || !self.serving_cert.is_empty() {
            extensions.push(NamedExtension {
                name: NODE_EXTENSION.into(),
                extension: serde_json::json!({
                    "peerToken": self.peer_token,
                    "servingCert": self.serving_cert,
                    "servingKey": self.serving_key,
                }),
            });
        }
        Kubeconfig {
            api_version: "v1".into(),
            kind: "Config".into(),
            clusters: vec![NamedCluster {
                name: CONTEXT.into(),
                cluster: Cluster {
                    server: format!("https://{}", self.server.trim_start_matches("https://")),
                    certificate_authority_data: base64::engine::general_purpose::STANDARD
                        .encode(&self.ca),
                    ..Default::default()
                },
            }],
            users: vec![NamedUser {
                name: CONTEXT.into(),
                user: User {
                    token: self.token.clone(),
                    extensions,
                },
            }],
            contexts: vec![NamedContext {
                name: CONTEXT.into(),
                context: Context {
                    cluster: CONTEXT.into(),
                    user: CONTEXT.into(),
                    namespace: String::new(),
                },
            }],
            current_context: CONTEXT.into(),
            preferences: Some(serde_json::json!({})),
        }
    }

    /// Written as a kubeconfig, readable by its owner only (mode 0600): a token is a
    /// password.
    pub fn save(&self, path: &Path) -> Result<(), CredentialError> {
        let shown = path.display().to_string();
        let io = |e| CredentialError::Write(shown.clone(), e);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io)?;
        }
        let text = yaml_serde::to_string(&self.to_kubeconfig())
            .map_err(|e| io(std::io::Error::other(e)))?;
        write_private(path, text.as_bytes()).map_err(io)
    }

    /// This credential pointed at another address (`--server`).
    pub fn with_server(mut self, server: Option<&str>) -> Credential {
        if let Some(server) = server.filter(|s| !s.is_empty()) {
            self.server = server.to_string();
        }
        self
    }

    /// A TLS endpoint for the apiserver, checked against the credential's CA.
    pub fn endpoint(&self) -> Result<Endpoint, CredentialError> {
        let server = self.server.trim_start_matches("https://");
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&self.ca))
            .domain_name(SERVER_NAME);
        Endpoint::from_shared(format!("https://{server}"))
            .and_then(|e| e.tls_config(tls))
            .map_err(|e| CredentialError::Connect(format!("invalid server {server:?}: {e}")))
    }

    /// A lazily connected channel carrying this credential's token.
    pub fn channel(&self) -> Result<AuthChannel, CredentialError> {
        let channel = self
            .endpoint()?
            .connect_timeout(std::time::Duration::from_secs(2))
            .tcp_nodelay(true)
            .connect_lazy();
        Ok(InterceptedService::new(channel, Bearer::new(&self.token)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_credential_round_trips_through_a_kubeconfig() {
        let node = Credential {
            server: "127.0.0.1:6443".into(),
            ca: "-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----\n".into(),
            token: "t".into(),
            peer_token: "p".into(),
            serving_cert: "c".into(),
            serving_key: "k".into(),
        };
        let text = yaml_serde::to_string(&node.to_kubeconfig()).unwrap();
        assert!(text.contains("server: https://127.0.0.1:6443"), "{text}");
        assert!(text.contains("current-context: kubelab"), "{text}");
        let back = Credential::parse(text.as_bytes()).unwrap();
        assert_eq!(
            (
                back.server,
                back.ca,
                back.token,
                back.peer_token,
                back.serving_key
            ),
            (
                node.server,
                node.ca,
                node.token,
                node.peer_token,
                node.serving_key
            )
        );
        let e = Credential::parse(b"apiVersion: v1\nkind: Config\n").unwrap_err();
        assert!(e.contains("no current context"), "{e}");
    }
}
