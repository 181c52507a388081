//! The service proxy's rules, as kube-proxy's iptables mode writes them
//! (`syncProxyRules`): one `iptables-restore` text for the `nat` and `filter` tables.
//!
//! - `KUBE-SERVICES` (jumped to from PREROUTING and OUTPUT) matches each cluster IP and
//!   port and jumps to that port's `KUBE-SVC-<hash>`; its last rule sends traffic to the
//!   node's own addresses to `KUBE-NODEPORTS`, which jumps to `KUBE-EXT-<hash>` (marked
//!   for masquerade) and on to the same `KUBE-SVC-`.
//! - `KUBE-SVC-` marks traffic from outside the pod range for masquerade, then picks an
//!   endpoint: `statistic --mode random` with probability 1/n, 1/(n-1) … so each is
//!   equally likely (with ClientIP affinity, `recent` first sends a client back to its
//!   endpoint); each `KUBE-SEP-<hash>` marks a pod reaching itself (hairpin) and DNATs.
//! - `KUBE-POSTROUTING` masquerades what was marked; the filter table's `KUBE-SERVICES`
//!   rejects connections to a Service with no ready endpoint.
//!
//! Chain names hash the port's `namespace/name:port` and protocol (and the endpoint) as
//! kube-proxy does: the same Service has the same chains on every node. Pure text.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use sha2::{Digest, Sha256};

/// One Service port and the endpoints it balances across.
#[derive(Clone, Debug, PartialEq)]
pub struct ServicePort {
    /// `namespace/name:port-name` (`:port-name` only when the port has a name).
    pub name: String,
    pub cluster_ip: String,
    pub port: i32,
    /// `tcp`, `udp` or `sctp`.
    pub protocol: String,
    pub node_port: Option<i32>,
    /// ClientIP session affinity, its timeout in seconds.
    pub affinity_seconds: Option<i32>,
    /// `ip:port` of each ready endpoint, sorted.
    pub endpoints: Vec<String>,
}

/// The top-level chains this proxy owns, with the built-in chains that jump to them.
pub const JUMPS: &[(&str, &str, &str, &str)] = &[
    (
        "nat",
        "PREROUTING",
        "KUBE-SERVICES",
        "kubernetes service portals",
    ),
    (
        "nat",
        "OUTPUT",
        "KUBE-SERVICES",
        "kubernetes service portals",
    ),
    (
        "nat",
        "POSTROUTING",
        "KUBE-POSTROUTING",
        "kubernetes postrouting rules",
    ),
    (
        "filter",
        "FORWARD",
        "KUBE-SERVICES",
        "kubernetes service portals",
    ),
    (
        "filter",
        "OUTPUT",
        "KUBE-SERVICES",
        "kubernetes service portals",
    ),
];

/// RFC 4648 base32 (no padding), as Go's `base32.StdEncoding` for whole 5-byte groups.
fn base32(bytes: &[u8]) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut out = String::new();
    let (mut buffer, mut bits) = (0u64, 0u32);
    for &b in bytes {
        buffer = (buffer << 8) | u64::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(char::from(ALPHABET[((buffer >> bits) & 31) as usize]));
        }
    }
    if bits > 0 {
        out.push(char::from(ALPHABET[((buffer << (5 - bits)) & 31) as usize]));
    }
    out
}

/// `PREFIX` + the first 16 characters of base32(sha256(input)).
fn chain(prefix: &str, input: &str) -> String {
    let hash = base32(&Sha256::digest(input.as_bytes()));
    format!("{prefix}{}", &hash[..16])
}

pub fn svc_chain(p: &ServicePort) -> String {
    chain("KUBE-SVC-", &format!("{}{}", p.name, p.protocol))
}

fn ext_chain(p: &ServicePort) -> String {
    chain("KUBE-EXT-", &format!("{}{}", p.name, p.protocol))
}

fn sep_chain(p: &ServicePort, endpoint: &str) -> String {
    chain("KUBE-SEP-", &format!("{}{}{endpoint}", p.name, p.protocol))
}

/// The `iptables-restore --noflush` text that makes the tables say exactly `ports`;
/// `stale` are chains of earlier runs (from `iptables-save`) to delete.
pub fn restore_text(ports: &[ServicePort], pod_cidr: &str, stale: &BTreeSet<String>) -> String {
    let mut chains: Vec<String> = Vec::new();
    let mut rules = String::new();
    let mut nodeports = String::new();
    let mut rejects = String::new();
    for p in ports {
        let comment = format!("\"{}\"", p.name);
        let proto = &p.protocol;
        let svc = svc_chain(p);
        if p.endpoints.is_empty() {
            let _ = writeln!(
                rejects,
                "-A KUBE-SERVICES -m comment --comment \"{} has no endpoints\" -m {proto} -p {proto} -d {}/32 --dport {} -j REJECT",
                p.name, p.cluster_ip, p.port
            );
            continue;
        }
        chains.push(svc.clone());
        let _ = writeln!(
            rules,
            "-A KUBE-SERVICES -m comment --comment \"{} cluster IP\" -m {proto} -p {proto} -d {}/32 --dport {} -j {svc}",
            p.name, p.cluster_ip, p.port
        );
        let _ = writeln!(
            rules,
            "-A {svc} -m comment --comment \"{} cluster IP\" -m {proto} -p {proto} -d {}/32 --dport {} ! -s {pod_cidr} -j KUBE-MARK-MASQ",
            p.name, p.cluster_ip, p.port
        );
        if let Some(node_port) = p.node_port {
            let ext = ext_chain(p);
            chains.push(ext.clone());
            let _ = writeln!(
                nodeports,
                "-A KUBE-NODEPORTS -m comment --comment {comment} -m {proto} -p {proto} --dport {node_port} -j {ext}"
            );
            let _ = writeln!(
                rules,
                "-A {ext} -m comment --comment \"masquerade traffic for {} external destinations\" -j KUBE-MARK-MASQ\n-A {ext} -j {svc}",
                p.name
            );
        }
        let seps: Vec<String> = p.endpoints.iter().map(|e| sep_chain(p, e)).collect();
        if let Some(seconds) = p.affinity_seconds {
            for sep in &seps {
                let _ = writeln!(
                    rules,
                    "-A {svc} -m comment --comment {comment} -m recent --name {sep} --rcheck --seconds {seconds} --reap -j {sep}"
                );
            }
        }
        let n = seps.len();
        for (i, (sep, endpoint)) in seps.iter().zip(&p.endpoints).enumerate() {
            let to = format!("-m comment --comment \"{} -> {endpoint}\"", p.name);
            if i + 1 < n {
                let probability = 1.0 / (n - i) as f64;
                let _ = writeln!(
                    rules,
                    "-A {svc} {to} -m statistic --mode random --probability {probability:.10} -j {sep}"
                );
            } else {
                let _ = writeln!(rules, "-A {svc} {to} -j {sep}");
            }
            let ip = endpoint
                .rsplit_once(':')
                .map_or(endpoint.as_str(), |(ip, _)| ip);
            let recent = match p.affinity_seconds {
                Some(_) => format!(" -m recent --name {sep} --set"),
                None => String::new(),
            };
            chains.push(sep.clone());
            let _ = writeln!(
                rules,
                "-A {sep} -m comment --comment {comment} -s {ip}/32 -j KUBE-MARK-MASQ\n-A {sep} -m comment --comment {comment} -m {proto} -p {proto}{recent} -j DNAT --to-destination {endpoint}"
            );
        }
    }
    let mut nat = String::from("*nat\n");
    let owned: BTreeSet<&str> = chains.iter().map(String::as_str).collect();
    for c in [
        "KUBE-SERVICES",
        "KUBE-NODEPORTS",
        "KUBE-POSTROUTING",
        "KUBE-MARK-MASQ",
    ]
    .into_iter()
    .chain(owned.iter().copied())
    .chain(
        stale
            .iter()
            .map(String::as_str)
            .filter(|c| !owned.contains(c)),
    ) {
        let _ = writeln!(nat, ":{c} - [0:0]");
    }
    nat.push_str(
        "-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN\n\
         -A KUBE-POSTROUTING -j MARK --xor-mark 0x4000\n\
         -A KUBE-POSTROUTING -m comment --comment \"kubernetes service traffic requiring SNAT\" -j MASQUERADE --random-fully\n\
         -A KUBE-MARK-MASQ -j MARK --or-mark 0x4000\n",
    );
    nat.push_str(&rules);
    nat.push_str(&nodeports);
    nat.push_str(
        "-A KUBE-SERVICES -m comment --comment \"kubernetes service nodeports; NOTE: this must be the last rule in this chain\" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS\n",
    );
    for c in stale.iter().filter(|c| !owned.contains(c.as_str())) {
        let _ = writeln!(nat, "-X {c}");
    }
    nat.push_str("COMMIT\n*filter\n:KUBE-SERVICES - [0:0]\n");
    nat.push_str(&rejects);
    nat.push_str("COMMIT\n");
    nat
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_names_hash_as_kube_proxy_does() {
        let p = ServicePort {
            name: "ns1/svc1:p80".into(),
            cluster_ip: "172.30.0.41".into(),
            port: 80,
            protocol: "tcp".into(),
            node_port: None,
            affinity_seconds: None,
            endpoints: vec![],
        };
        // kube-proxy's own test names this chain so.
        assert_eq!(svc_chain(&p), "KUBE-SVC-XPGD46QRK7WJZT7O");
    }

    #[test]
    fn endpoints_share_traffic_evenly_and_the_last_takes_the_rest() {
        let p = ServicePort {
            name: "default/web".into(),
            cluster_ip: "10.96.5.6".into(),
            port: 80,
            protocol: "tcp".into(),
            node_port: Some(30080),
            affinity_seconds: None,
            endpoints: vec![
                "10.1.0.2:8080".into(),
                "10.1.0.3:8080".into(),
                "10.1.0.4:8080".into(),
            ],
        };
        let text = restore_text(
            &[p],
            "10.1.0.0/16",
            &BTreeSet::from(["KUBE-SVC-OLDOLDOLDOLDOLDO".into()]),
        );
        assert!(text.contains("--probability 0.3333333333"));
        assert!(text.contains("--probability 0.5000000000"));
        assert_eq!(text.matches("-j DNAT --to-destination").count(), 3);
        assert!(text.contains("--dport 30080 -j KUBE-EXT-"));
        assert!(text.contains("-X KUBE-SVC-OLDOLDOLDOLDOLDO"));
        // NodePorts stay last in KUBE-SERVICES.
        let last = text
            .lines()
            .filter(|l| l.starts_with("-A KUBE-SERVICES"))
            .take_while(|l| !l.contains("REJECT"))
            .last()
            .unwrap_or("");
        assert!(last.contains("KUBE-NODEPORTS"), "{last}");
    }
}
