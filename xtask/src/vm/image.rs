//! The VM image, built from Debian packages and cached:
//!
//! - the kernel: Debian 12's `linux-image-*-cloud-amd64` (6.1), downloaded
//!   with apt into the cache, never installed on the host. bookworm-backports'
//!   6.12 (which has TCX, for container hooks) crashed about one boot in four
//!   under this QEMU 7.2's TCG, so the stable kernel it is; scenarios that
//!   need TCX wait for a netlink-TC fallback or a newer QEMU;
//! - the base initramfs: busybox (Debian's busybox-static), the host's
//!   iproute2 `ip` and `nft` with their libraries, the kernel modules the
//!   scenarios need (decompressed, in dependency order) and `vm-tests/init`;
//!   cached under a name that changes with the kernel, busybox and recipe;
//! - an overlay initramfs per run: hostgate's binary (debug symbols
//!   stripped) and its libraries. The kernel unpacks both archives in turn.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context};

use super::cpio::{self, Entry};
use crate::deps;

/// Where images and packages are kept between runs.
pub const CACHE: &str = "/var/cache/hostgate/vm";
/// Bump when the base image's recipe changes in a way the key below misses.
const RECIPE: u32 = 6;
/// Modules the scenarios need (their dependencies are found and loaded first).
const MODULES: &[&str] = &[
    "virtio_pci",
    "virtio_net",
    "veth",
    "sch_ingress",
    "cls_bpf",
    "bridge",
    "nf_tables",
    "nft_chain_nat",
    "nft_nat",
    "nft_masq",
];
/// Host binaries copied in with their libraries.
const HOST_BINARIES: &[&str] = &["/usr/sbin/ip", "/usr/sbin/nft", "/usr/sbin/ethtool"];

fn run(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// apt with a configuration of its own under the cache (bookworm and
/// bookworm-backports), so the host's sources and state are untouched.
fn apt(tool: &str, args: &[&str]) -> anyhow::Result<String> {
    let dir = Path::new(CACHE).join("apt");
    let options = [
        format!("Dir::Etc::SourceList={}", dir.join("sources.list").display()),
        "Dir::Etc::SourceParts=/dev/null".to_string(),
        format!("Dir::State::Lists={}", dir.join("lists").display()),
        format!("Dir::Cache={}", dir.join("cache").display()),
    ];
    let mut cmd = Command::new(tool);
    for o in &options {
        cmd.args(["-o", o]);
    }
    run(cmd.args(args).current_dir(Path::new(CACHE).join("debs")))
}

fn apt_update() -> anyhow::Result<()> {
    let dir = Path::new(CACHE).join("apt");
    for sub in ["lists/partial", "cache/archives/partial"] {
        std::fs::create_dir_all(dir.join(sub))?;
    }
    std::fs::write(
        dir.join("sources.list"),
        "deb http://deb.debian.org/debian bookworm main\ndeb http://deb.debian.org/debian bookworm-backports main\n",
    )?;
    println!("xtask: vm: reading the Debian package lists (bookworm, bookworm-backports)");
    apt("apt-get", &["update", "-q"])?;
    Ok(())
}

/// The concrete bookworm cloud kernel package, e.g. `linux-image-6.1.0-56-cloud-amd64`.
fn kernel_package() -> anyhow::Result<String> {
    let show = apt("apt-cache", &["show", "linux-image-cloud-amd64"])?;
    for stanza in show.split("\n\n") {
        let field = |name: &str| stanza.lines().find_map(|l| l.strip_prefix(name).map(str::trim));
        if field("Version:").is_some_and(|v| !v.contains("bpo")) {
            if let Some(dep) = field("Depends:").and_then(|d| d.split_whitespace().next()) {
                return Ok(dep.to_string());
            }
        }
    }
    bail!("no bookworm linux-image-cloud-amd64 in the package lists")
}

/// Downloads (once) and unpacks `package` under the cache; its root.
fn unpacked(package: &str) -> anyhow::Result<PathBuf> {
    let debs = Path::new(CACHE).join("debs");
    let root = Path::new(CACHE).join("root").join(package);
    if root.exists() {
        return Ok(root);
    }
    let find = || {
        std::fs::read_dir(&debs)
            .ok()?
            .flatten()
            .map(|e| e.path())
            .find(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with(&format!("{package}_"))))
    };
    if find().is_none() {
        println!("xtask: vm: downloading {package}");
        apt("apt-get", &["download", "-q", package])?;
    }
    let deb = find().with_context(|| format!("{package} was not downloaded"))?;
    let tmp = root.with_extension("partial");
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp)?;
    run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&tmp))?;
    std::fs::rename(&tmp, &root)?;
    Ok(root)
}

/// The base image (kernel + base initramfs), built once and cached.
pub fn base() -> anyhow::Result<(PathBuf, PathBuf)> {
    std::fs::create_dir_all(Path::new(CACHE).join("debs"))?;
    let lists = Path::new(CACHE).join("apt/lists");
    if !lists.exists() || std::fs::read_dir(&lists)?.count() < 2 {
        apt_update()?;
    }
    let kpkg = match kernel_package() {
        Ok(p) => p,
        Err(_) => {
            apt_update()?;
            kernel_package()?
        }
    };
    let kroot = unpacked(&kpkg)?;
    let bbroot = unpacked("busybox-static")?;
    let kver = std::fs::read_dir(kroot.join("lib/modules"))?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .next()
        .context("no modules in the kernel package")?;
    let kernel = vmlinux(&kroot.join(format!("boot/vmlinuz-{kver}")))?;
    // The key covers what goes in: a changed module list or init rebuilds.
    let init = std::fs::read(deps::workspace_root().join("vm-tests/init")).context("reading vm-tests/init")?;
    let key = {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (RECIPE, MODULES, HOST_BINARIES, &init).hash(&mut h);
        h.finish()
    };
    let base = Path::new(CACHE).join(format!("base-{kver}-{key:016x}.cpio.gz"));
    if !base.exists() {
        // Images of other kernels or recipes are stale now.
        for e in std::fs::read_dir(CACHE)?.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with("base-") && name.ends_with(".cpio.gz") {
                let _ = std::fs::remove_file(e.path());
            }
        }
        println!("xtask: vm: building the base image for kernel {kver}");
        build_base(&kroot.join("lib/modules").join(&kver), &bbroot.join("bin/busybox"), &base)?;
    }
    Ok((kernel, base))
}

/// The uncompressed ELF kernel inside a bzImage, which QEMU boots directly
/// (PVH): decompressing an xz or zstd payload under TCG costs seconds per
/// boot. The payload sits at (setup_sects + 1) * 512 + payload_offset.
fn vmlinux(bzimage: &Path) -> anyhow::Result<PathBuf> {
    let out = bzimage.with_file_name("vmlinux");
    if out.exists() {
        return Ok(out);
    }
    let image = std::fs::read(bzimage)?;
    let u32_at = |at: usize| image.get(at..at + 4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize);
    let setup_sects = *image.get(0x1f1).context("not a bzImage")? as usize;
    let (offset, length) = (u32_at(0x248).context("not a bzImage")?, u32_at(0x24c).context("not a bzImage")?);
    let start = (setup_sects + 1) * 512 + offset;
    let payload = image.get(start..start + length).context("bzImage payload out of range")?;
    let tool = match payload {
        [0xfd, b'7', b'z', b'X', b'Z', ..] => ["xz", "-dc", "--single-stream"].as_slice(),
        [0x28, 0xb5, 0x2f, 0xfd, ..] => ["zstd", "-dc"].as_slice(),
        [0x1f, 0x8b, ..] => ["gzip", "-dc"].as_slice(),
        // LZ4 and others decompress fast enough in the guest: boot the bzImage.
        _ => return Ok(bzimage.to_path_buf()),
    };
    let mut child = Command::new(tool[0])
        .args(&tool[1..])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("running {}", tool[0]))?;
    let mut stdin = child.stdin.take().context("stdin")?;
    let payload = payload.to_vec();
    let feeder = std::thread::spawn(move || std::io::Write::write_all(&mut stdin, &payload));
    let result = child.wait_with_output()?;
    let _ = feeder.join();
    if result.stdout.get(..4) != Some(b"\x7fELF") {
        bail!("{}: the payload did not decompress to an ELF kernel", bzimage.display());
    }
    std::fs::write(&out, result.stdout)?;
    Ok(out)
}

fn dir(path: &str) -> Entry {
    Entry { path: path.into(), mode: cpio::DIR | 0o755, data: vec![] }
}

fn file(path: &str, mode: u32, data: Vec<u8>) -> Entry {
    Entry { path: path.trim_start_matches('/').into(), mode: cpio::FILE | mode, data }
}

fn build_base(modules: &Path, busybox: &Path, out: &Path) -> anyhow::Result<()> {
    let mut entries: Vec<Entry> = ["bin", "sbin", "usr", "usr/bin", "usr/sbin", "lib", "lib64", "lib/x86_64-linux-gnu"]
        .iter()
        .chain(&["proc", "sys", "dev", "tmp", "run", "etc", "modules", "var", "var/lib", "root"])
        .map(|d| dir(d))
        .collect();
    entries.push(file("bin/busybox", 0o755, std::fs::read(busybox)?));
    for applet in run(Command::new(busybox).arg("--list"))?.lines() {
        if !applet.is_empty() && applet != "busybox" && applet != "ip" {
            entries.push(Entry {
                path: format!("bin/{applet}"),
                mode: cpio::SYMLINK | 0o777,
                data: b"busybox".to_vec(),
            });
        }
    }
    binaries_with_libraries(HOST_BINARIES, &mut entries)?;
    entries.push(Entry { path: "sbin/ip".into(), mode: cpio::SYMLINK | 0o777, data: b"/usr/sbin/ip".to_vec() });
    let order = module_order(modules, MODULES)?;
    for (name, bytes) in &order {
        entries.push(file(&format!("modules/{name}.ko"), 0o644, bytes.clone()));
    }
    let names: Vec<&str> = order.iter().map(|(n, _)| n.as_str()).collect();
    entries.push(file("modules/order", 0o644, (names.join("\n") + "\n").into_bytes()));
    let init = deps::workspace_root().join("vm-tests/init");
    entries.push(file("init", 0o755, std::fs::read(&init).with_context(|| format!("reading {}", init.display()))?));
    entries.push(file("etc/passwd", 0o644, b"root:x:0:0:root:/root:/bin/sh\n".to_vec()));
    entries.push(file("etc/group", 0o644, b"root:x:0:\n".to_vec()));
    let mut archive = Vec::new();
    cpio::write(&mut archive, &entries);
    gzip(&archive, out)
}

fn gzip(data: &[u8], out: &Path) -> anyhow::Result<()> {
    let raw = out.with_extension("raw");
    std::fs::write(&raw, data)?;
    let gz = run(Command::new("sh").arg("-c").arg(format!(
        "gzip -6 -c '{}' > '{}.partial' && echo ok",
        raw.display(),
        out.display()
    )))?;
    if gz.trim() != "ok" {
        bail!("gzip failed");
    }
    std::fs::rename(format!("{}.partial", out.display()), out)?;
    std::fs::remove_file(&raw)?;
    Ok(())
}

/// Adds each binary and the shared libraries `ldd` names (paths kept: the
/// loader finds them under /lib/x86_64-linux-gnu without a cache).
fn binaries_with_libraries(binaries: &[&str], entries: &mut Vec<Entry>) -> anyhow::Result<()> {
    let mut libs = BTreeSet::new();
    for bin in binaries {
        entries.push(file(bin, 0o755, std::fs::read(bin).with_context(|| format!("reading {bin}"))?));
        for line in run(Command::new("ldd").arg(bin))?.lines() {
            let path = match line.split("=>").nth(1) {
                Some(rest) => rest.split_whitespace().next(),
                None => line.split_whitespace().next().filter(|p| p.starts_with('/')),
            };
            if let Some(p) = path.filter(|p| p.starts_with('/')) {
                libs.insert(p.to_string());
            }
        }
    }
    for lib in libs {
        let real = std::fs::canonicalize(&lib)?;
        entries.push(file(&lib, 0o755, std::fs::read(&real)?));
    }
    Ok(())
}

/// `wanted` modules and their dependencies, dependencies first, each
/// decompressed. Dependencies come from the `depends=` string of the
/// module's .modinfo section (and crc32c for `softdep=pre: crc32c`).
fn module_order(dir: &Path, wanted: &[&str]) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
    let mut index = std::collections::BTreeMap::new();
    let mut stack = vec![dir.join("kernel")];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d)?.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if let Some(name) = p.file_name().map(|n| n.to_string_lossy().into_owned()) {
                if let Some(stem) = name.strip_suffix(".ko.xz").or_else(|| name.strip_suffix(".ko")) {
                    index.insert(stem.replace('-', "_"), p);
                }
            }
        }
    }
    let mut order = Vec::new();
    let mut seen = BTreeSet::new();
    for m in wanted {
        visit(m, &index, &mut seen, &mut order)?;
    }
    Ok(order)
}

fn visit(
    name: &str,
    index: &std::collections::BTreeMap<String, PathBuf>,
    seen: &mut BTreeSet<String>,
    order: &mut Vec<(String, Vec<u8>)>,
) -> anyhow::Result<()> {
    let name = name.replace('-', "_");
    if !seen.insert(name.clone()) {
        return Ok(());
    }
    let Some(path) = index.get(&name) else {
        return Ok(()); // built into the kernel
    };
    let bytes = if path.extension().is_some_and(|e| e == "xz") {
        let out = Command::new("xz").arg("-dc").arg(path).output().context("running xz")?;
        if !out.status.success() {
            bail!("xz -dc {} failed", path.display());
        }
        out.stdout
    } else {
        std::fs::read(path)?
    };
    for dep in modinfo(&bytes, "depends").split(',').filter(|d| !d.is_empty()) {
        visit(dep, index, seen, order)?;
    }
    if modinfo(&bytes, "softdep").contains("crc32c") {
        visit("crc32c_generic", index, seen, order)?;
    }
    order.push((name, bytes));
    Ok(())
}

/// The value of `key=` in a module's NUL-separated .modinfo strings.
fn modinfo(module: &[u8], key: &str) -> String {
    let needle = format!("\0{key}=");
    module
        .windows(needle.len())
        .position(|w| w == needle.as_bytes())
        .map(|at| {
            let rest = &module[at + needle.len()..];
            let end = rest.iter().position(|b| *b == 0).unwrap_or(rest.len());
            String::from_utf8_lossy(&rest[..end]).into_owned()
        })
        .unwrap_or_default()
}

/// The per-run overlay: hostgate's binary, stripped of debug info, with
/// its libraries, and `extra` files.
pub fn overlay(hostgate: &Path, out: &Path, extra: Vec<Entry>) -> anyhow::Result<()> {
    let stripped = out.with_extension("hostgate");
    run(Command::new("objcopy").arg("--strip-debug").arg(hostgate).arg(&stripped))?;
    let mut entries = vec![dir("usr"), dir("usr/bin")];
    let bin = stripped.display().to_string();
    binaries_with_libraries(&[&bin], &mut entries)?;
    // Installed as /usr/bin/hostgate whatever the temporary name.
    if let Some(e) = entries.iter_mut().find(|e| e.path == bin.trim_start_matches('/')) {
        e.path = "usr/bin/hostgate".into();
    }
    entries.extend(extra);
    let mut archive = Vec::new();
    cpio::write(&mut archive, &entries);
    std::fs::write(out, archive)?;
    std::fs::remove_file(&stripped)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn modinfo_strings() {
        let m = b"\x7fELF junk\0license=GPL\0depends=failover,net_failover\0softdep=pre: crc32c\0name=x\0";
        assert_eq!(super::modinfo(m, "depends"), "failover,net_failover");
        assert_eq!(super::modinfo(m, "softdep"), "pre: crc32c");
        assert_eq!(super::modinfo(m, "alias"), "");
    }
}
