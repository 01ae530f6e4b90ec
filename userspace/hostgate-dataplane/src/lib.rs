//! hostgate's data plane from userspace: the BPF object built from
//! `xdp-ebpf/` (see build.rs), loaded with aya, attached, pinned, adopted by
//! the next daemon, read and detached.
//!
//! Restart without disturbance: every attachment is a bpf_link pinned under
//! [`pins::PinLayout`]. A starting [`Dataplane`] loads a fresh object that
//! reuses the pinned maps, and swaps its programs into the pinned links with
//! `BPF_LINK_UPDATE`; the interface never goes without a program and the
//! counters continue.

pub mod abi;
#[cfg(test)]
mod btf_layout;
pub mod counters;
pub mod fw;
pub mod guard;
pub mod lb;
pub mod monitor;
pub mod pins;
pub mod scratch;
pub mod sys;

use std::{collections::BTreeSet, io, path::PathBuf};

use aya::{
    programs::{
        links::{FdLink, PinnedLink},
        tc::{NlOptions, SchedClassifierLink, TcAttachOptions, TcHandle},
        xdp::XdpLink,
        LinkOrder, SchedClassifier, TcAttachType, Xdp, XdpMode,
    },
    Ebpf, EbpfLoader,
};
use serde::Serialize;
use tracing::{info, warn};

pub use crate::counters::{CounterRow, Counters};
use crate::{
    abi::names,
    pins::{AttachKind, LinkKey, PinLayout},
};

/// The BPF object compiled from `xdp-ebpf/src/hostgate.bpf.c`.
pub static BPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/hostgate.bpf.o"));

/// A program that passes everything (`xdp-ebpf/src/xdp_pass.bpf.c`), for
/// the far ends of veths that must accept XDP_TX'd frames.
pub static XDP_PASS_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/xdp_pass.bpf.o"));

/// The benchmark's traffic generator and sink (`xdp-ebpf/src/bench.bpf.c`).
pub static BENCH_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/bench.bpf.o"));

#[derive(Debug, thiserror::Error)]
pub enum DataplaneError {
    #[error("interface {0:?} does not exist")]
    UnknownInterface(String),
    #[error("interface {0:?} is listed both as uplink and as container interface")]
    DuplicateInterface(String),
    #[error("bpffs at {path}")]
    Bpffs { path: PathBuf, source: io::Error },
    #[error("pin directory {path}")]
    PinDir { path: PathBuf, source: io::Error },
    #[error("loading the BPF object")]
    Load(#[from] aya::EbpfError),
    #[error("program {name}")]
    Program { name: &'static str, source: aya::programs::ProgramError },
    #[error("{kind} on {iface}")]
    Attach { kind: AttachKind, iface: String, source: Box<dyn std::error::Error + Send + Sync> },
    #[error("native XDP is not available on {iface}")]
    NativeXdpUnsupported { iface: String, source: aya::programs::ProgramError },
    #[error("map {0} missing from the BPF object")]
    MissingMap(&'static str),
    #[error("BPF map access")]
    Map(#[from] aya::maps::MapError),
    #[error("pinning")]
    Pin(#[from] aya::pin::PinError),
    #[error("{path}")]
    Io { path: PathBuf, source: io::Error },
    #[error("redirect table hg_tx_ports")]
    TxPorts(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("firewall")]
    Firewall(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("BPF map {map}")]
    MapAccess { map: &'static str, source: aya::maps::MapError },
}

/// Which XDP mode to use on uplinks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum XdpModeChoice {
    /// Native if the driver supports it, else generic with a warning.
    #[default]
    Auto,
    Native,
    Generic,
}

impl XdpModeChoice {
    fn accepts(self, kind: AttachKind) -> bool {
        match self {
            XdpModeChoice::Auto => matches!(kind, AttachKind::XdpNative | AttachKind::XdpGeneric),
            XdpModeChoice::Native => kind == AttachKind::XdpNative,
            XdpModeChoice::Generic => kind == AttachKind::XdpGeneric,
        }
    }
}

/// What the data plane should look like on this node.
#[derive(Clone, Debug)]
pub struct DataplaneSpec {
    /// bpffs directory holding every node's pins, e.g. `/sys/fs/bpf/hostgate`.
    pub pin_root: PathBuf,
    pub node: String,
    /// Interfaces facing the network: XDP.
    pub uplinks: Vec<String>,
    /// Container-facing veths (host side): TC ingress.
    pub container_ifaces: Vec<String>,
    pub xdp_mode: XdpModeChoice,
}

/// Whether an attachment was taken over from a previous daemon.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    /// Found pinned and swapped to this daemon's program atomically.
    Adopted,
    /// Created by this daemon.
    Attached,
}

/// One live attachment.
#[derive(Debug)]
pub struct Attachment {
    pub key: LinkKey,
    pub ifindex: u32,
    pub origin: Origin,
    pub link_id: u32,
    pub program_id: u32,
    /// Our handle; the pin keeps the link alive after we exit. None for a
    /// netlink TC filter, which the kernel keeps by itself.
    _link: Option<FdLink>,
}

/// Kernel-side facts about a loaded program, for status.
#[derive(Clone, Debug, Serialize)]
pub struct ProgramStatus {
    pub name: String,
    pub id: u32,
    pub verified_instructions: Option<u32>,
    pub pinned: PathBuf,
}

/// Kernel-side facts about a map, for status.
#[derive(Clone, Debug, Serialize)]
pub struct MapStatus {
    pub name: String,
    pub id: u32,
    pub max_entries: u32,
    pub pinned: Option<PathBuf>,
}

/// The loaded, attached data plane of this node.
pub struct Dataplane {
    ebpf: Ebpf,
    layout: PinLayout,
    attachments: Vec<Attachment>,
    lb_applied: lb::LbApplied,
    /// Rule ids in use by the firewall (counters to reset on the next apply).
    fw_rule_count: u32,
}

impl Dataplane {
    /// Loads the programs and makes the attachments match `spec`: adopts
    /// pinned links that fit, attaches what is missing, removes pinned links
    /// that are no longer wanted. Interfaces are checked before anything is
    /// touched; if an attachment fails, the ones created by this call are
    /// removed again and adopted ones keep running their previous program.
    pub fn start(spec: &DataplaneSpec) -> Result<Self, DataplaneError> {
        let wanted = resolve_interfaces(spec)?;
        let layout = PinLayout::new(&spec.pin_root, &spec.node);
        if sys::ensure_bpffs(&spec.pin_root)
            .map_err(|source| DataplaneError::Bpffs { path: spec.pin_root.clone(), source })?
        {
            info!(path = sys::BPFFS_MOUNT, "mounted bpffs");
        }
        layout.create_dirs().map_err(|source| DataplaneError::PinDir { path: layout.base().to_path_buf(), source })?;

        let mut ebpf = EbpfLoader::new().default_map_pin_directory(layout.maps_dir()).load(BPF_OBJECT)?;
        load_programs(&mut ebpf)?;
        let pinned = layout.pinned_links().map_err(|source| DataplaneError::Io { path: layout.links_dir(), source })?;

        let mut attachments = Vec::new();
        for (hook_kind, iface, ifindex) in &wanted {
            let results = match hook_kind {
                HookKind::Xdp => vec![attach_xdp(&mut ebpf, &layout, &pinned, iface, *ifindex, spec.xdp_mode)],
                HookKind::Tc => [AttachKind::TcxIngress, AttachKind::TcxEgress]
                    .into_iter()
                    .map(|kind| attach_tc(&mut ebpf, &layout, &pinned, iface, *ifindex, kind))
                    .collect(),
            };
            for result in results {
                match result {
                    Ok(a) => attachments.push(a),
                    Err(e) => {
                        roll_back(&layout, attachments);
                        return Err(e);
                    }
                }
            }
        }

        let kept: BTreeSet<&LinkKey> = attachments.iter().map(|a| &a.key).collect();
        for stale in pinned.iter().filter(|k| !kept.contains(k)) {
            info!(link = %stale.pin_name(), "removing attachment no longer configured");
            remove_pin(&layout.link_path(stale));
        }
        pin_programs(&mut ebpf, &layout)?;
        for a in &attachments {
            info!(kind = %a.key.kind, iface = %a.key.iface, origin = ?a.origin, link_id = a.link_id, "attached");
        }
        set_tx_ports(&mut ebpf, &wanted)?;
        // After a restart the previous daemon's rule count is unknown: reset all once.
        Ok(Dataplane {
            ebpf,
            layout,
            attachments,
            lb_applied: lb::LbApplied::default(),
            fw_rule_count: abi::FW_MAX_RULES,
        })
    }

    pub fn attachments(&self) -> &[Attachment] {
        &self.attachments
    }

    pub fn layout(&self) -> &PinLayout {
        &self.layout
    }

    pub fn counters(&self) -> Result<Counters, DataplaneError> {
        Counters::read(self.named_map(names::STATS_MAP)?)
    }

    pub fn programs(&self) -> Vec<ProgramStatus> {
        let mut out = Vec::new();
        for (name, prog) in self.ebpf.programs() {
            let Ok(info) = prog.info() else { continue };
            out.push(ProgramStatus {
                name: name.to_string(),
                id: info.id(),
                verified_instructions: info.verified_instruction_count(),
                pinned: self.layout.progs_dir().join(name),
            });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    pub fn maps(&self) -> Vec<MapStatus> {
        let mut out = Vec::new();
        for (name, map) in self.ebpf.maps() {
            let info = match map {
                aya::maps::Map::PerCpuArray(data) | aya::maps::Map::Array(data) | aya::maps::Map::HashMap(data) => {
                    data.info().ok()
                }
                _ => None,
            };
            let pinned = self.layout.maps_dir().join(name);
            out.push(MapStatus {
                name: name.to_string(),
                id: info.as_ref().map_or(0, |i| i.id()),
                max_entries: info.as_ref().map_or(0, |i| i.max_entries()),
                pinned: pinned.exists().then_some(pinned),
            });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// Detaches everything this node attached and removes its pins.
    pub fn detach(self) -> Result<DetachReport, DataplaneError> {
        let Dataplane { ebpf, layout, attachments, .. } = self;
        let filtered: BTreeSet<String> =
            attachments.iter().filter(|a| a._link.is_none()).map(|a| a.key.iface.clone()).collect();
        // Our fds must be closed for the links to go when their pins do.
        drop(attachments);
        drop(ebpf);
        let mut report = detach_pinned(&layout)?;
        for iface in filtered {
            report.links.extend(detach_tc_filters(&iface));
        }
        Ok(report)
    }
}

/// Wraps a map error with the map's name.
pub(crate) fn map_access(name: &'static str) -> impl Fn(aya::maps::MapError) -> DataplaneError {
    move |e| DataplaneError::MapAccess { map: name, source: e }
}

impl Dataplane {
    /// A map of the object by name.
    pub(crate) fn named_map(&self, name: &'static str) -> Result<&aya::maps::Map, DataplaneError> {
        self.ebpf.map(name).ok_or(DataplaneError::MissingMap(name))
    }

    /// A map of the object by name, for writing.
    pub(crate) fn named_map_mut(&mut self, name: &'static str) -> Result<&mut aya::maps::Map, DataplaneError> {
        self.ebpf.map_mut(name).ok_or(DataplaneError::MissingMap(name))
    }
}

/// What a detach removed.
#[derive(Clone, Debug, Default, Serialize)]
pub struct DetachReport {
    pub links: Vec<String>,
    pub pins_removed: usize,
}

/// Removes every link, program and map pinned for a node: the attachments
/// go with their pins once no process holds them. Other nodes' pins and
/// anything not pinned by hostgate are left alone.
pub fn detach_pinned(layout: &PinLayout) -> Result<DetachReport, DataplaneError> {
    let io_err = |path: PathBuf| move |source| DataplaneError::Io { path, source };
    let mut report = DetachReport::default();
    for key in layout.pinned_links().map_err(io_err(layout.links_dir()))? {
        remove_pin(&layout.link_path(&key));
        report.links.push(key.pin_name());
        report.pins_removed += 1;
    }
    for dir in [layout.links_dir(), layout.progs_dir(), layout.maps_dir()] {
        match std::fs::read_dir(&dir) {
            Ok(entries) => {
                for entry in entries.flatten() {
                    remove_pin(&entry.path());
                    report.pins_removed += 1;
                }
                std::fs::remove_dir(&dir).map_err(io_err(dir.clone()))?;
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(DataplaneError::Io { path: dir, source: e }),
        }
    }
    for dir in [layout.base(), layout.node_dir()] {
        // Only if empty: another layout version may still be pinned here.
        let _ = std::fs::remove_dir(dir);
    }
    Ok(report)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum HookKind {
    Xdp,
    Tc,
}

/// Checks every interface before anything is attached.
fn resolve_interfaces(spec: &DataplaneSpec) -> Result<Vec<(HookKind, String, u32)>, DataplaneError> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    let all =
        spec.uplinks.iter().map(|i| (HookKind::Xdp, i)).chain(spec.container_ifaces.iter().map(|i| (HookKind::Tc, i)));
    for (kind, iface) in all {
        if !seen.insert(iface.clone()) {
            return Err(DataplaneError::DuplicateInterface(iface.clone()));
        }
        let ifindex = sys::ifindex(iface).ok_or_else(|| DataplaneError::UnknownInterface(iface.clone()))?;
        out.push((kind, iface.clone(), ifindex));
    }
    Ok(out)
}

/// Lets XDP redirect into the interfaces hostgate manages (container veths
/// for local delivery, uplinks for tunnels), and nowhere else.
fn set_tx_ports(ebpf: &mut Ebpf, wanted: &[(HookKind, String, u32)]) -> Result<(), DataplaneError> {
    let map = ebpf.map_mut(names::TX_PORTS).ok_or(DataplaneError::MissingMap(names::TX_PORTS))?;
    let mut ports: aya::maps::DevMapHash<&mut aya::maps::MapData> = aya::maps::DevMapHash::try_from(map)?;
    let want: BTreeSet<u32> = wanted.iter().map(|(_, _, i)| *i).collect();
    let have: Vec<u32> = ports.keys().collect::<Result<_, _>>()?;
    for stale in have.iter().filter(|i| !want.contains(i)) {
        ports.remove(*stale)?;
    }
    for ifindex in want {
        ports.insert(ifindex, ifindex, None, 0).map_err(|e| DataplaneError::TxPorts(Box::new(e)))?;
    }
    // The uplinks, so the container side knows what XDP judged already.
    let map = ebpf.map_mut(names::UPLINKS).ok_or(DataplaneError::MissingMap(names::UPLINKS))?;
    let mut uplinks: aya::maps::HashMap<&mut aya::maps::MapData, u32, u8> = aya::maps::HashMap::try_from(map)?;
    let have: Vec<u32> = uplinks.keys().collect::<Result<_, _>>()?;
    let want: BTreeSet<u32> = wanted.iter().filter(|(k, _, _)| *k == HookKind::Xdp).map(|(_, _, i)| *i).collect();
    for stale in have.iter().filter(|i| !want.contains(i)) {
        uplinks.remove(stale)?;
    }
    for ifindex in want {
        uplinks.insert(ifindex, 1, 0)?;
    }
    Ok(())
}

fn load_programs(ebpf: &mut Ebpf) -> Result<(), DataplaneError> {
    let xdp: &mut Xdp = program(ebpf, names::XDP_UPLINK)?;
    with_retries(names::XDP_UPLINK, || xdp.load())?;
    for name in [names::TC_CONTAINER, names::TC_TO_CONTAINER] {
        let tc: &mut SchedClassifier = program(ebpf, name)?;
        with_retries(name, || tc.load())?;
    }
    Ok(())
}

/// Loads a program, again when the verifier gave up with EAGAIN: it does
/// when a signal reaches the loading thread mid-verification (another
/// thread's child exiting, say), as libbpf knows and retries too.
fn with_retries(
    name: &'static str,
    mut load: impl FnMut() -> Result<(), aya::programs::ProgramError>,
) -> Result<(), DataplaneError> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        match load() {
            Ok(()) => return Ok(()),
            Err(aya::programs::ProgramError::LoadError { io_error, .. })
                if io_error.raw_os_error() == Some(libc::EAGAIN) && attempt < 5 =>
            {
                warn!(program = name, attempt, "the verifier was interrupted; loading again");
            }
            Err(source) => return Err(DataplaneError::Program { name, source }),
        }
    }
}

fn program<'a, T>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut T, DataplaneError>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
{
    let prog = ebpf
        .program_mut(name)
        .ok_or(DataplaneError::Program { name, source: aya::programs::ProgramError::UnexpectedProgramType })?;
    prog.try_into().map_err(|source| DataplaneError::Program { name, source })
}

/// Pins each program under progs/, replacing the previous daemon's pin.
fn pin_programs(ebpf: &mut Ebpf, layout: &PinLayout) -> Result<(), DataplaneError> {
    for name in [names::XDP_UPLINK, names::TC_CONTAINER, names::TC_TO_CONTAINER] {
        let path = layout.progs_dir().join(name);
        remove_pin(&path);
        let prog = ebpf
            .program_mut(name)
            .ok_or(DataplaneError::Program { name, source: aya::programs::ProgramError::UnexpectedProgramType })?;
        prog.pin(&path)?;
    }
    Ok(())
}

fn attach_err<E: std::error::Error + Send + Sync + 'static>(
    kind: AttachKind,
    iface: &str,
) -> impl FnOnce(E) -> DataplaneError + '_ {
    move |e| DataplaneError::Attach { kind, iface: iface.to_string(), source: Box::new(e) }
}

/// A pinned link on `iface` in `slot` that still belongs to that interface
/// and is of a kind `accept`s. Pins of the slot that do not fit (defunct
/// link, other XDP mode) are removed so a fresh attachment can be made.
fn usable_pin(
    layout: &PinLayout,
    pinned: &[LinkKey],
    slot: &str,
    iface: &str,
    ifindex: u32,
    accept: impl Fn(AttachKind) -> bool,
) -> Option<LinkKey> {
    let mut found = None;
    for key in pinned.iter().filter(|k| k.iface == iface && k.kind.slot() == slot) {
        let path = layout.link_path(key);
        match sys::pinned_link_state(&path) {
            Ok(state) if state.ifindex == ifindex && accept(key.kind) && found.is_none() => found = Some(key.clone()),
            other => {
                warn!(link = %key.pin_name(), state = ?other, "pinned link no longer fits; replacing it");
                remove_pin(&path);
            }
        }
    }
    found
}

fn attach_xdp(
    ebpf: &mut Ebpf,
    layout: &PinLayout,
    pinned: &[LinkKey],
    iface: &str,
    ifindex: u32,
    choice: XdpModeChoice,
) -> Result<Attachment, DataplaneError> {
    let prog: &mut Xdp = program(ebpf, names::XDP_UPLINK)?;
    if let Some(key) = usable_pin(layout, pinned, "xdp", iface, ifindex, |k| choice.accepts(k)) {
        let link = XdpLink::try_from(open_pinned(layout, &key)?).map_err(attach_err(key.kind, iface))?;
        let id = prog.attach_to_link(link).map_err(attach_err(key.kind, iface))?;
        let fd_link = FdLink::try_from(prog.take_link(id).map_err(attach_err(key.kind, iface))?)
            .map_err(attach_err(key.kind, iface))?;
        return finish(layout, key, ifindex, Origin::Adopted, fd_link, false);
    }

    let (mode, kind) = match choice {
        XdpModeChoice::Generic => (XdpMode::Skb, AttachKind::XdpGeneric),
        _ => (XdpMode::Driver, AttachKind::XdpNative),
    };
    let (id, kind) = match prog.attach_to_if_index(ifindex, mode) {
        Ok(id) => (id, kind),
        Err(e) if choice == XdpModeChoice::Auto => {
            warn!(%iface, error = %e, "native XDP unavailable, falling back to generic XDP (slower)");
            let id =
                prog.attach_to_if_index(ifindex, XdpMode::Skb).map_err(attach_err(AttachKind::XdpGeneric, iface))?;
            (id, AttachKind::XdpGeneric)
        }
        Err(source) if choice == XdpModeChoice::Native => {
            return Err(DataplaneError::NativeXdpUnsupported { iface: iface.into(), source })
        }
        Err(e) => return Err(attach_err(kind, iface)(e)),
    };
    let link = prog.take_link(id).map_err(attach_err(kind, iface))?;
    let fd_link = FdLink::try_from(link).map_err(|e| DataplaneError::Attach {
        kind,
        iface: iface.into(),
        source: format!("the kernel attached XDP through netlink, which cannot be pinned: {e}").into(),
    })?;
    let key = LinkKey { kind, iface: iface.into() };
    finish(layout, key, ifindex, Origin::Attached, fd_link, true)
}

fn attach_tc(
    ebpf: &mut Ebpf,
    layout: &PinLayout,
    pinned: &[LinkKey],
    iface: &str,
    ifindex: u32,
    kind: AttachKind,
) -> Result<Attachment, DataplaneError> {
    let (name, attach_type) = match kind {
        AttachKind::TcxEgress => (names::TC_TO_CONTAINER, TcAttachType::Egress),
        _ => (names::TC_CONTAINER, TcAttachType::Ingress),
    };
    let prog: &mut SchedClassifier = program(ebpf, name)?;
    if let Some(key) = usable_pin(layout, pinned, kind.slot(), iface, ifindex, |k| k == kind) {
        let link = SchedClassifierLink::try_from(open_pinned(layout, &key)?).map_err(attach_err(kind, iface))?;
        let id = prog.attach_to_link(link).map_err(attach_err(kind, iface))?;
        let fd_link =
            FdLink::try_from(prog.take_link(id).map_err(attach_err(kind, iface))?).map_err(attach_err(kind, iface))?;
        return finish(layout, key, ifindex, Origin::Adopted, fd_link, false);
    }
    if !has_tcx() {
        return attach_tc_netlink(prog, iface, ifindex, attach_type);
    }
    let id = prog
        .attach_with_options(iface, attach_type, TcAttachOptions::TcxOrder(LinkOrder::default()))
        .map_err(attach_err(kind, iface))?;
    let fd_link =
        FdLink::try_from(prog.take_link(id).map_err(attach_err(kind, iface))?).map_err(attach_err(kind, iface))?;
    finish(layout, LinkKey { kind, iface: iface.into() }, ifindex, Origin::Attached, fd_link, true)
}

/// Whether this kernel has TCX links (>= 6.6).
fn has_tcx() -> bool {
    aya::util::KernelVersion::current().is_ok_and(|v| v >= aya::util::KernelVersion::new(6, 6, 0))
}

/// The priority and handle of hostgate's netlink TC filters: fixed, so that
/// a restarted daemon (or `dataplane detach`) finds them again.
const TC_PRIORITY: u16 = 0x6867;
const TC_HANDLE: TcHandle = TcHandle::new(0, 0x68);

/// TC without TCX (kernel < 6.6): a cls_bpf filter on the interface's
/// clsact qdisc. If our filter is there already (a previous daemon), its
/// program is replaced in place (adopted, no gap); else one is created. The
/// filter outlives the daemon like a pinned link does.
fn attach_tc_netlink(
    prog: &mut SchedClassifier,
    iface: &str,
    ifindex: u32,
    attach_type: TcAttachType,
) -> Result<Attachment, DataplaneError> {
    let kind = if attach_type == TcAttachType::Egress { AttachKind::TcEgress } else { AttachKind::TcIngress };
    // EEXIST: the qdisc is there already (ours or anyone's; clsact is shared).
    if let Err(e) = aya::programs::tc::qdisc_add_clsact(iface) {
        if !e.to_string().contains("exists") {
            warn!(%iface, error = %e, "adding the clsact qdisc");
        }
    }
    let existing = SchedClassifierLink::attached(iface, attach_type, TC_PRIORITY, TC_HANDLE, None)
        .map_err(|e| attach_err(kind, iface)(e))?;
    let (id, origin) = match prog.attach_to_link(existing) {
        Ok(id) => (id, Origin::Adopted),
        Err(_) => {
            let options = NlOptions { priority: TC_PRIORITY, handle: TC_HANDLE, classid: None };
            let id = prog
                .attach_with_options(iface, attach_type, TcAttachOptions::Netlink(options))
                .map_err(attach_err(kind, iface))?;
            (id, Origin::Attached)
        }
    };
    // Dropping the link would delete the filter: it is meant to stay.
    std::mem::forget(prog.take_link(id).map_err(attach_err(kind, iface))?);
    let program_id = prog.info().map(|i| i.id()).unwrap_or(0);
    Ok(Attachment { key: LinkKey { kind, iface: iface.into() }, ifindex, origin, link_id: 0, program_id, _link: None })
}

/// Deletes hostgate's netlink TC filters (both directions) from `iface`;
/// the names of those it found.
pub fn detach_tc_filters(iface: &str) -> Vec<String> {
    let mut removed = Vec::new();
    for (attach_type, kind) in
        [(TcAttachType::Ingress, AttachKind::TcIngress), (TcAttachType::Egress, AttachKind::TcEgress)]
    {
        if let Ok(link) = SchedClassifierLink::attached(iface, attach_type, TC_PRIORITY, TC_HANDLE, None) {
            let prog_present = aya::programs::tc::qdisc_detach_program(iface, attach_type, names::TC_CONTAINER).is_ok()
                | aya::programs::tc::qdisc_detach_program(iface, attach_type, names::TC_TO_CONTAINER).is_ok();
            drop(link);
            if prog_present {
                removed.push(LinkKey { kind, iface: iface.into() }.pin_name());
            }
        }
    }
    removed
}

fn open_pinned(layout: &PinLayout, key: &LinkKey) -> Result<FdLink, DataplaneError> {
    let pinned = PinnedLink::from_pin(layout.link_path(key)).map_err(|e| DataplaneError::Attach {
        kind: key.kind,
        iface: key.iface.clone(),
        source: Box::new(e),
    })?;
    Ok(FdLink::from(pinned))
}

/// Pins a new link (if `pin`), reads back its ids and wraps it up.
fn finish(
    layout: &PinLayout,
    key: LinkKey,
    ifindex: u32,
    origin: Origin,
    link: FdLink,
    pin: bool,
) -> Result<Attachment, DataplaneError> {
    let path = layout.link_path(&key);
    let link = if pin { FdLink::from(link.pin(&path)?) } else { link };
    let state = sys::pinned_link_state(&path).map_err(|source| DataplaneError::Io { path, source })?;
    Ok(Attachment { key, ifindex, origin, link_id: state.link_id, program_id: state.program_id, _link: Some(link) })
}

/// Undoes the attachments this start created; adopted ones stay pinned.
fn roll_back(layout: &PinLayout, attachments: Vec<Attachment>) {
    for a in attachments {
        if a.origin == Origin::Attached {
            if a._link.is_none() {
                detach_tc_filters(&a.key.iface);
                continue;
            }
            let path = layout.link_path(&a.key);
            drop(a);
            remove_pin(&path);
        }
    }
}

fn remove_pin(path: &std::path::Path) {
    if let Err(e) = std::fs::remove_file(path) {
        if e.kind() != io::ErrorKind::NotFound {
            warn!(path = %path.display(), error = %e, "could not remove pin");
        }
    }
}
