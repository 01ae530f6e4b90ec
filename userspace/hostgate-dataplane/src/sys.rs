//! The few kernel interfaces aya does not expose: the bpffs mount and the
//! interface index of a pinned link (to tell a live link from one whose
//! interface was deleted and re-created).

use std::{
    ffi::CString,
    io,
    os::{
        fd::{FromRawFd, OwnedFd},
        unix::ffi::OsStrExt,
    },
    path::Path,
};

const BPF_FS_MAGIC: libc::c_long = 0xcafe_4a11;
const BPF_OBJ_GET: libc::c_long = 7;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
/// Where bpffs lives when the system mounted it; we mount it there if not.
pub const BPFFS_MOUNT: &str = "/sys/fs/bpf";

fn c_path(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes()).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))
}

fn is_bpffs(path: &Path) -> io::Result<bool> {
    let c = c_path(path)?;
    // SAFETY: statfs writes into the zeroed struct we own.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    #[allow(clippy::unnecessary_cast)] // f_type's width differs between libcs
    Ok(st.f_type as libc::c_long == BPF_FS_MAGIC)
}

/// Makes sure `dir` is on a bpffs: mounts bpffs on /sys/fs/bpf if `dir` is
/// below it and nothing is mounted there yet. Returns whether it mounted.
pub fn ensure_bpffs(dir: &Path) -> io::Result<bool> {
    let existing = dir.ancestors().find(|p| p.exists()).unwrap_or(Path::new("/"));
    if is_bpffs(existing)? {
        return Ok(false);
    }
    if !dir.starts_with(BPFFS_MOUNT) {
        return Err(io::Error::other(format!("{} is not on a bpf filesystem", dir.display())));
    }
    std::fs::create_dir_all(BPFFS_MOUNT)?;
    let (src, target, fstype) = (c_path(Path::new("bpf"))?, c_path(Path::new(BPFFS_MOUNT))?, c_path(Path::new("bpf"))?);
    // SAFETY: all pointers are valid NUL-terminated strings for the call's duration.
    let rc = unsafe { libc::mount(src.as_ptr(), target.as_ptr(), fstype.as_ptr(), 0, std::ptr::null()) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(true)
}

fn bpf(cmd: libc::c_long, attr: *mut u8, size: usize) -> io::Result<libc::c_long> {
    // SAFETY: attr points to a live, properly sized bpf_attr prefix.
    let rc = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr, size) };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// The kernel's view of a pinned link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkState {
    pub link_id: u32,
    pub program_id: u32,
    /// 0 once the interface is gone (a "defunct" link).
    pub ifindex: u32,
}

/// Reads id, program and interface of the link pinned at `path`.
pub fn pinned_link_state(path: &Path) -> io::Result<LinkState> {
    #[repr(C)]
    struct ObjGet {
        pathname: u64,
        bpf_fd: u32,
        file_flags: u32,
    }
    #[repr(C)]
    struct InfoByFd {
        bpf_fd: u32,
        info_len: u32,
        info: u64,
    }
    /// Prefix of struct bpf_link_info: the xdp and tcx union arms both start
    /// with the ifindex at offset 16.
    #[repr(C)]
    #[derive(Default)]
    struct LinkInfo {
        link_type: u32,
        id: u32,
        prog_id: u32,
        _pad: u32,
        ifindex: u32,
        _rest: [u32; 13],
    }

    let c = c_path(path)?;
    let mut get = ObjGet { pathname: c.as_ptr() as u64, bpf_fd: 0, file_flags: 0 };
    let fd = bpf(BPF_OBJ_GET, (&mut get as *mut ObjGet).cast(), std::mem::size_of::<ObjGet>())?;
    // SAFETY: BPF_OBJ_GET returned a new fd that we now own.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let mut info = LinkInfo::default();
    let mut attr = InfoByFd {
        bpf_fd: std::os::fd::AsRawFd::as_raw_fd(&fd) as u32,
        info_len: std::mem::size_of::<LinkInfo>() as u32,
        info: (&mut info as *mut LinkInfo) as u64,
    };
    bpf(BPF_OBJ_GET_INFO_BY_FD, (&mut attr as *mut InfoByFd).cast(), std::mem::size_of::<InfoByFd>())?;
    Ok(LinkState { link_id: info.id, program_id: info.prog_id, ifindex: info.ifindex })
}

/// Index of interface `name` in the current network namespace.
pub fn ifindex(name: &str) -> Option<u32> {
    let c = CString::new(name).ok()?;
    // SAFETY: c is a valid NUL-terminated string.
    let idx = unsafe { libc::if_nametoindex(c.as_ptr()) };
    (idx != 0).then_some(idx)
}
