//! A network namespace that exists as long as its guard.

use std::{
    ffi::OsStr,
    process::{Command, Output},
};

#[derive(Debug, thiserror::Error)]
pub enum TestbedError {
    #[error("`{cmd}` failed: {stderr}")]
    Command { cmd: String, stderr: String },
    #[error("could not run `{cmd}`")]
    Spawn { cmd: String, source: std::io::Error },
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Failed(String),
}

/// Runs a command to completion; a non-zero exit is an error carrying stderr.
pub fn run<I, S>(program: &str, args: I) -> Result<Output, TestbedError>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut cmd = Command::new(program);
    cmd.args(args);
    let line = format!("{cmd:?}");
    let out = cmd.output().map_err(|source| TestbedError::Spawn { cmd: line.clone(), source })?;
    if !out.status.success() {
        return Err(TestbedError::Command { cmd: line, stderr: String::from_utf8_lossy(&out.stderr).trim().into() });
    }
    Ok(out)
}

/// A named network namespace (`/run/netns/<name>`), deleted on drop.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates `name` with its loopback up.
    pub fn create(name: &str) -> Result<Self, TestbedError> {
        run("ip", ["netns", "add", name])?;
        let ns = Netns { name: name.to_string() };
        ns.ip(["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `/run/netns/<name>`, for nsenter and setns.
    pub fn path(&self) -> String {
        format!("/run/netns/{}", self.name)
    }

    /// `ip -n <ns> ARGS`.
    pub fn ip<I, S>(&self, args: I) -> Result<Output, TestbedError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut all: Vec<std::ffi::OsString> = vec!["-n".into(), self.name.clone().into()];
        all.extend(args.into_iter().map(|a| a.as_ref().to_os_string()));
        run("ip", all)
    }

    /// A command that runs inside this namespace's network stack. Uses
    /// nsenter rather than `ip netns exec`, which would hide bpffs pins.
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net={}", self.path())).arg("--").arg(program);
        cmd
    }

    /// Runs `program ARGS` inside the namespace to completion.
    pub fn exec<I, S>(&self, program: &str, args: I) -> Result<Output, TestbedError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut all: Vec<std::ffi::OsString> =
            vec![format!("--net={}", self.path()).into(), "--".into(), program.into()];
        all.extend(args.into_iter().map(|a| a.as_ref().to_os_string()));
        run("nsenter", all)
    }

    /// Whether `iface` holds `addr` as a host address (/32 or /128) now.
    pub fn has_host_address(&self, iface: &str, addr: std::net::IpAddr) -> bool {
        let needle = format!("{addr}/{}", if addr.is_ipv4() { 32 } else { 128 });
        self.ip(["addr", "show", "dev", iface]).is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(&needle))
    }

    /// The MAC address of `iface` in this namespace (asked of iproute2:
    /// /sys under nsenter shows the root namespace's interfaces).
    pub fn mac(&self, iface: &str) -> Result<[u8; 6], TestbedError> {
        let out = self.ip(["-o", "link", "show", "dev", iface])?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let bad =
            || TestbedError::Command { cmd: format!("ip link show {iface}"), stderr: format!("no MAC in {text:?}") };
        let hex = text.split_whitespace().skip_while(|w| *w != "link/ether").nth(1).ok_or_else(bad)?;
        let mut mac = [0u8; 6];
        let parts: Vec<&str> = hex.split(':').collect();
        if parts.len() != 6 {
            return Err(bad());
        }
        for (m, p) in mac.iter_mut().zip(parts) {
            *m = u8::from_str_radix(p, 16).map_err(|_| bad())?;
        }
        Ok(mac)
    }

    /// Sets a sysctl inside the namespace (net.* sysctls are per namespace).
    pub fn sysctl(&self, key: &str, value: &str) -> Result<(), TestbedError> {
        self.exec("sysctl", ["-qw", &format!("{key}={value}")])?;
        Ok(())
    }
}

/// Deletes namespaces left by test-bed processes that no longer run (a
/// benchmark or test killed before its guards ran): names made by
/// [`crate::unique_name`], `hg-<purpose>-<pid>-<n>`, whose pid is gone.
/// Returns the names deleted.
pub fn remove_stale_namespaces() -> Vec<String> {
    let Ok(entries) = std::fs::read_dir("/run/netns") else { return vec![] };
    let mut removed = Vec::new();
    for name in entries.flatten().map(|e| e.file_name().to_string_lossy().into_owned()) {
        if let Some(pid) = stale_owner(&name) {
            if !std::path::Path::new(&format!("/proc/{pid}")).exists() && run("ip", ["netns", "del", &name]).is_ok() {
                removed.push(name);
            }
        }
    }
    removed
}

/// The pid in a test-bed name `hg-<purpose>-<pid>-<n>[-suffix...]`.
fn stale_owner(name: &str) -> Option<u32> {
    let rest = name.strip_prefix("hg-")?;
    let parts: Vec<&str> = rest.split('-').collect();
    // purpose, pid, n: the first numeric pair after the purpose.
    parts.windows(2).skip(1).find_map(|w| match (w[0].parse::<u32>(), w[1].parse::<u32>()) {
        (Ok(pid), Ok(_)) => Some(pid),
        _ => None,
    })
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting the namespace deletes its veths, and with them their peers.
        if let Err(e) = run("ip", ["netns", "del", &self.name]) {
            eprintln!("testbed: could not delete netns {}: {e}", self.name);
        }
    }
}

#[cfg(test)]
mod stale_tests {
    #[test]
    fn owners_of_test_bed_names() {
        assert_eq!(super::stale_owner("hg-bench-1234-0"), Some(1234));
        assert_eq!(super::stale_owner("hg-clfail-13337-5-n2"), Some(13337));
        assert_eq!(super::stale_owner("hg-bench-fw-77-1-client"), Some(77));
        assert_eq!(super::stale_owner("hg-demo-node"), None, "the demo's names are not the test bed's");
        assert_eq!(super::stale_owner("other-1-2"), None);
    }
}
