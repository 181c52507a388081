//! The kubeconfig file format (kubectl's `~/.kube/config`), as far as kubelab writes and
//! reads it: one cluster (its address and CA), one user (a bearer token), one context
//! joining them, current. A node's agent keeps its own extras (the apiserver's peer token
//! and its serving certificate) in a named extension of its user, which kubectl ignores.

use serde::{Deserialize, Serialize};

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Kubeconfig {
    #[serde(rename = "apiVersion", default)]
    pub api_version: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub clusters: Vec<NamedCluster>,
    #[serde(default)]
    pub users: Vec<NamedUser>,
    #[serde(default)]
    pub contexts: Vec<NamedContext>,
    #[serde(rename = "current-context", default)]
    pub current_context: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preferences: Option<serde_json::Value>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct NamedCluster {
    pub name: String,
    pub cluster: Cluster,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Cluster {
    pub server: String,
    #[serde(
        rename = "certificate-authority-data",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub certificate_authority_data: String,
    #[serde(
        rename = "certificate-authority",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub certificate_authority: String,
    #[serde(
        rename = "tls-server-name",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub tls_server_name: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct NamedUser {
    pub name: String,
    pub user: User,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct User {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub token: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extensions: Vec<NamedExtension>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct NamedExtension {
    pub name: String,
    pub extension: serde_json::Value,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct NamedContext {
    pub name: String,
    pub context: Context,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Context {
    pub cluster: String,
    pub user: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
}

impl Kubeconfig {
    /// The context in use: `current-context`, else the only one.
    pub fn current(&self) -> Option<(&Cluster, &User, &Context)> {
        let context = self
            .contexts
            .iter()
            .find(|c| c.name == self.current_context)
            .or_else(|| (self.contexts.len() == 1).then(|| &self.contexts[0]))?;
        let cluster = self
            .clusters
            .iter()
            .find(|c| c.name == context.context.cluster)?;
        let user = self.users.iter().find(|u| u.name == context.context.user)?;
        Some((&cluster.cluster, &user.user, &context.context))
    }
}
