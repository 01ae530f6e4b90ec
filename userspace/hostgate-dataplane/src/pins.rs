//! Where hostgate pins its BPF objects, and how link pins are named.
//!
//! ```text
//! <pin_root>/<node>/v<LAYOUT_VERSION>/
//!     maps/<map name>            pinned by name by the loader
//!     progs/<program name>       the programs currently attached
//!     links/<kind>:<interface>   one bpf_link per attachment
//! ```
//! The node name keeps several test nodes on one host apart; the layout
//! version keeps a daemon from reusing a map of another layout. A link pin's
//! name says what it is (`xdp-native:eth0`, `xdp-generic:eth0`,
//! `tcx-ingress:veth1`), so adoption needs no state besides bpffs; interface
//! names cannot contain ':'. bpffs refuses names with '.', which VLAN
//! interfaces (`eth0.100`) have: '.' is written `%2e` (and '%' `%25`).

use std::{
    fmt, io,
    path::{Path, PathBuf},
};

use serde::Serialize;

use crate::abi::{Hook, LAYOUT_VERSION};

/// How an attachment is made.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum AttachKind {
    /// XDP in the driver (native).
    XdpNative,
    /// XDP in the generic (skb) path, for drivers without native XDP.
    XdpGeneric,
    /// TC ingress through a TCX link (kernel >= 6.6): what a container sends.
    TcxIngress,
    /// TC egress through a TCX link: what reaches a container.
    TcxEgress,
    /// TC ingress as a netlink cls_bpf filter on a clsact qdisc, for kernels
    /// without TCX (< 6.6). Not a link: nothing is pinned; the filter stays
    /// in the kernel and is found again by its priority and handle.
    TcIngress,
    /// TC egress as a netlink cls_bpf filter.
    TcEgress,
}

impl AttachKind {
    /// The kinds kept as pinned links.
    pub const ALL: [AttachKind; 4] =
        [AttachKind::XdpNative, AttachKind::XdpGeneric, AttachKind::TcxIngress, AttachKind::TcxEgress];

    pub fn as_str(self) -> &'static str {
        match self {
            AttachKind::XdpNative => "xdp-native",
            AttachKind::XdpGeneric => "xdp-generic",
            AttachKind::TcxIngress => "tcx-ingress",
            AttachKind::TcxEgress => "tcx-egress",
            AttachKind::TcIngress => "tc-ingress",
            AttachKind::TcEgress => "tc-egress",
        }
    }

    /// Attachments of one slot exclude each other on an interface (one XDP
    /// program, whatever its mode; one hostgate program per TC direction).
    pub fn slot(self) -> &'static str {
        match self {
            AttachKind::XdpNative | AttachKind::XdpGeneric => "xdp",
            AttachKind::TcxIngress | AttachKind::TcIngress => "tcx-ingress",
            AttachKind::TcxEgress | AttachKind::TcEgress => "tcx-egress",
        }
    }

    /// The hook whose program this kind of attachment runs.
    pub fn hook(self) -> Hook {
        match self {
            AttachKind::XdpNative | AttachKind::XdpGeneric => Hook::XdpUplink,
            AttachKind::TcxIngress | AttachKind::TcxEgress | AttachKind::TcIngress | AttachKind::TcEgress => {
                Hook::TcContainer
            }
        }
    }
}

impl fmt::Display for AttachKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One attachment: what kind, on which interface.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LinkKey {
    pub kind: AttachKind,
    pub iface: String,
}

impl LinkKey {
    /// The pin file name, `<kind>:<iface>` with '.' and '%' escaped.
    pub fn pin_name(&self) -> String {
        format!("{}:{}", self.kind, self.iface.replace('%', "%25").replace('.', "%2e"))
    }

    /// Parses a pin file name; `None` for names hostgate did not write.
    pub fn from_pin_name(name: &str) -> Option<Self> {
        let (kind, escaped) = name.split_once(':')?;
        let kind = AttachKind::ALL.into_iter().find(|k| k.as_str() == kind)?;
        let iface = escaped.replace("%2e", ".").replace("%25", "%");
        valid_ifname(&iface).then_some(LinkKey { kind, iface })
    }
}

/// Linux's rule for interface names (dev_valid_name).
pub fn valid_ifname(name: &str) -> bool {
    !name.is_empty()
        && name.len() < 16
        && name != "."
        && name != ".."
        && !name.bytes().any(|b| b == b'/' || b == b':' || b.is_ascii_whitespace())
}

/// The pin directories of one node.
#[derive(Clone, Debug)]
pub struct PinLayout {
    node_dir: PathBuf,
    base: PathBuf,
}

impl PinLayout {
    pub fn new(pin_root: &Path, node: &str) -> Self {
        let node_dir = pin_root.join(node);
        let base = node_dir.join(format!("v{LAYOUT_VERSION}"));
        PinLayout { node_dir, base }
    }

    /// `<pin_root>/<node>/v<N>`.
    pub fn base(&self) -> &Path {
        &self.base
    }

    /// `<pin_root>/<node>`: removed on detach when nothing else is left in it.
    pub fn node_dir(&self) -> &Path {
        &self.node_dir
    }

    pub fn maps_dir(&self) -> PathBuf {
        self.base.join("maps")
    }

    pub fn progs_dir(&self) -> PathBuf {
        self.base.join("progs")
    }

    pub fn links_dir(&self) -> PathBuf {
        self.base.join("links")
    }

    pub fn link_path(&self, key: &LinkKey) -> PathBuf {
        self.links_dir().join(key.pin_name())
    }

    pub fn create_dirs(&self) -> io::Result<()> {
        for dir in [self.maps_dir(), self.progs_dir(), self.links_dir()] {
            std::fs::create_dir_all(dir)?;
        }
        Ok(())
    }

    /// The link pins present, sorted; foreign files are ignored.
    pub fn pinned_links(&self) -> io::Result<Vec<LinkKey>> {
        let mut keys = Vec::new();
        match std::fs::read_dir(self.links_dir()) {
            Ok(entries) => {
                for entry in entries {
                    if let Some(key) = entry?.file_name().to_str().and_then(LinkKey::from_pin_name) {
                        keys.push(key);
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        keys.sort();
        Ok(keys)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pin_names_round_trip() {
        for kind in AttachKind::ALL {
            for iface in ["eth0", "eth0.100", "hg-up0", "a", "x%2e", "%"] {
                let key = LinkKey { kind, iface: iface.into() };
                assert!(!key.pin_name().contains('.'), "bpffs refuses '.'");
                assert_eq!(LinkKey::from_pin_name(&key.pin_name()), Some(key));
            }
        }
    }

    #[test]
    fn foreign_pin_names_are_ignored() {
        for name in ["hg_stats", "xdp:eth0", "xdp-native:", "xdp-native:a/b", "tcx-ingress:way-too-long-name0"] {
            assert_eq!(LinkKey::from_pin_name(name), None, "{name}");
        }
    }

    #[test]
    fn layout_is_versioned_per_node() {
        let l = PinLayout::new(Path::new("/sys/fs/bpf/hostgate"), "n1");
        assert_eq!(l.base(), Path::new(&format!("/sys/fs/bpf/hostgate/n1/v{LAYOUT_VERSION}")));
        assert!(l.links_dir().starts_with(l.base()));
    }
}
