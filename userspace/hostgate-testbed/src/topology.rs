//! A node with an uplink to a client and veths to containers, all in
//! namespaces of their own, addressed from the documentation ranges:
//!
//! ```text
//!  client ns                node ns                       container ns (i = 1..)
//!  eth0 198.18.0.2/24 ---- uplink0 198.18.0.1/24
//!       2001:db8:18::2/64          2001:db8:18::1/64
//!                           hgc<i> 198.51.100.<4i+1>/30 ---- eth0 198.51.100.<4i+2>/30
//!                                  2001:db8:51:<i>::1/64          2001:db8:51:<i>::2/64
//! ```
//! Neighbour entries on the uplink are static, so no ARP or NDP traffic
//! appears on it unless a test makes some: counters can be checked exactly.
//! No namespace has a route beyond this topology.

use std::net::{Ipv4Addr, Ipv6Addr};

use crate::{netns::Netns, unique_name, TestbedError};

pub const NODE_UPLINK: &str = "uplink0";
pub const CLIENT_IFACE: &str = "eth0";
pub const CONTAINER_IFACE: &str = "eth0";
pub const NODE_MAC: [u8; 6] = [0x02, 0x68, 0x67, 0x00, 0x00, 0x01];
pub const CLIENT_MAC: [u8; 6] = [0x02, 0x68, 0x67, 0x00, 0x00, 0x02];
pub const NODE_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
pub const CLIENT_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
pub const NODE_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x18, 0, 0, 0, 0, 1);
pub const CLIENT_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x18, 0, 0, 0, 0, 2);

/// A container behind the node.
#[derive(Debug)]
pub struct Container {
    pub ns: Netns,
    /// The veth's name on the node side.
    pub node_iface: String,
    pub v4: Ipv4Addr,
    pub gateway_v4: Ipv4Addr,
    pub v6: Ipv6Addr,
}

/// The whole topology; dropping it deletes every namespace (and so every link).
#[derive(Debug)]
pub struct NodeTopology {
    // Containers and client first: drop order does not matter for cleanup,
    // but the node goes last so its links' peers are already gone.
    pub containers: Vec<Container>,
    pub client: Netns,
    pub node: Netns,
}

fn fmt_mac(mac: [u8; 6]) -> String {
    mac.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

impl NodeTopology {
    /// Builds a node named after `purpose` with `containers` containers.
    pub fn build(purpose: &str, containers: usize) -> Result<Self, TestbedError> {
        let base = unique_name(purpose);
        Self::build_named(&base, containers)
    }

    /// Builds with fixed namespace names `<base>-node`, `<base>-client`, `<base>-c<i>`.
    pub fn build_named(base: &str, containers: usize) -> Result<Self, TestbedError> {
        let node = Netns::create(&format!("{base}-node"))?;
        let client = Netns::create(&format!("{base}-client"))?;
        let mut topo = NodeTopology { containers: Vec::new(), client, node };
        for ns in [&topo.node, &topo.client] {
            ns.sysctl("net.ipv6.conf.default.accept_dad", "0")?;
            ns.sysctl("net.ipv6.conf.default.router_solicitations", "0")?;
        }
        topo.node.sysctl("net.ipv4.ip_forward", "1")?;
        topo.node.sysctl("net.ipv6.conf.all.forwarding", "1")?;
        topo.link_uplink()?;
        for i in 1..=containers {
            topo.add_container(i)?;
        }
        Ok(topo)
    }

    fn link_uplink(&self) -> Result<(), TestbedError> {
        let (node, client) = (&self.node, &self.client);
        node.ip(["link", "add", NODE_UPLINK, "type", "veth", "peer", "name", CLIENT_IFACE, "netns", client.name()])?;
        node.ip(["link", "set", NODE_UPLINK, "address", &fmt_mac(NODE_MAC)])?;
        client.ip(["link", "set", CLIENT_IFACE, "address", &fmt_mac(CLIENT_MAC)])?;
        for (ns, dev, v4, v6, peer_v4, peer_v6, peer_mac) in [
            (node, NODE_UPLINK, NODE_V4, NODE_V6, CLIENT_V4, CLIENT_V6, CLIENT_MAC),
            (client, CLIENT_IFACE, CLIENT_V4, CLIENT_V6, NODE_V4, NODE_V6, NODE_MAC),
        ] {
            ns.ip(["addr", "add", &format!("{v4}/24"), "dev", dev])?;
            ns.ip(["addr", "add", &format!("{v6}/64"), "dev", dev, "nodad"])?;
            ns.ip(["link", "set", dev, "up"])?;
            for peer in [peer_v4.to_string(), peer_v6.to_string()] {
                ns.ip(["neigh", "replace", &peer, "lladdr", &fmt_mac(peer_mac), "dev", dev, "nud", "permanent"])?;
            }
        }
        // A physical uplink delivers frames with complete checksums; a veth
        // would pass the client's checksum offload (CHECKSUM_PARTIAL) along,
        // which XDP cannot see. Emulate the wire.
        client.exec("ethtool", ["-K", CLIENT_IFACE, "tx", "off"])?;
        // The client reaches containers and customer IPs through the node.
        for prefix in ["198.51.100.0/24", "203.0.113.0/24"] {
            client.ip(["route", "add", prefix, "via", &NODE_V4.to_string()])?;
        }
        for prefix in ["2001:db8:51::/48", "2001:db8:113::/48"] {
            client.ip(["-6", "route", "add", prefix, "via", &NODE_V6.to_string()])?;
        }
        Ok(())
    }

    fn add_container(&mut self, i: usize) -> Result<(), TestbedError> {
        let name = format!("{}-c{i}", self.node.name().trim_end_matches("-node"));
        let c = attach_container(&self.node, &name, i)?;
        self.containers.push(c);
        Ok(())
    }

    /// The node-side names of the container veths.
    pub fn container_ifaces(&self) -> Vec<String> {
        self.containers.iter().map(|c| c.node_iface.clone()).collect()
    }
}

/// Creates container namespace `name` behind `node` as its `i`-th container.
fn attach_container(node: &Netns, name: &str, i: usize) -> Result<Container, TestbedError> {
    let ns = Netns::create(name)?;
    ns.sysctl("net.ipv6.conf.default.accept_dad", "0")?;
    let node_iface = format!("hgc{i}");
    node.ip(["link", "add", &node_iface, "type", "veth", "peer", "name", CONTAINER_IFACE, "netns", ns.name()])?;
    let octet = |n: usize| u8::try_from(4 * i + n).map_err(|_| std::io::Error::other("too many containers"));
    let gateway_v4 = Ipv4Addr::new(198, 51, 100, octet(1)?);
    let v4 = Ipv4Addr::new(198, 51, 100, octet(2)?);
    let gateway_v6 = Ipv6Addr::new(0x2001, 0xdb8, 0x51, i as u16, 0, 0, 0, 1);
    let v6 = Ipv6Addr::new(0x2001, 0xdb8, 0x51, i as u16, 0, 0, 0, 2);
    node.ip(["addr", "add", &format!("{gateway_v4}/30"), "dev", &node_iface])?;
    node.ip(["addr", "add", &format!("{gateway_v6}/64"), "dev", &node_iface, "nodad"])?;
    node.ip(["link", "set", &node_iface, "up"])?;
    ns.ip(["addr", "add", &format!("{v4}/30"), "dev", CONTAINER_IFACE])?;
    ns.ip(["addr", "add", &format!("{v6}/64"), "dev", CONTAINER_IFACE, "nodad"])?;
    ns.ip(["link", "set", CONTAINER_IFACE, "up"])?;
    // XDP_REDIRECT into a veth is dropped unless the receiving end runs
    // NAPI: GRO on the container side turns it on (as a container runtime
    // would be asked to).
    ns.exec("ethtool", ["-K", CONTAINER_IFACE, "gro", "on"])?;
    ns.ip(["route", "add", "198.18.0.0/15", "via", &gateway_v4.to_string()])?;
    ns.ip(["route", "add", "203.0.113.0/24", "via", &gateway_v4.to_string()])?;
    ns.ip(["-6", "route", "add", "2001:db8::/32", "via", &gateway_v6.to_string()])?;
    Ok(Container { ns, node_iface, v4, gateway_v4, v6 })
}

/// A node of a [`ClusterTopology`].
#[derive(Debug)]
pub struct ClusterNode {
    pub containers: Vec<Container>,
    pub ns: Netns,
    pub v4: Ipv4Addr,
    pub v6: Ipv6Addr,
}

/// Several nodes and a client on one L2 segment (a bridge in a switch
/// namespace), each node with its own containers:
///
/// ```text
///  client 198.18.0.100 --+
///  node 1 198.18.0.1   --+-- br0 (switch ns)
///  node 2 198.18.0.2   --+
/// ```
/// The client sends customer-IP traffic to node 1. Every node reaches the
/// client directly, which direct server return needs.
#[derive(Debug)]
pub struct ClusterTopology {
    pub nodes: Vec<ClusterNode>,
    pub client: Netns,
    pub switch: Netns,
}

pub const CLUSTER_CLIENT_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 100);

/// Cluster node `index`'s (from 0) address on the shared segment, known
/// before the topology is built (a node's config may have to name it).
pub fn cluster_node_v4(index: usize) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, 0, (index + 1) as u8)
}
/// The cluster store's address on the control network.
pub const CONTROL_STORE_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 254);
/// Each node's interface on the control network.
pub const CONTROL_IFACE: &str = "ctl0";
pub const CLUSTER_CLIENT_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x18, 0, 0, 0, 0, 0x100);

impl ClusterTopology {
    /// `containers[i]` containers behind node i+1. `pass_object` is a BPF
    /// object with an XDP pass program in section `xdp`: it goes on every
    /// switch port so frames the nodes send with XDP_TX are accepted (veth
    /// drops them otherwise).
    pub fn build(purpose: &str, containers: &[usize], pass_object: &std::path::Path) -> Result<Self, TestbedError> {
        let base = unique_name(purpose);
        let switch = Netns::create(&format!("{base}-sw"))?;
        switch.ip(["link", "add", "br0", "type", "bridge"])?;
        switch.ip(["link", "set", "br0", "up"])?;
        let client = Netns::create(&format!("{base}-client"))?;
        let mut topo = ClusterTopology { nodes: Vec::new(), client, switch };
        topo.plug(&topo.client, CLIENT_IFACE, "pc", pass_object)?;
        let client = &topo.client;
        client.ip(["addr", "add", &format!("{CLUSTER_CLIENT_V4}/24"), "dev", CLIENT_IFACE])?;
        client.ip(["addr", "add", &format!("{CLUSTER_CLIENT_V6}/64"), "dev", CLIENT_IFACE, "nodad"])?;
        client.ip(["link", "set", CLIENT_IFACE, "up"])?;
        client.exec("ethtool", ["-K", CLIENT_IFACE, "tx", "off"])?;
        client.ip(["route", "add", "203.0.113.0/24", "via", "198.18.0.1"])?;
        client.ip(["-6", "route", "add", "2001:db8:113::/48", "via", "2001:db8:18::1"])?;
        for (n, count) in containers.iter().enumerate() {
            let idx = n + 1;
            let ns = Netns::create(&format!("{base}-n{idx}"))?;
            ns.sysctl("net.ipv6.conf.default.accept_dad", "0")?;
            ns.sysctl("net.ipv4.ip_forward", "1")?;
            ns.sysctl("net.ipv6.conf.all.forwarding", "1")?;
            topo.plug(&ns, NODE_UPLINK, &format!("p{idx}"), pass_object)?;
            let v4 = cluster_node_v4(n);
            let v6 = Ipv6Addr::new(0x2001, 0xdb8, 0x18, 0, 0, 0, 0, idx as u16);
            ns.ip(["addr", "add", &format!("{v4}/24"), "dev", NODE_UPLINK])?;
            ns.ip(["addr", "add", &format!("{v6}/64"), "dev", NODE_UPLINK, "nodad"])?;
            ns.ip(["link", "set", NODE_UPLINK, "up"])?;
            let mut node = ClusterNode { containers: Vec::new(), ns, v4, v6 };
            for i in 1..=*count {
                let c = attach_container(&node.ns, &format!("{base}-n{idx}c{i}"), i)?;
                node.containers.push(c);
            }
            topo.nodes.push(node);
        }
        Ok(topo)
    }

    /// Adds a control network for a cluster store: bridge `br1` in the
    /// switch namespace holding [`CONTROL_STORE_V4`] (where the test's etcd
    /// listens), and on every node an interface `ctl0` with 198.18.1.N/24
    /// on switch port `cN`. Cutting `cN` ([`Self::cut_control`]) separates
    /// node N from the store while its uplink still sees clients.
    pub fn add_control_network(&self) -> Result<(), TestbedError> {
        self.switch.ip(["link", "add", "br1", "type", "bridge"])?;
        self.switch.ip(["addr", "add", &format!("{CONTROL_STORE_V4}/24"), "dev", "br1"])?;
        self.switch.ip(["link", "set", "br1", "up"])?;
        for (i, node) in self.nodes.iter().enumerate() {
            let port = format!("c{}", i + 1);
            self.switch.ip([
                "link",
                "add",
                &port,
                "type",
                "veth",
                "peer",
                "name",
                CONTROL_IFACE,
                "netns",
                node.ns.name(),
            ])?;
            self.switch.ip(["link", "set", &port, "master", "br1"])?;
            self.switch.ip(["link", "set", &port, "up"])?;
            node.ns.ip(["addr", "add", &format!("198.18.1.{}/24", i + 1), "dev", CONTROL_IFACE])?;
            node.ns.ip(["link", "set", CONTROL_IFACE, "up"])?;
        }
        Ok(())
    }

    /// Cuts (or restores) node `index`'s (0-based) link to the control network.
    pub fn cut_control(&self, index: usize, cut: bool) -> Result<(), TestbedError> {
        let port = format!("c{}", index + 1);
        self.switch.ip(["link", "set", &port, if cut { "down" } else { "up" }])?;
        Ok(())
    }

    /// Makes the client reach customer IPs directly on the segment (ARP /
    /// NDP), as an upstream router does, instead of through node 1: the
    /// node that announces an IP gets its traffic.
    pub fn client_on_link(&self) -> Result<(), TestbedError> {
        self.client.ip(["route", "replace", "203.0.113.0/24", "dev", CLIENT_IFACE])?;
        self.client.ip(["-6", "route", "replace", "2001:db8:113::/48", "dev", CLIENT_IFACE])?;
        Ok(())
    }

    /// Connects `ns` (as `iface`) to the bridge through port `port`.
    fn plug(&self, ns: &Netns, iface: &str, port: &str, pass_object: &std::path::Path) -> Result<(), TestbedError> {
        self.switch.ip(["link", "add", port, "type", "veth", "peer", "name", iface, "netns", ns.name()])?;
        self.switch.ip(["link", "set", port, "master", "br0"])?;
        self.switch.ip(["link", "set", port, "up"])?;
        let object = pass_object.to_string_lossy();
        self.switch.ip(["link", "set", "dev", port, "xdp", "obj", object.as_ref(), "sec", "xdp"])?;
        Ok(())
    }
}
