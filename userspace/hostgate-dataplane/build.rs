//! Compiles the C BPF programs in `xdp-ebpf/` into one object with BTF, so a
//! plain `cargo build` / `cargo test` always has a fresh object to embed.

use std::{
    env,
    path::{Path, PathBuf},
    process::{exit, Command},
};

/// Oldest clang whose BPF backend emits the BTF and CO-RE we rely on.
const MIN_CLANG: u32 = 14;
const INSTALL_HINT: &str = "apt-get install -y clang-19 libbpf-dev linux-libc-dev";

fn main() {
    let manifest = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let src_root = manifest.join("../../xdp-ebpf");
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    println!("cargo:rerun-if-changed={}", src_root.display());
    println!("cargo:rerun-if-env-changed=CLANG");

    let clang = find_clang().unwrap_or_else(|| {
        fail(&format!(
            "no clang >= {MIN_CLANG} found to build the BPF programs in xdp-ebpf/: run `{INSTALL_HINT}` (or set CLANG=/path/to/clang)"
        ))
    });
    if !Path::new("/usr/include/bpf/bpf_helpers.h").exists() {
        fail(&format!("libbpf headers (bpf/bpf_helpers.h) missing for xdp-ebpf/: run `{INSTALL_HINT}`"));
    }

    for name in ["hostgate", "xdp_pass", "bench"] {
        let status = Command::new(&clang)
            .args(["-target", "bpf", "-O2", "-g", "-Wall", "-Wextra", "-Werror"])
            .arg("-I")
            .arg(src_root.join("include"))
            .arg(format!("-I/usr/include/{}", multiarch()))
            .arg("-c")
            .arg(src_root.join(format!("src/{name}.bpf.c")))
            .arg("-o")
            .arg(out_dir.join(format!("{name}.bpf.o")))
            .status()
            .unwrap_or_else(|e| fail(&format!("could not run {clang}: {e}")));
        if !status.success() {
            fail(&format!("clang failed to compile xdp-ebpf/src/{name}.bpf.c (errors above)"));
        }
    }
}

/// The first usable clang: $CLANG, then versioned names newest first, then `clang`.
fn find_clang() -> Option<String> {
    let mut candidates: Vec<String> = env::var("CLANG").ok().into_iter().collect();
    candidates.extend((MIN_CLANG..=22).rev().map(|v| format!("clang-{v}")));
    candidates.push("clang".into());
    candidates.into_iter().find(|c| clang_major(c).is_some_and(|v| v >= MIN_CLANG))
}

fn clang_major(clang: &str) -> Option<u32> {
    let out = Command::new(clang).arg("-dumpversion").output().ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    text.trim().split('.').next()?.parse().ok()
}

/// Debian keeps `asm/types.h` under a multiarch directory.
fn multiarch() -> String {
    let arch = env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_else(|_| "x86_64".into());
    match arch.as_str() {
        "aarch64" => "aarch64-linux-gnu".into(),
        other => format!("{other}-linux-gnu"),
    }
}

fn fail(msg: &str) -> ! {
    println!("cargo:warning={msg}");
    eprintln!("error: {msg}");
    exit(1)
}
