//! Rust mirror of `xdp-ebpf/include/hostgate_abi.h`.
//!
//! Every type here is checked against the BTF of the built object by
//! `btf_layout::tests`, so a change on one side alone fails the tests.

use serde::Serialize;

/// Layout version of every map; part of the pin path (see [`crate::pins`]).
pub const LAYOUT_VERSION: u32 = 1;

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
    ($(#[$m:meta])* $name:ident, $c_name:literal, max = $c_max:literal {
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
            /// Name of the C enumerator that counts the variants.
            pub const C_MAX: &'static str = $c_max;
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
    Hook, "hg_hook", max = "HG_HOOK_MAX" {
        XdpUplink = 0, "HG_HOOK_XDP_UPLINK", "xdp-uplink";
        TcContainer = 1, "HG_HOOK_TC_CONTAINER", "tc-container";
    }
);

abi_enum!(
    /// Protocol class of a packet: `enum hg_proto`.
    Proto, "hg_proto", max = "HG_PROTO_MAX" {
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
    Verdict, "hg_verdict", max = "HG_VERDICT_MAX" {
        Pass = 0, "HG_VERDICT_PASS", "pass";
        Drop = 1, "HG_VERDICT_DROP", "drop";
        Tx = 2, "HG_VERDICT_TX", "tx";
        Redirect = 3, "HG_VERDICT_REDIRECT", "redirect";
    }
);

/// Number of slots in `hg_stats` (`HG_STATS_ENTRIES`).
pub const STATS_ENTRIES: u32 = Hook::COUNT * Proto::COUNT * Verdict::COUNT;

/// Index of a slot in `hg_stats`; the same arithmetic as `hg_stats_index()`.
pub fn stats_index(hook: Hook, proto: Proto, verdict: Verdict) -> u32 {
    (hook as u32 * Proto::COUNT + proto as u32) * Verdict::COUNT + verdict as u32
}

/// Map and program names in the object, shared by the loader and the tests.
pub mod names {
    pub const STATS_MAP: &str = "hg_stats";
    pub const XDP_UPLINK: &str = "hg_xdp_uplink";
    pub const TC_CONTAINER: &str = "hg_tc_container";
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
