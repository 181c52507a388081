//! The controllers' client of the Kubernetes REST API — the API kubectl speaks — typed by
//! k8s-openapi's resources: `Api::<ReplicaSet>::namespaced(...)`, then get, list, watch,
//! create, replace, replace_status, delete. Built on reqwest (already in the build for
//! image pulls) with the cluster's CA and the controller manager's token.
//!
//! Owns the HTTP calls and their errors; decides nothing.

use std::marker::PhantomData;

use futures::{Stream, StreamExt};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kubelab_proto::credential::Credential;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach the apiserver: {0}")]
    Transport(String),
    /// The apiserver's `Status`: its code, reason and message.
    #[error("{message} ({code} {reason})")]
    Api {
        code: u16,
        reason: String,
        message: String,
    },
    #[error("unreadable answer: {0}")]
    Decode(String),
}

impl ClientError {
    pub fn is_not_found(&self) -> bool {
        matches!(self, ClientError::Api { code: 404, .. })
    }
    pub fn is_conflict(&self) -> bool {
        matches!(self, ClientError::Api { code: 409, .. })
    }
    /// The apiserver's reason (`AlreadyExists`, `Invalid`, ...).
    pub fn reason_is(&self, reason: &str) -> bool {
        matches!(self, ClientError::Api { reason: r, .. } if r == reason)
    }
    /// A watch or list from a version the apiserver no longer has: relist.
    pub fn is_expired(&self) -> bool {
        matches!(self, ClientError::Api { code: 410, .. })
    }
}

/// One connection pool to the apiserver, shared by every `Api`.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Client {
    pub fn new(credential: &Credential) -> Result<Client, ClientError> {
        let ca = reqwest::Certificate::from_pem(credential.ca.as_bytes())
            .map_err(|e| ClientError::Transport(format!("the cluster's CA: {e}")))?;
        let mut builder = reqwest::Client::builder()
            .tls_certs_only([ca])
            .user_agent("kube-controller-manager/kubelab");
        // The certificate is checked for its name, as the gRPC clients check it: an
        // apiserver reached at any address (another machine's agent) is still `localhost`.
        let base = match credential.server.parse::<std::net::SocketAddr>() {
            Ok(addr) => {
                builder = builder.resolve(kubelab_proto::credential::SERVER_NAME, addr);
                format!(
                    "https://{}:{}",
                    kubelab_proto::credential::SERVER_NAME,
                    addr.port()
                )
            }
            Err(_) => format!("https://{}", credential.server),
        };
        let http = builder
            .build()
            .map_err(|e| ClientError::Transport(e.to_string()))?;
        Ok(Client {
            http,
            base,
            token: credential.token.clone(),
        })
    }

    async fn send(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, ClientError> {
        let response = request
            .bearer_auth(&self.token)
            .send()
            .await
            .map_err(|e| ClientError::Transport(e.to_string()))?;
        if response.status().is_success() {
            return Ok(response);
        }
        let code = response.status().as_u16();
        let status: Value = response.json().await.unwrap_or(Value::Null);
        Err(ClientError::Api {
            code,
            reason: status["reason"].as_str().unwrap_or("").to_string(),
            message: status["message"].as_str().unwrap_or("").to_string(),
        })
    }
}

/// A resource's objects: all namespaces, or one.
pub struct Api<K> {
    client: Client,
    namespace: Option<String>,
    kind: PhantomData<K>,
}

impl<K> Clone for Api<K> {
    fn clone(&self) -> Self {
        Api {
            client: self.client.clone(),
            namespace: self.namespace.clone(),
            kind: PhantomData,
        }
    }
}

/// One change a watch saw.
#[derive(Debug)]
pub enum WatchEvent<K> {
    Added(K),
    Modified(K),
    Deleted(K),
    /// Nothing changed; the list is current up to this version.
    Bookmark(String),
}

/// A list and the version it was read at.
pub struct ObjectList<K> {
    pub items: Vec<K>,
    pub resource_version: String,
}

impl<K> Api<K>
where
    K: k8s_openapi::Resource + k8s_openapi::Metadata<Ty = ObjectMeta>,
    K: Serialize + DeserializeOwned + Send + 'static,
{
    pub fn all(client: Client) -> Self {
        Api {
            client,
            namespace: None,
            kind: PhantomData,
        }
    }

    pub fn namespaced(client: Client, namespace: &str) -> Self {
        Api {
            client,
            namespace: Some(namespace.to_string()),
            kind: PhantomData,
        }
    }

    /// `/api/v1/namespaces/NS/pods` or `/apis/apps/v1/replicasets`.
    fn url(&self, name: Option<&str>, subresource: Option<&str>) -> String {
        let root = if K::GROUP.is_empty() {
            format!("{}/api/{}", self.client.base, K::VERSION)
        } else {
            format!("{}/apis/{}/{}", self.client.base, K::GROUP, K::VERSION)
        };
        let mut url = match &self.namespace {
            Some(ns) => format!("{root}/namespaces/{ns}/{}", K::URL_PATH_SEGMENT),
            None => format!("{root}/{}", K::URL_PATH_SEGMENT),
        };
        if let Some(name) = name {
            url.push('/');
            url.push_str(name);
        }
        if let Some(sub) = subresource {
            url.push('/');
            url.push_str(sub);
        }
        url
    }

    async fn object(&self, request: reqwest::RequestBuilder) -> Result<K, ClientError> {
        let response = self.client.send(request).await?;
        let bytes = response
            .bytes()
            .await
            .map_err(|e| ClientError::Transport(e.to_string()))?;
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Decode(e.to_string()))
    }

    pub async fn get(&self, name: &str) -> Result<K, ClientError> {
        self.object(self.client.http.get(self.url(Some(name), None)))
            .await
    }

    pub async fn list(&self) -> Result<ObjectList<K>, ClientError> {
        let response = self
            .client
            .send(self.client.http.get(self.url(None, None)))
            .await?;
        let bytes = response
            .bytes()
            .await
            .map_err(|e| ClientError::Transport(e.to_string()))?;
        let mut list: Value =
            serde_json::from_slice(&bytes).map_err(|e| ClientError::Decode(e.to_string()))?;
        let resource_version = list["metadata"]["resourceVersion"]
            .as_str()
            .unwrap_or("")
            .to_string();
        let items = match list["items"].take() {
            Value::Array(items) => items
                .into_iter()
                .map(serde_json::from_value)
                .collect::<Result<Vec<K>, _>>()
                .map_err(|e| ClientError::Decode(e.to_string()))?,
            _ => Vec::new(),
        };
        Ok(ObjectList {
            items,
            resource_version,
        })
    }

    pub async fn create(&self, object: &K) -> Result<K, ClientError> {
        self.object(self.client.http.post(self.url(None, None)).json(object))
            .await
    }

    /// PUT: the whole object, guarded by its `resourceVersion`.
    pub async fn replace(&self, name: &str, object: &K) -> Result<K, ClientError> {
        self.object(
            self.client
                .http
                .put(self.url(Some(name), None))
                .json(object),
        )
        .await
    }

    pub async fn replace_status(&self, name: &str, object: &K) -> Result<K, ClientError> {
        self.object(
            self.client
                .http
                .put(self.url(Some(name), Some("status")))
                .json(object),
        )
        .await
    }

    /// DELETE with a propagation policy and, when given, the uid it must still have.
    pub async fn delete(
        &self,
        name: &str,
        propagation: &str,
        uid: Option<&str>,
    ) -> Result<(), ClientError> {
        let mut options = serde_json::json!({
            "kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": propagation,
        });
        if let Some(uid) = uid {
            options["preconditions"] = serde_json::json!({ "uid": uid });
        }
        self.client
            .send(
                self.client
                    .http
                    .delete(self.url(Some(name), None))
                    .json(&options),
            )
            .await
            .map(|_| ())
    }

    /// Every change after `resource_version`, with bookmarks; ends when the apiserver
    /// closes it (then watch again from the last version seen).
    pub async fn watch(
        &self,
        resource_version: &str,
    ) -> Result<impl Stream<Item = Result<WatchEvent<K>, ClientError>> + Send, ClientError> {
        let request = self.client.http.get(self.url(None, None)).query(&[
            ("watch", "true"),
            ("resourceVersion", resource_version),
            ("allowWatchBookmarks", "true"),
        ]);
        let response = self.client.send(request).await?;
        let state = (Box::pin(response.bytes_stream()), Vec::<u8>::new());
        Ok(futures::stream::unfold(
            state,
            |(mut bytes, mut buffer)| async move {
                loop {
                    if let Some(at) = buffer.iter().position(|b| *b == b'\n') {
                        let line: Vec<u8> = buffer.drain(..=at).collect();
                        if line.iter().all(u8::is_ascii_whitespace) {
                            continue;
                        }
                        return Some((decode_event::<K>(&line), (bytes, buffer)));
                    }
                    match bytes.next().await {
                        Some(Ok(chunk)) => buffer.extend_from_slice(&chunk),
                        Some(Err(e)) => {
                            return Some((
                                Err(ClientError::Transport(e.to_string())),
                                (bytes, buffer),
                            ))
                        }
                        None => return None,
                    }
                }
            },
        ))
    }
}

/// One line of a watch: `{"type":"ADDED","object":{...}}`.
fn decode_event<K: DeserializeOwned>(line: &[u8]) -> Result<WatchEvent<K>, ClientError> {
    let mut event: Value =
        serde_json::from_slice(line).map_err(|e| ClientError::Decode(e.to_string()))?;
    let kind = event["type"].as_str().unwrap_or("").to_string();
    let object = event["object"].take();
    if kind == "ERROR" {
        return Err(ClientError::Api {
            code: object["code"]
                .as_u64()
                .and_then(|c| u16::try_from(c).ok())
                .unwrap_or(500),
            reason: object["reason"].as_str().unwrap_or("").to_string(),
            message: object["message"].as_str().unwrap_or("").to_string(),
        });
    }
    if kind == "BOOKMARK" {
        let version = object["metadata"]["resourceVersion"]
            .as_str()
            .unwrap_or("")
            .to_string();
        return Ok(WatchEvent::Bookmark(version));
    }
    let object: K =
        serde_json::from_value(object).map_err(|e| ClientError::Decode(e.to_string()))?;
    match kind.as_str() {
        "ADDED" => Ok(WatchEvent::Added(object)),
        "MODIFIED" => Ok(WatchEvent::Modified(object)),
        "DELETED" => Ok(WatchEvent::Deleted(object)),
        other => Err(ClientError::Decode(format!(
            "unknown watch event type {other:?}"
        ))),
    }
}
