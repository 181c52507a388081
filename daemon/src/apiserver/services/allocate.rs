//! Cluster IPs and node ports for Services (kube-apiserver's service IP and node port
//! allocators): a new Service gets a random free address of `--service-cluster-ip-range`
//! (above the first 256 or a sixteenth of the range, which stay for addresses asked for
//! by name, as the `kubernetes` Service's first one), and a NodePort Service a random
//! free port of 30000–32767 (above the first 86). What is taken is read from the other
//! Services each time, so nothing is kept to drift. Pure functions.

use std::collections::HashSet;
use std::net::Ipv4Addr;

use crate::apiserver::node_ipam::Cidr;

pub const NODE_PORTS: std::ops::RangeInclusive<i32> = 30000..=32767;
/// Ports below `30000 + NODE_PORT_OFFSET` are handed out only when the rest are taken.
const NODE_PORT_OFFSET: i32 = 86;

/// The usable addresses of a range: its first is the network's next one; IPv4's network
/// and broadcast addresses are not handed out.
fn usable(range: Cidr) -> (u32, u32) {
    let size = 1u64 << (32 - u32::from(range.prefix.min(32)));
    let base = u32::from(range.addr).saturating_add(1);
    let count = u32::try_from(size.saturating_sub(2)).unwrap_or(u32::MAX);
    (base, count)
}

/// The range's first usable address: the `kubernetes` Service's.
pub fn first_ip(range: Cidr) -> Ipv4Addr {
    Ipv4Addr::from(usable(range).0)
}

/// The range's tenth address: the cluster DNS's (kubeadm's choice), or the last one of a
/// range too small.
pub fn dns_ip(range: Cidr) -> Ipv4Addr {
    let (base, count) = usable(range);
    Ipv4Addr::from(base.saturating_add(9.min(count.saturating_sub(1))))
}

pub fn contains(range: Cidr, ip: Ipv4Addr) -> bool {
    let (base, count) = usable(range);
    let ip = u32::from(ip);
    ip >= base && u64::from(ip) < u64::from(base) + u64::from(count)
}

/// A free address, random in the upper part of the range, else in the lower part.
pub fn next_ip(range: Cidr, taken: &HashSet<Ipv4Addr>, random: u64) -> Option<Ipv4Addr> {
    let (base, count) = usable(range);
    let offset = (count / 16).clamp(16.min(count), 256);
    let pick = |from: u32, to: u32| -> Option<Ipv4Addr> {
        let span = to.checked_sub(from).filter(|s| *s > 0)?;
        let start = u32::try_from(random % u64::from(span)).unwrap_or(0);
        (0..span)
            .map(|i| Ipv4Addr::from(base + from + (start + i) % span))
            .find(|ip| !taken.contains(ip))
    };
    pick(offset, count).or_else(|| pick(0, offset))
}

/// A free node port, random above the offset, else below it.
pub fn next_node_port(taken: &HashSet<i32>, random: u64) -> Option<i32> {
    let (low, high) = (*NODE_PORTS.start(), *NODE_PORTS.end());
    let pick = |from: i32, to: i32| -> Option<i32> {
        let span = to - from + 1;
        let start = i32::try_from(random % u64::try_from(span).ok()?).ok()?;
        (0..span)
            .map(|i| from + (start + i) % span)
            .find(|p| !taken.contains(p))
    };
    pick(low + NODE_PORT_OFFSET, high).or_else(|| pick(low, low + NODE_PORT_OFFSET - 1))
}

/// A random number for the allocators (from the uuid generator's randomness).
pub fn random() -> u64 {
    (uuid::Uuid::new_v4().as_u128() >> 64) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_come_from_the_upper_part_and_never_twice() {
        let range: Cidr = "10.96.0.0/16".parse().unwrap();
        assert_eq!(first_ip(range), Ipv4Addr::new(10, 96, 0, 1));
        let mut taken = HashSet::new();
        for r in 0..50 {
            let ip = next_ip(range, &taken, r * 7919).unwrap();
            assert!(
                u32::from(ip) >= u32::from(Ipv4Addr::new(10, 96, 1, 1)),
                "{ip}"
            );
            assert!(contains(range, ip));
            assert!(taken.insert(ip));
        }
        assert!(!contains(range, Ipv4Addr::new(10, 97, 0, 1)));
        assert!(!contains(range, Ipv4Addr::new(10, 96, 255, 255)));
        // A tiny range fills up, then says so.
        let tiny: Cidr = "10.0.0.0/30".parse().unwrap();
        let mut taken = HashSet::new();
        for r in 0..2 {
            taken.insert(next_ip(tiny, &taken, r).unwrap());
        }
        assert_eq!(next_ip(tiny, &taken, 3), None);
    }

    #[test]
    fn node_ports_stay_in_range() {
        let mut taken = HashSet::new();
        for r in 0..3000 {
            match next_node_port(&taken, r * 31) {
                Some(p) => assert!(NODE_PORTS.contains(&p) && taken.insert(p)),
                None => break,
            }
        }
        assert_eq!(taken.len(), 2768);
    }
}
