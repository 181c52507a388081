//! Service links: the environment variables the kubelet gives every container for the
//! Services of its pod's namespace and for `kubernetes` in `default`
//! (`WEB_SERVICE_HOST=10.96.5.6`, `WEB_SERVICE_PORT=80`, `WEB_PORT_80_TCP=tcp://…` …),
//! as Docker links once did. The agent follows the Services through the REST API (an
//! informer with the node's credential), so a container start reads a cache, never the
//! network. Headless and ExternalName Services have no address and give no variables.
//! A pod with `enableServiceLinks: false` gets only `kubernetes`' variables. Owns those
//! variables only; the values the pod sets itself win over them.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Service;
use kubelab_proto::credential::Credential;

use crate::controllers::client::{Api, Client, ClientError};
use crate::controllers::informer::Informer;

/// How long a container start waits for the first list of Services (the kubelet waits
/// until its informer has synced).
const SYNC_WAIT: Duration = Duration::from_secs(2);

#[derive(Clone)]
pub struct ServiceLinks {
    services: Option<Arc<Informer<Service>>>,
}

impl ServiceLinks {
    /// Follows the cluster's Services for as long as the agent runs.
    pub fn follow(credential: &Credential) -> Result<ServiceLinks, ClientError> {
        let client = Client::new(credential)?;
        let services = Informer::<Service>::new();
        tokio::spawn(services.clone().run(Api::all(client)));
        Ok(ServiceLinks {
            services: Some(services),
        })
    }

    /// No Services (the pod workers' unit tests).
    pub fn none() -> ServiceLinks {
        ServiceLinks { services: None }
    }

    /// The variables for a container of a pod in `namespace`: those of its namespace's
    /// Services when `enable_service_links` (the pod's `enableServiceLinks`, true unless
    /// set false), and always those of `default/kubernetes`, as the kubelet gives them.
    pub async fn env_for(
        &self,
        namespace: &str,
        enable_service_links: bool,
    ) -> Vec<(String, String)> {
        let Some(services) = &self.services else {
            return Vec::new();
        };
        if tokio::time::timeout(SYNC_WAIT, services.wait_synced())
            .await
            .is_err()
        {
            tracing::warn!(
                "the Services are not listed yet: no service variables for this container"
            );
        }
        let mut linked: Vec<Arc<Service>> = if enable_service_links {
            services.list_namespace(namespace)
        } else {
            Vec::new()
        };
        if !linked
            .iter()
            .any(|s| s.metadata.name.as_deref() == Some("kubernetes"))
        {
            linked.extend(services.get("default/kubernetes"));
        }
        linked.sort_by_key(|s| s.metadata.name.clone());
        linked.iter().flat_map(|s| variables(s)).collect()
    }
}

/// `my-svc` → `MY_SVC` (a leading digit gets a `_`).
fn env_name(name: &str) -> String {
    let upper = name.to_ascii_uppercase().replace(['-', '.'], "_");
    if upper.starts_with(|c: char| c.is_ascii_digit()) {
        format!("_{upper}")
    } else {
        upper
    }
}

/// One Service's variables, as the kubelet's `FromServices` makes them.
fn variables(svc: &Service) -> Vec<(String, String)> {
    let Some(spec) = svc.spec.as_ref() else {
        return Vec::new();
    };
    let ip = spec.cluster_ip.clone().unwrap_or_default();
    let ports = spec.ports.clone().unwrap_or_default();
    if ip.is_empty() || ip == "None" || ports.is_empty() {
        return Vec::new();
    }
    let name = env_name(svc.metadata.name.as_deref().unwrap_or(""));
    let mut vars = vec![
        (format!("{name}_SERVICE_HOST"), ip.clone()),
        (format!("{name}_SERVICE_PORT"), ports[0].port.to_string()),
    ];
    for port in ports
        .iter()
        .filter(|p| p.name.as_deref().is_some_and(|n| !n.is_empty()))
    {
        let port_name = env_name(port.name.as_deref().unwrap_or(""));
        vars.push((
            format!("{name}_SERVICE_PORT_{port_name}"),
            port.port.to_string(),
        ));
    }
    let protocol = |p: &k8s_openapi::api::core::v1::ServicePort| {
        p.protocol.clone().unwrap_or_else(|| "TCP".into())
    };
    let first = &ports[0];
    vars.push((
        format!("{name}_PORT"),
        format!("{}://{ip}:{}", protocol(first).to_lowercase(), first.port),
    ));
    for port in &ports {
        let proto = protocol(port);
        let prefix = format!("{name}_PORT_{}_{}", port.port, proto.to_uppercase());
        let lower = proto.to_lowercase();
        vars.push((prefix.clone(), format!("{lower}://{ip}:{}", port.port)));
        vars.push((format!("{prefix}_PROTO"), lower));
        vars.push((format!("{prefix}_PORT"), port.port.to_string()));
        vars.push((format!("{prefix}_ADDR"), ip.clone()));
    }
    vars
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_service_gives_the_kubelets_variables() {
        let svc: Service = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "my-web"},
            "spec": {"clusterIP": "10.96.5.6", "ports": [
                {"name": "http", "port": 80, "protocol": "TCP"},
                {"name": "dns", "port": 53, "protocol": "UDP"},
            ]},
        }))
        .unwrap();
        let vars: std::collections::HashMap<String, String> = variables(&svc).into_iter().collect();
        assert_eq!(vars["MY_WEB_SERVICE_HOST"], "10.96.5.6");
        assert_eq!(vars["MY_WEB_SERVICE_PORT"], "80");
        assert_eq!(vars["MY_WEB_SERVICE_PORT_HTTP"], "80");
        assert_eq!(vars["MY_WEB_PORT"], "tcp://10.96.5.6:80");
        assert_eq!(vars["MY_WEB_PORT_53_UDP"], "udp://10.96.5.6:53");
        assert_eq!(vars["MY_WEB_PORT_53_UDP_PROTO"], "udp");
        assert_eq!(vars["MY_WEB_PORT_80_TCP_ADDR"], "10.96.5.6");
        let headless: Service = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "db"}, "spec": {"clusterIP": "None", "ports": [{"port": 5432}]},
        }))
        .unwrap();
        assert!(variables(&headless).is_empty());
        assert_eq!(env_name("9lives"), "_9LIVES");
    }
}
