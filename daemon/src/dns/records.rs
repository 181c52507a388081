//! The cluster's DNS records, made from the Services and EndpointSlices as the Kubernetes
//! DNS specification (1.1.0) and CoreDNS's `kubernetes` plugin give them:
//!
//! - `<svc>.<ns>.svc.<domain>`: A to the cluster IP; for a headless Service, one A per
//!   ready endpoint (none ready: the name does not exist); ExternalName: a CNAME.
//! - `<hostname>.<svc>.<ns>.svc.<domain>`: A to that endpoint, its hostname being the
//!   endpoint's `hostname` (a pod's `spec.hostname` under its `subdomain`) or its IP
//!   with dashes (`10-88-0-5`).
//! - `_<port>._<proto>.<svc>.<ns>.svc.<domain>`: SRV for each named port (the cluster
//!   IP's name and the Service port; per ready endpoint and its port when headless).
//! - PTR for cluster IPs and headless endpoints; `<a-b-c-d>.<ns>.pod.<domain>` A to
//!   `a.b.c.d` (CoreDNS's `pods insecure`, kubeadm's choice); `dns-version.<domain>` TXT.
//!
//! A name that exists without records of the type asked gets an empty answer (NODATA),
//! any other name in the domain NXDOMAIN. Pure: built whole after each change and then
//! only read, so a query never waits for the API.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::Ipv4Addr;
use std::sync::Arc;

use hickory_proto::rr::rdata::{A, CNAME, PTR, SOA, SRV, TXT};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

/// How long answers may be cached (kubeadm's Corefile: `ttl 30`).
pub const TTL: u32 = 30;
/// The specification's version, answered at `dns-version.<domain>`.
const SPEC_VERSION: &str = "1.1.0";
const SERVICE_NAME: &str = "kubernetes.io/service-name";

/// What a query finds.
#[derive(Debug, PartialEq)]
pub enum Answer {
    Records(Vec<Record>),
    /// The name exists, without records of that type.
    NoData,
    NxDomain,
}

/// A slice's port: name, protocol, number.
type SlicePort = (String, String, u16);

#[derive(Default)]
pub struct Records {
    /// By lowercase fully qualified name (`web.default.svc.cluster.local.`) and type.
    records: HashMap<(String, RecordType), Vec<Record>>,
    /// Names that exist, with records or not (`default.svc.cluster.local.`).
    names: HashSet<String>,
    /// `cluster.local.`
    zone: String,
    /// The zone's SOA, sent with negative answers.
    soa: Option<Record>,
}

fn name(text: &str) -> Option<Name> {
    Name::from_ascii(text).ok()
}

/// The zone's SOA, as CoreDNS makes it: `ns.dns.<zone>`, `hostmaster.<zone>`, 7200 1800
/// 86400, the minimum TTL being the records' TTL.
fn soa(zone: &str) -> Option<Record> {
    let owner = name(zone)?;
    let mname = name(&format!("ns.dns.{zone}"))?;
    let rname = name(&format!("hostmaster.{zone}"))?;
    let serial = u32::try_from(kubelab_proto::now_ms() / 1000 % i64::from(u32::MAX)).unwrap_or(1);
    let data = SOA::new(mname, rname, serial, 7200, 1800, 86400, TTL);
    Some(Record::from_rdata(owner, TTL, RData::SOA(data)))
}

/// `10.96.0.10` → `10.0.96.10.in-addr.arpa.`
pub fn reverse_name(ip: Ipv4Addr) -> String {
    let [a, b, c, d] = ip.octets();
    format!("{d}.{c}.{b}.{a}.in-addr.arpa.")
}

/// An endpoint's name under its Service: its hostname, or its address with dashes.
fn endpoint_hostname(hostname: Option<&str>, ip: &str) -> String {
    match hostname {
        Some(h) if !h.is_empty() => h.to_string(),
        _ => ip.replace(['.', ':'], "-"),
    }
}

impl Records {
    pub fn empty(domain: &str) -> Records {
        let zone = format!("{}.", domain.trim_end_matches('.').to_ascii_lowercase());
        Records {
            soa: soa(&zone),
            zone,
            ..Default::default()
        }
    }

    /// The zone's SOA (its serial: when these records were built).
    pub fn soa(&self) -> Option<&Record> {
        self.soa.as_ref()
    }

    fn add(&mut self, owner: &str, data: RData) {
        let Some(n) = name(owner) else {
            return;
        };
        let key = (owner.to_ascii_lowercase(), data.record_type());
        self.names.insert(key.0.clone());
        let list = self.records.entry(key).or_default();
        let record = Record::from_rdata(n, TTL, data);
        if !list.contains(&record) {
            list.push(record);
        }
    }

    pub fn build(
        domain: &str,
        services: &[Arc<Service>],
        slices: &[Arc<EndpointSlice>],
    ) -> Records {
        let mut out = Records::empty(domain);
        let zone = out.zone.clone();
        out.names.insert(zone.clone());
        out.names.insert(format!("svc.{zone}"));
        if let Some(n) = name(&format!("dns-version.{zone}")) {
            let txt = RData::TXT(TXT::new(vec![SPEC_VERSION.into()]));
            out.records.insert(
                (n.to_ascii().to_ascii_lowercase(), RecordType::TXT),
                vec![Record::from_rdata(n, 28800, txt)],
            );
        }
        let mut by_service: HashMap<(String, String), Vec<&EndpointSlice>> = HashMap::new();
        for slice in slices {
            let service = slice
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(SERVICE_NAME));
            if let Some(service) = service {
                let ns = slice.metadata.namespace.clone().unwrap_or_default();
                by_service
                    .entry((ns, service.clone()))
                    .or_default()
                    .push(slice);
            }
        }
        for svc in services {
            let ns = svc.metadata.namespace.clone().unwrap_or_default();
            let svc_name = svc.metadata.name.clone().unwrap_or_default();
            let empty = Vec::new();
            let own = by_service
                .get(&(ns.clone(), svc_name.clone()))
                .unwrap_or(&empty);
            out.add_service(svc, &ns, &svc_name, own);
        }
        out
    }

    fn add_service(&mut self, svc: &Service, ns: &str, svc_name: &str, slices: &[&EndpointSlice]) {
        let Some(spec) = svc.spec.as_ref() else {
            return;
        };
        let zone = self.zone.clone();
        self.names.insert(format!("{ns}.svc.{zone}"));
        let base = format!("{svc_name}.{ns}.svc.{zone}");
        if spec.type_.as_deref() == Some("ExternalName") {
            let target = spec.external_name.clone().unwrap_or_default();
            if let Some(target) = name(&format!("{}.", target.trim_end_matches('.'))) {
                self.add(&base, RData::CNAME(CNAME(target)));
            }
            return;
        }
        // The ready endpoints: address, hostname, its slice's ports.
        let mut endpoints: Vec<(String, String, Vec<SlicePort>)> = Vec::new();
        for slice in slices {
            let ports: Vec<SlicePort> = slice
                .ports
                .iter()
                .flatten()
                .filter_map(|p| {
                    let number = u16::try_from(p.port?).ok()?;
                    let protocol = p.protocol.clone().unwrap_or_else(|| "TCP".into());
                    Some((p.name.clone().unwrap_or_default(), protocol, number))
                })
                .collect();
            for e in slice.endpoints.iter().flatten() {
                let ready = e.conditions.as_ref().and_then(|c| c.ready) != Some(false);
                if !ready {
                    continue;
                }
                for address in &e.addresses {
                    let host = endpoint_hostname(e.hostname.as_deref(), address);
                    endpoints.push((address.clone(), host, ports.clone()));
                }
            }
        }
        let cluster_ip = spec.cluster_ip.clone().unwrap_or_default();
        let headless = cluster_ip.is_empty() || cluster_ip == "None";
        for (address, host, _) in &endpoints {
            let Ok(ip) = address.parse::<Ipv4Addr>() else {
                continue;
            };
            let owner = format!("{host}.{base}");
            self.add(&owner, RData::A(A(ip)));
            if headless {
                self.add(&base, RData::A(A(ip)));
                if let Some(target) = name(&owner) {
                    self.add(&reverse_name(ip), RData::PTR(PTR(target)));
                }
            }
        }
        if !headless {
            if let Ok(ip) = cluster_ip.parse::<Ipv4Addr>() {
                self.add(&base, RData::A(A(ip)));
                if let Some(target) = name(&base) {
                    self.add(&reverse_name(ip), RData::PTR(PTR(target)));
                }
            }
        }
        for port in spec.ports.iter().flatten() {
            let Some(port_name) = port.name.as_deref().filter(|n| !n.is_empty()) else {
                continue;
            };
            let protocol = port.protocol.clone().unwrap_or_else(|| "TCP".into());
            let owner = format!("_{port_name}._{}.{base}", protocol.to_ascii_lowercase());
            // (port, target) for each SRV record of this port.
            let targets: BTreeSet<(u16, String)> = if headless {
                endpoints
                    .iter()
                    .filter_map(|(_, host, ports)| {
                        let (_, _, number) = ports
                            .iter()
                            .find(|(n, p, _)| n == port_name && *p == protocol)?;
                        Some((*number, format!("{host}.{base}")))
                    })
                    .collect()
            } else {
                u16::try_from(port.port)
                    .ok()
                    .map(|p| (p, base.clone()))
                    .into_iter()
                    .collect()
            };
            // CoreDNS's weights: an equal share of 100 each, at least 1.
            let weight = u16::try_from(100 / targets.len().max(1))
                .unwrap_or(1)
                .max(1);
            for (number, target) in targets {
                if let Some(target) = name(&target) {
                    self.add(&owner, RData::SRV(SRV::new(0, weight, number, target)));
                }
            }
        }
    }

    /// The answer to a query for `qname` (fully qualified, any case) of type `qtype`.
    pub fn lookup(&self, qname: &str, qtype: RecordType) -> Answer {
        let qname = qname.to_ascii_lowercase();
        if let Some(found) = self.records.get(&(qname.clone(), qtype)) {
            return Answer::Records(found.clone());
        }
        // An alias answers every type (the client follows it).
        if let Some(found) = self.records.get(&(qname.clone(), RecordType::CNAME)) {
            return Answer::Records(found.clone());
        }
        if let Some(ip) = self.pod_address(&qname) {
            return match qtype {
                RecordType::A => match name(&qname) {
                    Some(n) => Answer::Records(vec![Record::from_rdata(n, TTL, RData::A(A(ip)))]),
                    None => Answer::NxDomain,
                },
                _ => Answer::NoData,
            };
        }
        if self.names.contains(&qname) {
            Answer::NoData
        } else {
            Answer::NxDomain
        }
    }

    /// `10-88-0-5.<ns>.pod.<domain>.` → 10.88.0.5 (any namespace; not checked against
    /// the pods, as CoreDNS's `pods insecure`).
    fn pod_address(&self, qname: &str) -> Option<Ipv4Addr> {
        let rest = qname.strip_suffix(&format!(".pod.{}", self.zone))?;
        let (dashed, namespace) = rest.split_once('.')?;
        if namespace.is_empty() || namespace.contains('.') {
            return None;
        }
        dashed.replace('-', ".").parse().ok()
    }

    /// Whether `qname` is a reverse name of an address this knows.
    pub fn has_reverse(&self, qname: &str) -> bool {
        self.records
            .contains_key(&(qname.to_ascii_lowercase(), RecordType::PTR))
    }

    /// The zone apex (`cluster.local.`).
    pub fn zone(&self) -> &str {
        &self.zone
    }
}

#[cfg(test)]
mod tests;
