//! What a REST request asks for, read from its method and path as kube-apiserver's
//! `RequestInfoFactory` reads it: `GET /api/v1/namespaces/default/pods/web/log` is the
//! verb `get` on the `log` subresource of pod `web` in namespace `default`. Pure: no
//! store, no auth; the fuzz target `rest_request` feeds it any path.

/// The verbs of Kubernetes' authorization, from the method and the path's shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verb {
    Get,
    List,
    Watch,
    Create,
    Update,
    Patch,
    Delete,
    DeleteCollection,
    /// A method the API does not take on that path (OPTIONS, HEAD, ...).
    Other,
}

/// A request for a resource (`/api/...` or `/apis/...`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RequestInfo {
    /// Empty for the core group (`/api/v1`).
    pub group: String,
    pub version: String,
    pub namespace: String,
    pub resource: String,
    pub name: String,
    pub subresource: String,
}

/// Why a path names no resource: discovery and other paths are served elsewhere.
#[derive(Debug, PartialEq, Eq)]
pub enum NotAResource {
    /// `/api`, `/api/v1`, `/apis`, `/apis/GROUP`, `/apis/GROUP/VERSION`.
    Discovery { group: String, version: String },
    /// Anything else.
    Unknown,
}

/// Reads `method` and `path` (without the query). `watch` is the query's `watch=true`.
pub fn parse(
    method: &http::Method,
    path: &str,
    watch: bool,
) -> Result<(Verb, RequestInfo), NotAResource> {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version, rest) = match parts.as_slice() {
        ["api"] => return Err(discovery("", "")),
        ["api", version] => return Err(discovery("", version)),
        ["api", version, rest @ ..] => ("", *version, rest),
        // `/apis` lists groups: not a group or version of its own.
        ["apis"] => return Err(NotAResource::Unknown),
        ["apis", group] => return Err(discovery(group, "")),
        ["apis", group, version] => return Err(discovery(group, version)),
        ["apis", group, version, rest @ ..] => (*group, *version, rest),
        _ => return Err(NotAResource::Unknown),
    };
    if rest.iter().any(|p| p.is_empty()) {
        return Err(NotAResource::Unknown);
    }
    let mut info = RequestInfo {
        group: group.to_string(),
        version: version.to_string(),
        ..Default::default()
    };
    // /namespaces/NS/RESOURCE... is namespaced; /namespaces and /namespaces/NAME[/status]
    // are the namespaces themselves.
    let rest = match rest {
        ["namespaces", namespace, resource, more @ ..] if !is_namespace_subresource(resource) => {
            info.namespace = namespace.to_string();
            let mut v = vec![*resource];
            v.extend_from_slice(more);
            v
        }
        other => other.to_vec(),
    };
    match rest.as_slice() {
        [resource] => info.resource = resource.to_string(),
        [resource, name] => {
            info.resource = resource.to_string();
            info.name = name.to_string();
        }
        [resource, name, subresource] => {
            info.resource = resource.to_string();
            info.name = name.to_string();
            info.subresource = subresource.to_string();
        }
        _ => return Err(NotAResource::Unknown),
    }
    let collection = info.name.is_empty();
    let verb = match *method {
        http::Method::GET if watch => Verb::Watch,
        http::Method::GET if collection => Verb::List,
        http::Method::GET => Verb::Get,
        http::Method::POST => Verb::Create,
        http::Method::PUT => Verb::Update,
        http::Method::PATCH => Verb::Patch,
        http::Method::DELETE if collection => Verb::DeleteCollection,
        http::Method::DELETE => Verb::Delete,
        _ => Verb::Other,
    };
    Ok((verb, info))
}

fn is_namespace_subresource(part: &str) -> bool {
    matches!(part, "status" | "finalize")
}

fn discovery(group: &str, version: &str) -> NotAResource {
    NotAResource::Discovery {
        group: group.into(),
        version: version.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Method;

    fn info(method: Method, path: &str) -> (Verb, RequestInfo) {
        parse(&method, path, false).unwrap()
    }

    #[test]
    fn paths_read_as_kube_apiserver_reads_them() {
        let (verb, i) = info(Method::GET, "/api/v1/namespaces/default/pods/web/log");
        assert_eq!(verb, Verb::Get);
        assert_eq!(
            (i.namespace.as_str(), i.resource.as_str(), i.name.as_str()),
            ("default", "pods", "web")
        );
        assert_eq!(i.subresource, "log");
        let (verb, i) = info(Method::GET, "/api/v1/namespaces/kube-system");
        assert_eq!((verb, i.resource.as_str()), (Verb::Get, "namespaces"));
        assert_eq!(i.name, "kube-system");
        let (_, i) = info(Method::PUT, "/api/v1/namespaces/lab/status");
        assert_eq!((i.name.as_str(), i.subresource.as_str()), ("lab", "status"));
        let (verb, i) = info(Method::GET, "/apis/events.k8s.io/v1/events");
        assert_eq!((verb, i.group.as_str()), (Verb::List, "events.k8s.io"));
        let (verb, _) = parse(&Method::GET, "/api/v1/pods", true).unwrap();
        assert_eq!(verb, Verb::Watch);
        let (verb, _) = info(Method::DELETE, "/api/v1/namespaces/default/pods");
        assert_eq!(verb, Verb::DeleteCollection);
    }

    #[test]
    fn discovery_and_strange_paths_are_not_resources() {
        assert_eq!(
            parse(&Method::GET, "/apis/events.k8s.io", false),
            Err(discovery("events.k8s.io", ""))
        );
        assert_eq!(
            parse(&Method::GET, "/api/v1", false),
            Err(discovery("", "v1"))
        );
        assert_eq!(
            parse(&Method::GET, "/api/v1/a/b/c/d/e", false),
            Err(NotAResource::Unknown)
        );
        assert_eq!(
            parse(&Method::GET, "/api/v1//pods", false),
            Err(NotAResource::Unknown)
        );
        assert_eq!(
            parse(&Method::GET, "/healthz", false),
            Err(NotAResource::Unknown)
        );
    }
}
