//! What the server serves, as clients discover it: `/version`, `/api` and `/apis` with
//! each group's resources (kubectl's `api-resources`, short names like `po`), the
//! OpenAPI documents kubectl validates manifests with, and `auth whoami`.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use super::kinds::{self, Kind};
use super::status::failure;
use super::{json_response, Ctx, Rest};
use kubelab_proto::k8s::KUBERNETES_VERSION;

/// `/version`: the Kubernetes version whose API is served, and kubelab's own.
pub fn version() -> Response {
    let mut parts = KUBERNETES_VERSION.split('.');
    let major = parts.next().unwrap_or("1");
    let minor = parts.next().unwrap_or("0");
    let body = json!({
        "major": major,
        "minor": minor,
        "gitVersion": format!("v{KUBERNETES_VERSION}+kubelab.{}", env!("CARGO_PKG_VERSION")),
        "gitCommit": "",
        "gitTreeState": "clean",
        "buildDate": "1970-01-01T00:00:00Z",
        "goVersion": "",
        "compiler": "rustc",
        "platform": format!("linux/{}", kubelab_proto::k8s::defaults::architecture()),
    });
    json_response(StatusCode::OK, &body, &[])
}

/// kube-apiserver's answer for a path it does not serve.
pub fn not_found() -> Response {
    failure(
        StatusCode::NOT_FOUND,
        "NotFound",
        "the server could not find the requested resource",
        json!({}),
    )
    .into_response()
}

fn resource<K: Kind>(namespaced: bool) -> Vec<Value> {
    let kind = <K::K8s as k8s_openapi::Resource>::KIND;
    let mut main = json!({
        "name": K::PLURAL,
        "singularName": K::SINGULAR,
        "namespaced": namespaced,
        "kind": kind,
        "verbs": K::VERBS,
    });
    if !K::SHORT_NAMES.is_empty() {
        main["shortNames"] = json!(K::SHORT_NAMES);
    }
    if K::IN_ALL {
        main["categories"] = json!(["all"]);
    }
    let mut out = vec![main];
    for (sub, verbs) in K::SUBRESOURCES {
        let kind = match *sub {
            "exec" => "PodExecOptions",
            "binding" => "Binding",
            "scale" => "Scale",
            _ => kind,
        };
        let mut entry = json!({
            "name": format!("{}/{sub}", K::PLURAL),
            "singularName": "",
            "namespaced": namespaced,
            "kind": kind,
            "verbs": verbs,
        });
        // A workload's scale is autoscaling/v1's Scale, whatever the workload's group.
        if *sub == "scale" {
            entry["group"] = json!("autoscaling");
            entry["version"] = json!("v1");
        }
        out.push(entry);
    }
    out
}

fn resource_list(group_version: &str, resources: Vec<Value>) -> Value {
    json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": group_version,
        "resources": resources,
    })
}

/// The groups served besides the core one, each with its one version.
const GROUPS: &[&str] = &[
    "apps",
    "batch",
    "discovery.k8s.io",
    "events.k8s.io",
    "authentication.k8s.io",
];

fn group(name: &str) -> Value {
    let version = json!({ "groupVersion": format!("{name}/v1"), "version": "v1" });
    json!({
        "kind": "APIGroup",
        "apiVersion": "v1",
        "name": name,
        "versions": [version.clone()],
        "preferredVersion": version,
    })
}

/// `/api`, `/api/v1`, `/apis`, `/apis/GROUP`, `/apis/GROUP/v1`.
pub fn serve(rest: &Rest, group_name: &str, version: &str) -> Response {
    let body = match (group_name, version) {
        ("", "") => api_versions(rest),
        ("", "v1") => resource_list(
            "v1",
            [
                resource::<kinds::Pods>(true),
                resource::<kinds::Nodes>(false),
                resource::<kinds::Namespaces>(false),
                resource::<kinds::Events>(true),
                resource::<kinds::Services>(true),
                vec![json!({
                    "name": "bindings", "singularName": "binding", "namespaced": true,
                    "kind": "Binding", "verbs": ["create"],
                })],
            ]
            .concat(),
        ),
        ("apps", "") => group("apps"),
        ("apps", "v1") => resource_list(
            "apps/v1",
            [
                resource::<kinds::Deployments>(true),
                resource::<kinds::ReplicaSets>(true),
            ]
            .concat(),
        ),
        ("batch", "") => group("batch"),
        ("batch", "v1") => resource_list("batch/v1", resource::<kinds::Jobs>(true)),
        ("discovery.k8s.io", "") => group("discovery.k8s.io"),
        ("discovery.k8s.io", "v1") => resource_list(
            "discovery.k8s.io/v1",
            resource::<kinds::EndpointSlices>(true),
        ),
        ("events.k8s.io", "") => group("events.k8s.io"),
        ("events.k8s.io", "v1") => {
            resource_list("events.k8s.io/v1", resource::<kinds::EventsV1>(true))
        }
        ("authentication.k8s.io", "") => group("authentication.k8s.io"),
        ("authentication.k8s.io", "v1") => resource_list(
            "authentication.k8s.io/v1",
            vec![json!({
                "name": "selfsubjectreviews", "singularName": "selfsubjectreview",
                "namespaced": false, "kind": "SelfSubjectReview", "verbs": ["create"],
            })],
        ),
        _ => return not_found(),
    };
    json_response(StatusCode::OK, &body, &[])
}

/// `/api`: the core group's versions.
fn api_versions(rest: &Rest) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [
            { "clientCIDR": "0.0.0.0/0", "serverAddress": rest.address }
        ],
    })
}

fn group_list() -> Value {
    json!({
        "kind": "APIGroupList",
        "apiVersion": "v1",
        "groups": GROUPS.iter().map(|g| {
            let mut g = group(g);
            if let Some(o) = g.as_object_mut() {
                o.remove("kind");
                o.remove("apiVersion");
            }
            g
        }).collect::<Vec<_>>(),
    })
}

/// Paths that are not resources: `/apis` itself, OpenAPI, and anything unknown.
pub fn other(request: Request<Body>) -> Response {
    let path = request.uri().path().trim_end_matches('/');
    match path {
        "/apis" => json_response(StatusCode::OK, &group_list(), &[]),
        p if p.starts_with("/openapi/") => {
            let accept = request
                .headers()
                .get(axum::http::header::ACCEPT)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            super::openapi::serve(p, accept)
        }
        _ => not_found(),
    }
}

/// `kubectl auth whoami`: a SelfSubjectReview of the caller.
pub fn whoami(ctx: &Ctx) -> Response {
    let body = json!({
        "kind": "SelfSubjectReview",
        "apiVersion": "authentication.k8s.io/v1",
        "metadata": { "creationTimestamp": null },
        "status": {
            "userInfo": {
                "username": ctx.who.user_name(),
                "groups": ctx.who.groups(),
            }
        }
    });
    json_response(StatusCode::CREATED, &body, &[])
}
