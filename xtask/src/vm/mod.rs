//! `cargo xtask vm-test [SCENARIO...]`: hostgate on a kernel of its own
//! (Debian's 6.12 cloud kernel), on virtio-net, in QEMU VMs on a lab
//! segment the harness builds (see `machine.rs`, `image.rs`). Each scenario
//! reports pass or fail with its time; a failed one keeps its run
//! directory (console logs, daemon logs) and prints its path.

mod cpio;
mod image;
mod machine;
mod scenarios;

use std::{
    path::{Path, PathBuf},
    time::Instant,
};

use anyhow::{bail, Context};

use crate::deps;

pub use machine::{Lab, Vm};

/// System packages the harness needs on the host.
const HOST_PACKAGES: &[(&str, &str)] = &[
    ("qemu-system-x86", "runs the test VMs"),
    ("xz-utils", "unpacks the kernel's modules"),
    ("binutils", "objcopy strips hostgate's binary for the image"),
    ("etcd-server", "the cluster store of the failover scenario"),
];

/// A scenario: a name, what it shows, and the code that drives its lab.
pub struct Scenario {
    pub name: &'static str,
    pub about: &'static str,
    pub run: fn(&mut Env) -> anyhow::Result<()>,
}

/// What a scenario gets: the images, and where to put its run directory.
pub struct Env {
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    pub dir: PathBuf,
}

impl Env {
    /// A lab for this scenario, its VMs started (booting in parallel).
    pub fn lab(&self, vms: &[&str]) -> anyhow::Result<Lab> {
        let mut lab = Lab::new("vm", self.dir.clone(), self.kernel.clone(), self.initrd.clone())?;
        for name in vms {
            lab.start(name)?;
        }
        lab.wait_booted()?;
        for vm in &lab.vms {
            if let Some(t) = vm.boot_time {
                println!("xtask: vm: {} booted in {:.1} s", vm.name, t.as_secs_f64());
            }
        }
        Ok(lab)
    }
}

/// Builds hostgate and the images; the environment for `scenario`.
fn prepare(run_dir: &Path) -> anyhow::Result<(PathBuf, PathBuf)> {
    deps::ensure(deps::BUILD_AND_TEST)?;
    deps::ensure(HOST_PACKAGES)?;
    if !deps::is_root() {
        bail!("the VM tests create namespaces and taps: run them as root");
    }
    deps::cargo(&["build", "--package", "hostgate"])?;
    let hostgate = deps::target_dir().join("debug/hostgate");
    let (kernel, base) = image::base()?;
    std::fs::create_dir_all(run_dir)?;
    let overlay = run_dir.join("overlay.cpio");
    image::overlay(&hostgate, &overlay, vec![])?;
    // QEMU takes one initrd: the two archives back to back, the second
    // (uncompressed) one 4-byte aligned, as the kernel's unpacker wants.
    let initrd = run_dir.join("initrd");
    let mut bytes = std::fs::read(&base)?;
    bytes.resize(bytes.len().next_multiple_of(4), 0);
    bytes.extend(std::fs::read(&overlay)?);
    std::fs::write(&initrd, bytes)?;
    std::fs::remove_file(&overlay)?;
    Ok((kernel, initrd))
}

/// Runs the named scenarios (all when empty); fails if any failed.
pub fn run(names: &[String]) -> anyhow::Result<()> {
    let chosen: Vec<&Scenario> = if names.is_empty() {
        scenarios::ALL.iter().collect()
    } else {
        names
            .iter()
            .map(|n| {
                scenarios::ALL.iter().find(|s| s.name == n).with_context(|| {
                    let all: Vec<&str> = scenarios::ALL.iter().map(|s| s.name).collect();
                    format!("unknown scenario {n:?} (available: {})", all.join(", "))
                })
            })
            .collect::<anyhow::Result<_>>()?
    };
    let root = std::env::temp_dir().join(format!("hg-vm-test-{}", std::process::id()));
    let (kernel, initrd) = prepare(&root)?;
    let started = Instant::now();
    let mut failed = Vec::new();
    for s in &chosen {
        let dir = root.join(s.name);
        std::fs::create_dir_all(&dir)?;
        let mut env = Env { kernel: kernel.clone(), initrd: initrd.clone(), dir: dir.clone() };
        println!("xtask: vm-test {}: {}", s.name, s.about);
        let t = Instant::now();
        match (s.run)(&mut env) {
            Ok(()) => {
                println!("xtask: vm-test {}: PASS in {:.1} s", s.name, t.elapsed().as_secs_f64());
                let _ = std::fs::remove_dir_all(&dir);
            }
            Err(e) => {
                println!("xtask: vm-test {}: FAIL in {:.1} s: {e:#}", s.name, t.elapsed().as_secs_f64());
                println!("xtask: vm-test {}: console and daemon logs kept in {}", s.name, dir.display());
                failed.push(s.name);
            }
        }
    }
    println!("xtask: vm-test: {} scenario(s) in {:.0} s", chosen.len(), started.elapsed().as_secs_f64());
    // The initrd (about 50 MB) is rebuilt by every run: only a failed
    // scenario's logs are worth keeping.
    let _ = std::fs::remove_file(&initrd);
    if !failed.is_empty() {
        bail!("vm-test failed: {}", failed.join(", "));
    }
    let _ = std::fs::remove_dir(&root);
    Ok(())
}

/// The scenario `cargo xtask test` runs (and so CI): boot one VM, attach,
/// pass traffic.
pub fn smoke() -> anyhow::Result<()> {
    run(&["smoke".to_string()])
}
