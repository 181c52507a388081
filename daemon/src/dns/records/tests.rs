use super::*;
use serde_json::json;

fn service(value: serde_json::Value) -> Arc<Service> {
    Arc::new(serde_json::from_value(value).expect("a Service"))
}

fn slice(value: serde_json::Value) -> Arc<EndpointSlice> {
    Arc::new(serde_json::from_value(value).expect("an EndpointSlice"))
}

fn records() -> Records {
    let services = [
        service(json!({
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"clusterIP": "10.96.5.6", "ports": [
                {"name": "http", "port": 80, "protocol": "TCP"},
                {"port": 81, "protocol": "TCP"}]}
        })),
        service(json!({
            "metadata": {"name": "db", "namespace": "team"},
            "spec": {"clusterIP": "None", "ports": [{"name": "pg", "port": 5432}]}
        })),
        service(json!({
            "metadata": {"name": "empty", "namespace": "team"},
            "spec": {"clusterIP": "None"}
        })),
        service(json!({
            "metadata": {"name": "out", "namespace": "default"},
            "spec": {"type": "ExternalName", "externalName": "example.com"}
        })),
    ];
    let slices = [slice(json!({
        "metadata": {"name": "db-x", "namespace": "team",
                     "labels": {"kubernetes.io/service-name": "db"}},
        "addressType": "IPv4",
        "ports": [{"name": "pg", "port": 5433, "protocol": "TCP"}],
        "endpoints": [
            {"addresses": ["10.88.0.5"], "hostname": "db-0", "conditions": {"ready": true}},
            {"addresses": ["10.88.1.7"], "conditions": {"ready": true}},
            {"addresses": ["10.88.1.8"], "conditions": {"ready": false}}
        ]
    }))];
    Records::build("cluster.local", &services, &slices)
}

fn addresses(answer: Answer) -> Vec<String> {
    match answer {
        Answer::Records(r) => {
            let mut out: Vec<String> = r.iter().map(|r| r.data.to_string()).collect();
            out.sort();
            out
        }
        other => panic!("expected records, got {other:?}"),
    }
}

#[test]
fn a_service_has_its_cluster_ip_srv_for_named_ports_and_ptr() {
    let r = records();
    assert_eq!(
        addresses(r.lookup("Web.Default.svc.cluster.local.", RecordType::A)),
        ["10.96.5.6"]
    );
    assert_eq!(
        addresses(r.lookup("_http._tcp.web.default.svc.cluster.local.", RecordType::SRV)),
        ["0 100 80 web.default.svc.cluster.local."]
    );
    assert_eq!(
        addresses(r.lookup("6.5.96.10.in-addr.arpa.", RecordType::PTR)),
        ["web.default.svc.cluster.local."]
    );
    assert_eq!(
        r.lookup("web.default.svc.cluster.local.", RecordType::AAAA),
        Answer::NoData
    );
    assert_eq!(
        r.lookup("default.svc.cluster.local.", RecordType::A),
        Answer::NoData
    );
    assert_eq!(
        r.lookup("nope.default.svc.cluster.local.", RecordType::A),
        Answer::NxDomain
    );
    assert_eq!(
        r.lookup("web.nope.svc.cluster.local.", RecordType::A),
        Answer::NxDomain
    );
}

#[test]
fn a_headless_service_has_its_ready_endpoints_and_their_names() {
    let r = records();
    assert_eq!(
        addresses(r.lookup("db.team.svc.cluster.local.", RecordType::A)),
        ["10.88.0.5", "10.88.1.7"]
    );
    assert_eq!(
        addresses(r.lookup("db-0.db.team.svc.cluster.local.", RecordType::A)),
        ["10.88.0.5"]
    );
    assert_eq!(
        addresses(r.lookup("10-88-1-7.db.team.svc.cluster.local.", RecordType::A)),
        ["10.88.1.7"]
    );
    assert_eq!(
        addresses(r.lookup("_pg._tcp.db.team.svc.cluster.local.", RecordType::SRV)),
        [
            "0 50 5433 10-88-1-7.db.team.svc.cluster.local.",
            "0 50 5433 db-0.db.team.svc.cluster.local."
        ]
    );
    assert_eq!(
        addresses(r.lookup("5.0.88.10.in-addr.arpa.", RecordType::PTR)),
        ["db-0.db.team.svc.cluster.local."]
    );
    assert_eq!(
        r.lookup("10-88-1-8.db.team.svc.cluster.local.", RecordType::A),
        Answer::NxDomain
    );
    // Headless without ready endpoints: the name does not exist.
    assert_eq!(
        r.lookup("empty.team.svc.cluster.local.", RecordType::A),
        Answer::NxDomain
    );
}

#[test]
fn external_names_pods_and_the_version() {
    let r = records();
    assert_eq!(
        addresses(r.lookup("out.default.svc.cluster.local.", RecordType::A)),
        ["example.com."]
    );
    assert_eq!(
        addresses(r.lookup("10-88-0-9.team.pod.cluster.local.", RecordType::A)),
        ["10.88.0.9"]
    );
    assert_eq!(
        r.lookup("web-0.team.pod.cluster.local.", RecordType::A),
        Answer::NxDomain
    );
    assert_eq!(
        addresses(r.lookup("dns-version.cluster.local.", RecordType::TXT)),
        ["1.1.0"]
    );
}
