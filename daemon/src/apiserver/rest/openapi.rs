//! The OpenAPI v3 documents kubectl reads before it sends a manifest (`/openapi/v3`, then
//! one document per group version): each resource's paths, and on every write the
//! `fieldValidation` parameter, so kubectl leaves validation to the server
//! (`fieldValidation=Strict`), which reports unknown fields as kube-apiserver does.
//!
//! kubelab's documents list operations and parameters but no schemas (`kubectl
//! explain` has nothing to show): the JSON shapes are Kubernetes' own, checked on the
//! server. Built once, on first use. `/openapi/v2`, what kubectl before 1.27 reads, is an
//! empty document: those clients then leave validation to the server too.

use std::sync::OnceLock;

use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{json, Value};

use super::json_response;
use super::kinds::{self, Kind};

/// One group version's document, with its path in `/openapi/v3/PATH`.
struct Document {
    path: &'static str,
    body: Value,
    hash: String,
}

fn parameter(name: &str, kind: &str) -> Value {
    json!({ "name": name, "in": "query", "schema": { "type": kind }, "uniqueItems": true })
}

fn write_parameters() -> Value {
    json!([
        parameter("dryRun", "string"),
        parameter("fieldManager", "string"),
        parameter("fieldValidation", "string"),
    ])
}

fn gvk<K: Kind>() -> Value {
    let version = <K::K8s as k8s_openapi::Resource>::VERSION;
    let group = <K::K8s as k8s_openapi::Resource>::GROUP;
    let kind = <K::K8s as k8s_openapi::Resource>::KIND;
    json!({ "group": group, "version": version, "kind": kind })
}

/// The paths of one resource: its collection (list, create) and its objects (get,
/// replace, patch, delete).
fn paths<K: Kind>(prefix: &str, namespaced: bool, out: &mut serde_json::Map<String, Value>) {
    let base = if namespaced {
        format!("{prefix}/namespaces/{{namespace}}/{}", K::PLURAL)
    } else {
        format!("{prefix}/{}", K::PLURAL)
    };
    let extension = gvk::<K>();
    let op = |action: &str| {
        json!({
            "x-kubernetes-action": action,
            "x-kubernetes-group-version-kind": extension,
            "parameters": write_parameters(),
            "responses": { "200": { "description": "OK" } },
        })
    };
    let mut path_parameters = vec![parameter("pretty", "string")];
    path_parameters.extend(write_parameters().as_array().cloned().unwrap_or_default());
    let mut collection = json!({
        "get": op("list"),
        "post": op("post"),
        "parameters": path_parameters.clone(),
    });
    if !K::VERBS.contains(&"create") {
        if let Some(c) = collection.as_object_mut() {
            c.remove("post");
        }
    }
    out.insert(base.clone(), collection);
    let mut patch = op("patch");
    patch["requestBody"] = json!({
        "content": {
            "application/json-patch+json": {},
            "application/merge-patch+json": {},
            "application/strategic-merge-patch+json": {},
            "application/apply-patch+yaml": {},
        }
    });
    out.insert(
        format!("{base}/{{name}}"),
        json!({
            "get": op("get"),
            "put": op("put"),
            "patch": patch,
            "delete": op("delete"),
            "parameters": path_parameters,
        }),
    );
}

fn document(title_path: &'static str, paths: serde_json::Map<String, Value>) -> Document {
    use sha2::Digest;
    let body = json!({
        "openapi": "3.0.0",
        "info": { "title": "Kubernetes", "version": format!("v{}", kubelab_proto::k8s::KUBERNETES_VERSION) },
        "paths": paths,
        "components": { "schemas": {} },
    });
    let hash = hex::encode(sha2::Sha256::digest(body.to_string().as_bytes()));
    Document {
        path: title_path,
        body,
        hash: hash.to_uppercase(),
    }
}

fn documents() -> &'static [Document] {
    static DOCUMENTS: OnceLock<Vec<Document>> = OnceLock::new();
    DOCUMENTS.get_or_init(|| {
        let mut core = serde_json::Map::new();
        paths::<kinds::Pods>("/api/v1", true, &mut core);
        paths::<kinds::Nodes>("/api/v1", false, &mut core);
        paths::<kinds::Namespaces>("/api/v1", false, &mut core);
        paths::<kinds::Events>("/api/v1", true, &mut core);
        let mut events = serde_json::Map::new();
        paths::<kinds::EventsV1>("/apis/events.k8s.io/v1", true, &mut events);
        vec![
            document("api/v1", core),
            document("apis/events.k8s.io/v1", events),
        ]
    })
}

/// gnostic's OpenAPI v2 `Document` (its `openapiv2.proto`), as far as an empty one
/// needs: what kubectl before 1.27 reads, as protobuf, to validate manifests. With no
/// definitions it validates nothing on the client (it skips kinds it has no schema
/// for); the server checks (`fieldValidation`, Warn by default for such clients).
#[derive(Clone, PartialEq, prost::Message)]
struct V2Document {
    #[prost(string, tag = "1")]
    swagger: String,
    #[prost(message, optional, tag = "2")]
    info: Option<V2Info>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct V2Info {
    #[prost(string, tag = "1")]
    title: String,
    #[prost(string, tag = "2")]
    version: String,
}

/// `/openapi/v2`: an empty document, as protobuf (what kubectl asks for) or JSON.
fn v2(accept: &str) -> Response {
    let version = format!("v{}", kubelab_proto::k8s::KUBERNETES_VERSION);
    if accept.contains("protobuf") {
        use prost::Message;
        let document = V2Document {
            swagger: "2.0".into(),
            info: Some(V2Info {
                title: "Kubernetes".into(),
                version,
            }),
        };
        return Response::builder()
            .status(StatusCode::OK)
            .header(
                axum::http::header::CONTENT_TYPE,
                // Go's media-type parser refuses the `@` of the type the client asked
                // for; a plain binary type is read as the same bytes.
                "application/octet-stream",
            )
            .body(axum::body::Body::from(document.encode_to_vec()))
            .unwrap_or_default();
    }
    let body = json!({
        "swagger": "2.0",
        "info": { "title": "Kubernetes", "version": version },
        "paths": {},
        "definitions": {},
    });
    json_response(StatusCode::OK, &body, &[])
}

pub fn serve(path: &str, accept: &str) -> Response {
    let docs = documents();
    let rest = path.trim_start_matches("/openapi/");
    if rest == "v2" {
        return v2(accept);
    }
    if rest == "v3" {
        let paths: serde_json::Map<String, Value> = docs
            .iter()
            .map(|d| {
                (
                    d.path.to_string(),
                    json!({ "serverRelativeURL": format!("/openapi/v3/{}?hash={}", d.path, d.hash) }),
                )
            })
            .collect();
        return json_response(StatusCode::OK, &json!({ "paths": paths }), &[]);
    }
    match rest
        .strip_prefix("v3/")
        .and_then(|p| docs.iter().find(|d| d.path == p))
    {
        Some(d) => json_response(StatusCode::OK, &d.body, &[]),
        None => super::discovery::not_found(),
    }
}
