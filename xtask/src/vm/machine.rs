//! VMs under QEMU on a lab segment: a network namespace the harness
//! creates, holding a bridge with one tap per VM and an address of its own
//! (the lab is also the client host). No user-mode networking, no route
//! out: the VMs reach nothing but each other and the lab.
//!
//! Each VM has two serial ports: ttyS0, the console (logged to
//! `console.log`, a debug shell on `console.sock`), and ttyS1, a shell the
//! harness drives over `control.sock`: a command, then a marker carrying
//! its exit status.

use std::{
    io::{BufRead, BufReader, Write},
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context};
use hostgate_testbed::{ChildGuard, Netns};

/// The lab's own addresses on its bridge.
pub const LAB_V4: &str = "198.18.60.1";
pub const LAB_V6: &str = "2001:db8:60::1";

/// The lab segment and its VMs; everything is removed on drop (the run
/// directory with the logs stays if the scenario failed).
pub struct Lab {
    pub ns: Netns,
    pub dir: PathBuf,
    pub vms: Vec<Vm>,
    initrd: PathBuf,
    kernel: PathBuf,
}

impl Lab {
    pub fn new(name: &str, dir: PathBuf, kernel: PathBuf, initrd: PathBuf) -> anyhow::Result<Lab> {
        let ns = Netns::create(&hostgate_testbed::unique_name(name))?;
        ns.ip(["link", "add", "br0", "type", "bridge"])?;
        ns.ip(["addr", "add", &format!("{LAB_V4}/24"), "dev", "br0"])?;
        ns.ip(["addr", "add", &format!("{LAB_V6}/64"), "dev", "br0", "nodad"])?;
        ns.ip(["link", "set", "br0", "up"])?;
        ns.ip(["link", "set", "lo", "up"])?;
        Ok(Lab { ns, dir, vms: Vec::new(), initrd, kernel })
    }

    /// Starts a VM named `name` (its index gives its MAC and tap) without
    /// waiting for it to boot; see [`Lab::wait_booted`].
    pub fn start(&mut self, name: &str) -> anyhow::Result<usize> {
        let index = self.vms.len();
        let tap = format!("tap{index}");
        self.ns.ip(["tuntap", "add", "dev", &tap, "mode", "tap"])?;
        self.ns.ip(["link", "set", &tap, "master", "br0"])?;
        self.ns.ip(["link", "set", &tap, "up"])?;
        let dir = self.dir.join(name);
        std::fs::create_dir_all(&dir)?;
        let vm = Vm::spawn(&self.ns, name, index, &tap, &dir, &self.kernel, &self.initrd)?;
        self.vms.push(vm);
        Ok(index)
    }

    /// Waits until every started VM has booted and its control shell answers.
    pub fn wait_booted(&mut self) -> anyhow::Result<()> {
        for vm in &mut self.vms {
            vm.wait_ready(Duration::from_secs(180))?;
        }
        Ok(())
    }

    pub fn vm(&mut self, name: &str) -> &mut Vm {
        self.vms.iter_mut().find(|v| v.name == name).expect("a VM of this lab")
    }
}

/// Whether KVM can be used here (else QEMU emulates with TCG): /dev/kvm
/// opens and the CPU has hardware virtualisation. (A /dev/kvm without
/// vmx/svm exists on some hosts and fails at the first instruction.)
fn kvm() -> bool {
    let flags = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let hardware = flags.lines().any(|l| l.starts_with("flags") && (l.contains(" vmx") || l.contains(" svm")));
    hardware && std::fs::OpenOptions::new().read(true).write(true).open("/dev/kvm").is_ok()
}

/// One VM.
pub struct Vm {
    pub name: String,
    pub dir: PathBuf,
    qemu: Option<ChildGuard>,
    control: Option<BufReader<UnixStream>>,
    started: Instant,
    pub boot_time: Option<Duration>,
}

impl Vm {
    fn spawn(
        ns: &Netns,
        name: &str,
        index: usize,
        tap: &str,
        dir: &Path,
        kernel: &Path,
        initrd: &Path,
    ) -> anyhow::Result<Vm> {
        let mac = format!("52:54:00:60:00:{:02x}", index + 10);
        let (accel, cpu) = if kvm() { ("kvm", "host") } else { ("tcg", "max") };
        let console = dir.join("console.sock");
        let control = dir.join("control.sock");
        let log = dir.join("console.log");
        for f in [&console, &control, &log] {
            let _ = std::fs::remove_file(f);
        }
        let out = std::fs::File::create(dir.join("qemu.log"))?;
        let child = Command::new("nsenter")
            .arg(format!("--net={}", ns.path()))
            .args(["--", "qemu-system-x86_64", "-name", name, "-machine", "q35", "-accel", accel, "-cpu", cpu])
            .args(["-smp", "1", "-m", "768", "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot"])
            .arg("-kernel")
            .arg(kernel)
            .arg("-initrd")
            .arg(initrd)
            .args(["-append", &format!("console=ttyS0 panic=-1 quiet hg.name={name}")])
            .arg("-chardev")
            .arg(format!("socket,id=console,path={},server=on,wait=off,logfile={}", console.display(), log.display()))
            .args(["-serial", "chardev:console"])
            .arg("-chardev")
            .arg(format!("socket,id=control,path={},server=on,wait=off", control.display()))
            .args(["-serial", "chardev:control"])
            .args(["-netdev", &format!("tap,id=n0,ifname={tap},script=no,downscript=no,vhost=off")])
            .args(["-device", &format!("virtio-net-pci,netdev=n0,mac={mac},romfile=")])
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .context("starting qemu-system-x86_64 (apt-get install qemu-system-x86)")?;
        Ok(Vm {
            name: name.to_string(),
            dir: dir.to_path_buf(),
            qemu: Some(ChildGuard::new("qemu", child)),
            control: None,
            started: Instant::now(),
            boot_time: None,
        })
    }

    fn console(&self) -> String {
        std::fs::read_to_string(self.dir.join("console.log")).unwrap_or_default()
    }

    fn wait_ready(&mut self, limit: Duration) -> anyhow::Result<()> {
        while !self.console().contains("HG-VM-READY") {
            if let Some(status) = self.qemu.as_mut().and_then(ChildGuard::try_exited) {
                let qemu = std::fs::read_to_string(self.dir.join("qemu.log")).unwrap_or_default();
                bail!("{}: qemu exited ({status}) before the VM was ready: {qemu}", self.name);
            }
            if self.started.elapsed() > limit {
                bail!(
                    "{}: not ready within {limit:?} (console: {})",
                    self.name,
                    self.dir.join("console.log").display()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        self.boot_time = Some(self.started.elapsed());
        let stream =
            UnixStream::connect(self.dir.join("control.sock")).context("connecting to the VM's control port")?;
        stream.set_read_timeout(Some(Duration::from_millis(200)))?;
        self.control = Some(BufReader::new(stream));
        self.sh("true", Duration::from_secs(30)).context("the VM's control shell does not answer")?;
        Ok(())
    }

    /// Runs `cmd` in the VM's shell; its exit status and output.
    pub fn sh(&mut self, cmd: &str, limit: Duration) -> anyhow::Result<(i32, String)> {
        let name = self.name.clone();
        let control = self.control.as_mut().with_context(|| format!("{name}: not booted"))?;
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let tag = format!("{}x{}", std::process::id(), NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
        // Output is what comes between the start and end markers: the shell
        // echoes the command first, and the echo never matches a marker
        // (its format string, not its expansion, is echoed).
        let line = format!(
            "printf '\\n__HG_%s_START\\n' {tag}; {{ {cmd}\n}} </dev/null 2>&1; printf '\\n__HG_%s_RC=%d\\n' {tag} $?\n"
        );
        control.get_mut().write_all(line.as_bytes())?;
        let (start_marker, end_marker) = (format!("__HG_{tag}_START"), format!("__HG_{tag}_RC="));
        let start = Instant::now();
        let mut output: Option<String> = None;
        let mut line = String::new();
        loop {
            if start.elapsed() > limit {
                bail!("{name}: `{cmd}` did not finish within {limit:?}; output so far: {}", output.unwrap_or_default());
            }
            match control.read_line(&mut line) {
                Ok(0) => bail!("{name}: control port closed"),
                Ok(_) if line.ends_with('\n') => {
                    let clean = strip_escapes(&line);
                    let text = clean.trim();
                    if text.ends_with(&start_marker) {
                        output = Some(String::new());
                    } else if let Some(rc) = text.strip_prefix(&end_marker).filter(|_| output.is_some()) {
                        let rc = rc.parse().unwrap_or(-1);
                        return Ok((rc, output.unwrap_or_default().trim_matches('\n').to_string()));
                    } else if let Some(out) = output.as_mut() {
                        out.push_str(&clean);
                    }
                    line.clear();
                }
                Ok(_) => {}
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Runs `cmd`, which must succeed; its output.
    pub fn ok(&mut self, cmd: &str) -> anyhow::Result<String> {
        let (rc, out) = self.sh(cmd, Duration::from_secs(120))?;
        if rc != 0 {
            bail!("{}: `{cmd}` exited {rc}: {out}", self.name);
        }
        Ok(out)
    }

    /// Pulls the plug: QEMU is killed, the VM stops at once.
    pub fn power_off(&mut self) {
        self.control = None;
        if let Some(mut q) = self.qemu.take() {
            q.kill();
        }
    }
}

/// `s` without terminal escape sequences and carriage returns.
fn strip_escapes(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\x1b' => {
                // ESC [ parameters final-byte
                if chars.peek() == Some(&'[') {
                    chars.next();
                    for c in chars.by_ref() {
                        if c.is_ascii_alphabetic() {
                            break;
                        }
                    }
                }
            }
            '\r' => {}
            c => out.push(c),
        }
    }
    out
}

impl Drop for Vm {
    fn drop(&mut self) {
        self.power_off();
    }
}
