//! Pod CIDRs for nodes: the cluster CIDR split into one range per node (the job of
//! Kubernetes' node IPAM controller). A registering node gets the lowest range no other
//! node holds. Pure address arithmetic; the caller stores the result.

use std::net::Ipv4Addr;

/// An IPv4 network, `10.88.0.0/16`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    pub addr: Ipv4Addr,
    pub prefix: u8,
}

impl std::str::FromStr for Cidr {
    type Err = String;

    fn from_str(text: &str) -> Result<Cidr, String> {
        let bad = || format!("{text:?} is not an IPv4 CIDR (example: 10.88.0.0/16)");
        let (addr, prefix) = text.split_once('/').ok_or_else(bad)?;
        let addr: Ipv4Addr = addr.parse().map_err(|_| bad())?;
        let prefix: u8 = prefix.parse().map_err(|_| bad())?;
        if prefix > 32 {
            return Err(bad());
        }
        let cidr = Cidr { addr, prefix };
        if cidr.network() != addr {
            return Err(format!(
                "{text:?} has host bits set (did you mean {}/{prefix}?)",
                cidr.network()
            ));
        }
        Ok(cidr)
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl Cidr {
    fn mask(prefix: u8) -> u32 {
        if prefix == 0 {
            0
        } else {
            u32::MAX << (32 - prefix)
        }
    }

    fn network(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) & Cidr::mask(self.prefix))
    }

    /// Whether the two networks share an address.
    pub fn overlaps(&self, other: &Cidr) -> bool {
        let shorter = self.prefix.min(other.prefix);
        let mask = Cidr::mask(shorter);
        u32::from(self.addr) & mask == u32::from(other.addr) & mask
    }

    /// The `index`-th range of size `/node_prefix` inside this network, if there is one.
    pub fn subnet(&self, node_prefix: u8, index: u32) -> Option<Cidr> {
        if node_prefix < self.prefix || node_prefix > 32 {
            return None;
        }
        let count = 1u64 << (node_prefix - self.prefix);
        if u64::from(index) >= count {
            return None;
        }
        let step = 1u64 << (32 - node_prefix);
        let addr = u64::from(u32::from(self.network())) + u64::from(index) * step;
        Some(Cidr {
            addr: Ipv4Addr::from(addr as u32),
            prefix: node_prefix,
        })
    }
}

/// The first `/node_prefix` range of `cluster` that is not in `taken`.
pub fn allocate(cluster: Cidr, node_prefix: u8, taken: &[String]) -> Option<Cidr> {
    (0..)
        .map_while(|i| cluster.subnet(node_prefix, i))
        .find(|c| !taken.contains(&c.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodes_get_the_lowest_free_range() {
        let cluster: Cidr = "10.88.0.0/16".parse().unwrap();
        assert_eq!(
            allocate(cluster, 24, &[]).unwrap().to_string(),
            "10.88.0.0/24"
        );
        let taken = vec!["10.88.0.0/24".to_string(), "10.88.2.0/24".to_string()];
        assert_eq!(
            allocate(cluster, 24, &taken).unwrap().to_string(),
            "10.88.1.0/24"
        );
        assert!(cluster.overlaps(&"10.88.7.0/24".parse().unwrap()));
        assert!(!cluster.overlaps(&"10.96.0.0/16".parse().unwrap()));
        let small: Cidr = "10.0.0.0/23".parse().unwrap();
        let full = vec!["10.0.0.0/24".to_string(), "10.0.1.0/24".to_string()];
        assert_eq!(allocate(small, 24, &full), None);
    }

    #[test]
    fn bad_cidrs_are_explained() {
        assert!("10.88.0.0".parse::<Cidr>().is_err());
        assert!("10.88.1.0/16"
            .parse::<Cidr>()
            .unwrap_err()
            .contains("10.88.0.0/16"));
        assert!("300.1.1.1/8".parse::<Cidr>().is_err());
    }
}
