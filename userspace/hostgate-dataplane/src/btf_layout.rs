//! Checks that the Rust mirror in [`crate::abi`] matches the C header, using
//! the BTF that clang put in the built object: sizes, field offsets, enum
//! values and map geometry. A minimal BTF reader lives here because the
//! loader's own BTF types are not public.

use std::collections::HashMap;

/// Struct and enum layouts read from a `.BTF` section.
#[derive(Debug, Default)]
pub struct BtfLayouts {
    /// struct name -> (size in bytes, [(member name, offset in bits)])
    pub structs: HashMap<String, (u32, Vec<(String, u32)>)>,
    /// enum name -> [(enumerator name, value)]
    pub enums: HashMap<String, Vec<(String, i64)>>,
}

#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    #[error("BTF truncated at byte {0}")]
    Truncated(usize),
    #[error("bad BTF magic {0:#x}")]
    Magic(u16),
    #[error("unknown BTF kind {0}")]
    Kind(u32),
}

struct Reader<'a> {
    data: &'a [u8],
}

impl Reader<'_> {
    fn u32(&self, at: usize) -> Result<u32, BtfError> {
        let bytes = self.data.get(at..at + 4).ok_or(BtfError::Truncated(at))?;
        Ok(u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
    }

    fn str(&self, strings: usize, off: u32) -> String {
        let start = strings + off as usize;
        let tail = self.data.get(start..).unwrap_or_default();
        let end = tail.iter().position(|b| *b == 0).unwrap_or(tail.len());
        String::from_utf8_lossy(&tail[..end]).into_owned()
    }
}

/// Parses a little-endian `.BTF` section.
pub fn parse(data: &[u8]) -> Result<BtfLayouts, BtfError> {
    let r = Reader { data };
    let magic = data.get(0..2).ok_or(BtfError::Truncated(0))?;
    let magic = u16::from_le_bytes([magic[0], magic[1]]);
    if magic != 0xeb9f {
        return Err(BtfError::Magic(magic));
    }
    let hdr_len = r.u32(4)? as usize;
    let (type_off, type_len) = (r.u32(8)? as usize, r.u32(12)? as usize);
    let strings = hdr_len + r.u32(16)? as usize;
    let mut at = hdr_len + type_off;
    let end = at + type_len;
    let mut out = BtfLayouts::default();

    while at < end {
        let (name_off, info, size) = (r.u32(at)?, r.u32(at + 4)?, r.u32(at + 8)?);
        let (kind, vlen) = ((info >> 24) & 0x1f, (info & 0xffff) as usize);
        let bitfield_offsets = info >> 31 == 1;
        at += 12;
        let name = r.str(strings, name_off);
        let extra = match kind {
            2 | 7..=12 | 16 | 18 => 0,
            1 | 14 | 17 => 4,
            3 => 12,
            4 | 5 => {
                let mut members = Vec::with_capacity(vlen);
                for i in 0..vlen {
                    let m = at + i * 12;
                    let offset = r.u32(m + 8)?;
                    let offset = if bitfield_offsets { offset & 0x00ff_ffff } else { offset };
                    members.push((r.str(strings, r.u32(m)?), offset));
                }
                if kind == 4 {
                    out.structs.insert(name, (size, members));
                }
                12 * vlen
            }
            6 => {
                let values = (0..vlen)
                    .map(|i| {
                        let e = at + i * 8;
                        Ok((r.str(strings, r.u32(e)?), r.u32(e + 4)? as i32 as i64))
                    })
                    .collect::<Result<_, BtfError>>()?;
                out.enums.insert(name, values);
                8 * vlen
            }
            13 => 8 * vlen,
            15 => 12 * vlen,
            19 => 12 * vlen,
            other => return Err(BtfError::Kind(other)),
        };
        at += extra;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::mem::{offset_of, size_of};

    use object::{Object, ObjectSection};

    use super::*;
    use crate::abi::{self, Counter, EventKind, Family, FwAction, Hook, Mode, Proto, Verdict};

    fn layouts() -> BtfLayouts {
        let obj = object::File::parse(crate::BPF_OBJECT).expect("built BPF object is ELF");
        let btf = obj.section_by_name(".BTF").expect("object has a .BTF section");
        parse(btf.data().expect("readable .BTF")).expect("valid BTF")
    }

    #[test]
    fn counter_matches_struct_hg_counter() {
        let l = layouts();
        let (size, members) = &l.structs["hg_counter"];
        assert_eq!(*size as usize, size_of::<Counter>());
        let expected = vec![
            ("packets".to_string(), offset_of!(Counter, packets) as u32 * 8),
            ("bytes".to_string(), offset_of!(Counter, bytes) as u32 * 8),
        ];
        assert_eq!(members, &expected);
    }

    fn check_enum<E: Copy>(
        l: &BtfLayouts,
        c_enum: &str,
        max: Option<&str>,
        all: &[E],
        name: fn(E) -> &'static str,
        value: fn(E) -> u32,
    ) {
        let btf = &l.enums[c_enum];
        let mut expected: Vec<(String, i64)> = all.iter().map(|&v| (name(v).to_string(), value(v) as i64)).collect();
        if let Some(max) = max {
            expected.push((max.to_string(), all.len() as i64));
        }
        assert_eq!(btf, &expected, "enum {c_enum} differs between C and Rust");
    }

    #[test]
    fn enums_match_c() {
        let l = layouts();
        check_enum(&l, Hook::C_NAME, Hook::C_MAX, Hook::ALL, Hook::c_name, |v| v as u32);
        check_enum(&l, Proto::C_NAME, Proto::C_MAX, Proto::ALL, Proto::c_name, |v| v as u32);
        check_enum(&l, Verdict::C_NAME, Verdict::C_MAX, Verdict::ALL, Verdict::c_name, |v| v as u32);
        check_enum(&l, Family::C_NAME, Family::C_MAX, Family::ALL, Family::c_name, |v| v as u32);
        check_enum(&l, Mode::C_NAME, Mode::C_MAX, Mode::ALL, Mode::c_name, |v| v as u32);
        check_enum(&l, FwAction::C_NAME, FwAction::C_MAX, FwAction::ALL, FwAction::c_name, |v| v as u32);
        check_enum(&l, EventKind::C_NAME, EventKind::C_MAX, EventKind::ALL, EventKind::c_name, |v| v as u32);
    }

    /// Asserts that Rust struct `$ty` has C struct `$c`'s size and field offsets.
    macro_rules! check_struct {
        ($l:expr, $c:literal, $ty:ty, [$($field:ident),*]) => {{
            let (size, members) = &$l.structs[$c];
            assert_eq!(*size as usize, size_of::<$ty>(), "size of {}", $c);
            let expected: Vec<(String, u32)> =
                vec![$((stringify!($field).to_string(), offset_of!($ty, $field) as u32 * 8)),*];
            assert_eq!(members, &expected, "fields of {}", $c);
        }};
    }

    #[test]
    fn lb_structs_match_c() {
        use crate::abi::*;
        let l = layouts();
        check_struct!(l, "hg_vip_key", VipKey, [addr, port, proto, family]);
        check_struct!(l, "hg_vip", Vip, [id, ring_size]);
        check_struct!(l, "hg_backend", Backend, [addr, node, port, family, mode, flags]);
        check_struct!(l, "hg_flow_key", FlowKey, [src, dst, sport, dport, proto, family, pad]);
        check_struct!(l, "hg_ct_entry", CtEntry, [backend_id, vip_id, last_seen_ns]);
        check_struct!(l, "hg_rnat_entry", RnatEntry, [vip, vip_port, family, pad]);
        check_struct!(l, "hg_lb_counter", LbCounter, [packets, bytes, new_flows]);
        check_struct!(l, "hg_node", NodeAddrs, [v4, v6]);
        check_struct!(l, "hg_fw_key", FwKey, [dst, port, proto, flags]);
        check_struct!(l, "hg_fw_group", FwGroup, [group]);
        check_struct!(l, "hg_fw_lpm_key", FwLpmKey, [prefixlen, group, addr]);
        check_struct!(l, "hg_fw_verdict", FwVerdict, [rule_id, action, rate, burst, flags]);
        check_struct!(l, "hg_fw_state", FwState, [version, enabled]);
        check_struct!(l, "hg_fw_bucket_key", FwBucketKey, [rule_id, pad, src]);
        check_struct!(l, "hg_fw_bucket", FwBucket, [tokens, last_ns]);
        assert_eq!(size_of::<FwLpmData>() + 4, size_of::<FwLpmKey>());
        check_struct!(l, "hg_guard", Guard, [mac, check_mac, pad, drops]);
        check_struct!(l, "hg_fw_flow", FwFlow, [remote, rport, lport, proto, family, pad]);
        check_struct!(l, "hg_guard_addr", GuardAddr, [ifindex, family, addr]);
        check_struct!(l, "hg_monitor_cfg", MonitorCfg, [kinds, sample_every]);
        check_struct!(
            l,
            "hg_event",
            Event,
            [ts_ns, kind, hook, ifindex, id, backend_id, action, src, dst, sport, dport, proto, family, pad]
        );
    }

    #[test]
    fn stats_map_geometry_matches() {
        let obj = aya_obj::Object::parse(crate::BPF_OBJECT).expect("object parses");
        let map = &obj.maps[abi::names::STATS_MAP];
        assert_eq!(map.max_entries(), abi::STATS_ENTRIES);
        assert_eq!(map.value_size() as usize, size_of::<Counter>());
        assert_eq!(map.key_size() as usize, size_of::<u32>());
    }

    #[test]
    fn lb_map_geometry_matches() {
        let obj = aya_obj::Object::parse(crate::BPF_OBJECT).expect("object parses");
        let entries = |name: &str| obj.maps[name].max_entries();
        assert_eq!(entries(abi::names::MAGLEV), abi::MAX_VIPS);
        assert_eq!(entries(abi::names::VIP_STATS), abi::MAX_VIPS);
        assert_eq!(entries(abi::names::BACKENDS), abi::MAX_BACKENDS);
        assert_eq!(entries(abi::names::BACKEND_STATS), abi::MAX_BACKENDS);
        assert_eq!(entries(abi::names::CONNTRACK), abi::CT_ENTRIES);
        assert_eq!(entries(abi::names::FW_STATS), abi::FW_MAX_RULES);
        assert_eq!(obj.maps[abi::names::MAGLEV].inner().map(|m| m.map_flags()), Some(abi::BPF_F_INNER_MAP));
        assert_eq!(hostgate_lb_limits(), (abi::MAX_VIPS, abi::MAX_BACKENDS));
    }

    /// The pure core's limits must match the maps'.
    fn hostgate_lb_limits() -> (u32, u32) {
        (hostgate_lb::model::MAX_VIPS, hostgate_lb::model::MAX_BACKENDS)
    }

    #[test]
    fn layout_version_matches_header() {
        let header = include_str!("../../../xdp-ebpf/include/hostgate_abi.h");
        let line = header
            .lines()
            .find(|l| l.starts_with("#define HG_LAYOUT_VERSION"))
            .expect("header defines HG_LAYOUT_VERSION");
        let value: u32 = line.split_whitespace().nth(2).and_then(|v| v.parse().ok()).expect("numeric version");
        assert_eq!(value, abi::LAYOUT_VERSION);
    }

    #[test]
    fn programs_are_present() {
        let obj = aya_obj::Object::parse(crate::BPF_OBJECT).expect("object parses");
        assert!(obj.programs.contains_key(abi::names::XDP_UPLINK));
        assert!(obj.programs.contains_key(abi::names::TC_CONTAINER));
    }
}
