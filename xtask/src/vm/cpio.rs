//! The `newc` cpio format the kernel unpacks an initramfs from: pure, so
//! the image needs no cpio tool on the host. Several archives may be
//! concatenated; the kernel unpacks each in turn, later files replacing
//! earlier ones.

/// One entry: a path (no leading '/'), its mode (type and permissions) and
/// its contents (a file's bytes, a symlink's target; empty for a directory).
pub struct Entry {
    pub path: String,
    pub mode: u32,
    pub data: Vec<u8>,
}

pub const DIR: u32 = 0o040_000;
pub const FILE: u32 = 0o100_000;
pub const SYMLINK: u32 = 0o120_000;

/// Appends `entries` and the trailer to `out`.
pub fn write(out: &mut Vec<u8>, entries: &[Entry]) {
    for (ino, e) in entries.iter().enumerate() {
        header(out, ino as u32 + 1, e.mode, e.data.len() as u32, &e.path);
        out.extend_from_slice(&e.data);
        pad(out);
    }
    header(out, 0, 0, 0, "TRAILER!!!");
}

fn header(out: &mut Vec<u8>, ino: u32, mode: u32, size: u32, name: &str) {
    let nlink = if mode & DIR == DIR { 2 } else { 1 };
    // magic, ino, mode, uid, gid, nlink, mtime, filesize, devmajor,
    // devminor, rdevmajor, rdevminor, namesize (with NUL), check
    let fields = [ino, mode, 0, 0, nlink, 0, size, 0, 0, 0, 0, name.len() as u32 + 1, 0];
    out.extend_from_slice(b"070701");
    for f in fields {
        out.extend_from_slice(format!("{f:08x}").as_bytes());
    }
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    pad(out);
}

/// Pads to a multiple of four bytes, as newc requires after headers and data.
fn pad(out: &mut Vec<u8>) {
    out.resize(out.len().next_multiple_of(4), 0);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newc_layout() {
        let mut out = Vec::new();
        write(&mut out, &[Entry { path: "init".into(), mode: FILE | 0o755, data: b"#!/bin/sh\n".to_vec() }]);
        assert_eq!(&out[..6], b"070701");
        // Header (110 bytes) + "init\0" = 115, padded to 116; then 10 bytes of data, padded to 12.
        assert_eq!(&out[110..114], b"init");
        assert_eq!(&out[116..126], b"#!/bin/sh\n");
        assert_eq!(&out[128..134], b"070701", "the trailer follows, aligned");
        let trailer = String::from_utf8_lossy(&out[128 + 110..128 + 120]);
        assert_eq!(trailer, "TRAILER!!!");
        assert!(out.len().is_multiple_of(4));
        // mode field (the third) of the first header
        assert_eq!(&out[14..22], format!("{:08x}", FILE | 0o755).as_bytes());
    }
}
