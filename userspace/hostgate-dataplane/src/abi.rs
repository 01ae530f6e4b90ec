//! Rust mirror of `xdp-ebpf/include/hostgate_abi.h`.
//!
//! Every type here is checked against the BTF of the built object by
//! `btf_layout::tests`, so a change on one side alone fails the tests.

use serde::Serialize;

/// Layout version of every map; part of the pin path (see [`crate::pins`]).
pub const LAYOUT_VERSION: u32 = 4;

/// One slot of `hg_stats`: `struct hg_counter`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Counter {
    pub packets: u64,
    pub bytes: u64,
}

// SAFETY: plain old data: two u64s, no padding, every bit pattern valid.
unsafe impl aya::Pod for Counter {}

impl std::ops::AddAssign for Counter {
    fn add_assign(&mut self, rhs: Self) {
        self.packets += rhs.packets;
        self.bytes += rhs.bytes;
    }
}

/// Declares a `#[repr(u32)]` enum mirroring a C enum, with its C names, its
/// display names and the list of all variants (excluding the C `*_MAX`).
macro_rules! abi_enum {
    ($(#[$m:meta])* $name:ident, $c_name:literal, max = $c_max:expr, {
        $($variant:ident = $value:literal, $c_variant:literal, $display:literal;)*
    }) => {
        $(#[$m])*
        #[repr(u32)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $name { $($variant = $value,)* }

        impl $name {
            /// Every variant, in value order.
            pub const ALL: &'static [$name] = &[$($name::$variant,)*];
            /// Name of the C enum this mirrors.
            pub const C_NAME: &'static str = $c_name;
            /// Name of the C enumerator that counts the variants, if any.
            pub const C_MAX: Option<&'static str> = $c_max;
            /// Number of variants, the value of the C `*_MAX`.
            pub const COUNT: u32 = Self::ALL.len() as u32;

            /// The C enumerator's name.
            pub fn c_name(self) -> &'static str {
                match self { $($name::$variant => $c_variant,)* }
            }

            /// Short name for tables and JSON.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $display,)* }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

abi_enum!(
    /// Where a program is attached: `enum hg_hook`.
    Hook, "hg_hook", max = Some("HG_HOOK_MAX"), {
        XdpUplink = 0, "HG_HOOK_XDP_UPLINK", "xdp-uplink";
        TcContainer = 1, "HG_HOOK_TC_CONTAINER", "tc-container";
    }
);

abi_enum!(
    /// Protocol class of a packet: `enum hg_proto`.
    Proto, "hg_proto", max = Some("HG_PROTO_MAX"), {
        NonIp = 0, "HG_PROTO_NON_IP", "non-ip";
        Ipv4Tcp = 1, "HG_PROTO_IPV4_TCP", "ipv4-tcp";
        Ipv4Udp = 2, "HG_PROTO_IPV4_UDP", "ipv4-udp";
        Ipv4Icmp = 3, "HG_PROTO_IPV4_ICMP", "ipv4-icmp";
        Ipv4Other = 4, "HG_PROTO_IPV4_OTHER", "ipv4-other";
        Ipv4Fragment = 5, "HG_PROTO_IPV4_FRAGMENT", "ipv4-fragment";
        Ipv6Tcp = 6, "HG_PROTO_IPV6_TCP", "ipv6-tcp";
        Ipv6Udp = 7, "HG_PROTO_IPV6_UDP", "ipv6-udp";
        Ipv6Icmp = 8, "HG_PROTO_IPV6_ICMP", "ipv6-icmp";
        Ipv6Other = 9, "HG_PROTO_IPV6_OTHER", "ipv6-other";
        Ipv6Fragment = 10, "HG_PROTO_IPV6_FRAGMENT", "ipv6-fragment";
        Malformed = 11, "HG_PROTO_MALFORMED", "malformed";
    }
);

abi_enum!(
    /// What a program decided: `enum hg_verdict`.
    Verdict, "hg_verdict", max = Some("HG_VERDICT_MAX"), {
        Pass = 0, "HG_VERDICT_PASS", "pass";
        Drop = 1, "HG_VERDICT_DROP", "drop";
        Tx = 2, "HG_VERDICT_TX", "tx";
        Redirect = 3, "HG_VERDICT_REDIRECT", "redirect";
    }
);

abi_enum!(
    /// Address family in keys: `enum hg_family`.
    Family, "hg_family", max = None, {
        V4 = 4, "HG_FAMILY_V4", "ipv4";
        V6 = 6, "HG_FAMILY_V6", "ipv6";
    }
);

abi_enum!(
    /// Backend forwarding mode: `enum hg_mode`.
    Mode, "hg_mode", max = None, {
        Nat = 0, "HG_MODE_NAT", "nat";
        Dsr = 1, "HG_MODE_DSR", "dsr";
    }
);

abi_enum!(
    /// A firewall decision: `enum hg_fw_action`.
    FwAction, "hg_fw_action", max = None, {
        Allow = 0, "HG_FW_ALLOW", "allow";
        Drop = 1, "HG_FW_DROP", "drop";
        Reject = 2, "HG_FW_REJECT", "reject";
        RateLimit = 3, "HG_FW_RATE_LIMIT", "rate-limit";
    }
);

abi_enum!(
    /// What a monitor event reports: `enum hg_event_kind`.
    EventKind, "hg_event_kind", max = Some("HG_EVENT_KIND_MAX"), {
        FwDrop = 0, "HG_EVENT_FW_DROP", "firewall";
        Spoof = 1, "HG_EVENT_SPOOF", "spoof";
        LbNew = 2, "HG_EVENT_LB_NEW", "lb";
    }
);

impl EventKind {
    pub fn from_u32(v: u32) -> Option<Self> {
        Self::ALL.iter().copied().find(|k| *k as u32 == v)
    }
}

/// What the monitor wants: `struct hg_monitor_cfg` (map `hg_monitor`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MonitorCfg {
    /// Bit `1 << kind` per wanted [`EventKind`].
    pub kinds: u32,
    /// Keep one of this many (0 or 1: all).
    pub sample_every: u32,
}

/// One decision from the ring buffer `hg_events`: `struct hg_event`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Event {
    pub ts_ns: u64,
    pub kind: u32,
    pub hook: u32,
    pub ifindex: u32,
    pub id: u32,
    pub backend_id: u32,
    pub action: u32,
    pub src: [u32; 4],
    pub dst: [u32; 4],
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
    pub family: u8,
    pub pad: [u8; 2],
}

impl Event {
    /// An event from the bytes the ring buffer hands out; `None` if short.
    pub fn from_bytes(b: &[u8]) -> Option<Event> {
        if b.len() < std::mem::size_of::<Event>() {
            return None;
        }
        // SAFETY: the length is checked; Event is plain old data with every
        // bit pattern valid, read unaligned from the ring's bytes.
        Some(unsafe { std::ptr::read_unaligned(b.as_ptr().cast::<Event>()) })
    }

    fn addr(&self, words: [u32; 4]) -> Option<std::net::IpAddr> {
        let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_ne_bytes()).collect();
        match self.family {
            4 => Some(std::net::Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]).into()),
            6 => <[u8; 16]>::try_from(bytes).ok().map(|o| std::net::Ipv6Addr::from(o).into()),
            _ => None,
        }
    }

    pub fn source(&self) -> Option<std::net::IpAddr> {
        self.addr(self.src)
    }

    pub fn destination(&self) -> Option<std::net::IpAddr> {
        self.addr(self.dst)
    }

    /// Ports in host order (0 without TCP/UDP).
    pub fn ports(&self) -> (u16, u16) {
        (u16::from_be(self.sport), u16::from_be(self.dport))
    }
}

/// Number of slots in `hg_stats` (`HG_STATS_ENTRIES`).
pub const STATS_ENTRIES: u32 = Hook::COUNT * Proto::COUNT * Verdict::COUNT;

/// Index of a slot in `hg_stats`; the same arithmetic as `hg_stats_index()`.
pub fn stats_index(hook: Hook, proto: Proto, verdict: Verdict) -> u32 {
    (hook as u32 * Proto::COUNT + proto as u32) * Verdict::COUNT + verdict as u32
}

pub const MAX_VIPS: u32 = 512;
pub const MAX_BACKENDS: u32 = 4096;
pub const CT_ENTRIES: u32 = 262_144;
/// `BPF_F_INNER_MAP`: inner maps of hg_maglev may differ in size.
pub const BPF_F_INNER_MAP: u32 = 1 << 12;
pub const BACKEND_ACTIVE: u32 = 1;

/// An address as the maps keep it: network-order bytes in four words; an
/// IPv4 address fills the first word.
pub fn addr_words(addr: std::net::IpAddr) -> [u32; 4] {
    let mut bytes = [0u8; 16];
    match addr {
        std::net::IpAddr::V4(a) => bytes[..4].copy_from_slice(&a.octets()),
        std::net::IpAddr::V6(a) => bytes.copy_from_slice(&a.octets()),
    }
    let w = |i: usize| u32::from_ne_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
    [w(0), w(4), w(8), w(12)]
}

pub fn family_of(addr: std::net::IpAddr) -> Family {
    if addr.is_ipv4() {
        Family::V4
    } else {
        Family::V6
    }
}

/// A port as the maps keep it (network order in memory).
pub fn port_be(port: u16) -> u16 {
    port.to_be()
}

/// `struct hg_vip_key`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VipKey {
    pub addr: [u32; 4],
    pub port: u16,
    pub proto: u8,
    pub family: u8,
}

/// `struct hg_vip`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Vip {
    pub id: u32,
    pub ring_size: u32,
}

/// `struct hg_backend`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Backend {
    pub addr: [u32; 4],
    pub node: [u32; 4],
    pub port: u16,
    pub family: u8,
    pub mode: u8,
    pub flags: u32,
}

/// `struct hg_flow_key`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FlowKey {
    pub src: [u32; 4],
    pub dst: [u32; 4],
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
    pub family: u8,
    pub pad: u16,
}

/// `struct hg_ct_entry`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CtEntry {
    pub backend_id: u32,
    pub vip_id: u32,
    pub last_seen_ns: u64,
}

/// `struct hg_rnat_entry`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RnatEntry {
    pub vip: [u32; 4],
    pub vip_port: u16,
    pub family: u8,
    pub pad: u8,
}

/// `struct hg_node`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NodeAddrs {
    pub v4: u32,
    pub v6: [u32; 4],
}

/// `struct hg_lb_counter`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct LbCounter {
    pub packets: u64,
    pub bytes: u64,
    pub new_flows: u64,
}

impl std::ops::AddAssign for LbCounter {
    fn add_assign(&mut self, rhs: Self) {
        self.packets += rhs.packets;
        self.bytes += rhs.bytes;
        self.new_flows += rhs.new_flows;
    }
}

pub const FW_MAX_RULES: u32 = 65_536;

/// `struct hg_fw_key`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FwKey {
    pub dst: [u32; 4],
    pub port: u16,
    pub proto: u8,
    pub flags: u8,
}

/// `struct hg_fw_group`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FwGroup {
    pub group: u32,
}

/// `struct hg_fw_lpm_key` (aya's LPM `Key` supplies `prefixlen`; this is the rest).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FwLpmData {
    pub group: u32,
    pub addr: [u8; 16],
}

/// `struct hg_fw_lpm_key`, whole, for the layout test.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FwLpmKey {
    pub prefixlen: u32,
    pub group: u32,
    pub addr: [u8; 16],
}

/// `struct hg_fw_verdict`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FwVerdict {
    pub rule_id: u32,
    pub action: u32,
    pub rate: u32,
    pub burst: u32,
    pub flags: u32,
}

/// `HG_FW_TRACK_INBOUND`.
pub const FW_TRACK_INBOUND: u32 = 1;

/// `struct hg_fw_state`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FwState {
    pub version: u32,
    pub enabled: u32,
}

/// `struct hg_fw_bucket_key`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FwBucketKey {
    pub rule_id: u32,
    pub pad: u32,
    pub src: [u32; 4],
}

/// `struct hg_fw_bucket`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FwBucket {
    pub tokens: u64,
    pub last_ns: u64,
}

/// `struct hg_fw_flow`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FwFlow {
    pub remote: [u32; 4],
    pub rport: u16,
    pub lport: u16,
    pub proto: u8,
    pub family: u8,
    pub pad: u16,
}

/// `struct hg_guard`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Guard {
    pub mac: [u8; 6],
    pub check_mac: u8,
    pub pad: u8,
    pub drops: u64,
}

/// `struct hg_guard_addr`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GuardAddr {
    pub ifindex: u32,
    pub family: u32,
    pub addr: [u32; 4],
}

// SAFETY: all of these are plain old data without padding holes the kernel
// could leave uninitialised (explicit pad fields), every bit pattern valid.
unsafe impl aya::Pod for VipKey {}
unsafe impl aya::Pod for Vip {}
unsafe impl aya::Pod for Backend {}
unsafe impl aya::Pod for FlowKey {}
unsafe impl aya::Pod for CtEntry {}
unsafe impl aya::Pod for RnatEntry {}
unsafe impl aya::Pod for LbCounter {}
unsafe impl aya::Pod for NodeAddrs {}
unsafe impl aya::Pod for FwKey {}
unsafe impl aya::Pod for FwGroup {}
unsafe impl aya::Pod for FwLpmData {}
unsafe impl aya::Pod for FwVerdict {}
unsafe impl aya::Pod for FwState {}
unsafe impl aya::Pod for Guard {}
unsafe impl aya::Pod for GuardAddr {}
unsafe impl aya::Pod for MonitorCfg {}

/// Map and program names in the object, shared by the loader and the tests.
pub mod names {
    pub const STATS_MAP: &str = "hg_stats";
    pub const VIPS: &str = "hg_vips";
    pub const MAGLEV: &str = "hg_maglev";
    pub const BACKENDS: &str = "hg_backends";
    pub const CONNTRACK: &str = "hg_conntrack";
    pub const RNAT: &str = "hg_rnat";
    pub const VIP_STATS: &str = "hg_vip_stats";
    pub const BACKEND_STATS: &str = "hg_backend_stats";
    pub const TX_PORTS: &str = "hg_tx_ports";
    pub const NODE: &str = "hg_node";
    pub const FW_POLICY: &str = "hg_fw_policy";
    pub const FW_SRC: &str = "hg_fw_src";
    pub const FW_ACTIVE: &str = "hg_fw_active";
    pub const FW_STATS: &str = "hg_fw_stats";
    pub const FW_IP_STATS: &str = "hg_fw_ip_stats";
    pub const GUARD: &str = "hg_guard";
    pub const GUARD_ADDRS: &str = "hg_guard_addrs";
    pub const XDP_UPLINK: &str = "hg_xdp_uplink";
    pub const TC_CONTAINER: &str = "hg_tc_container";
    pub const TC_TO_CONTAINER: &str = "hg_tc_to_container";
    pub const UPLINKS: &str = "hg_uplinks";
    pub const MONITOR: &str = "hg_monitor";
    pub const EVENTS: &str = "hg_events";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_index_covers_every_slot_once() {
        let mut seen = vec![false; STATS_ENTRIES as usize];
        for &h in Hook::ALL {
            for &p in Proto::ALL {
                for &v in Verdict::ALL {
                    let i = stats_index(h, p, v) as usize;
                    assert!(!seen[i], "slot {i} used twice");
                    seen[i] = true;
                }
            }
        }
        assert!(seen.iter().all(|s| *s));
    }
}
