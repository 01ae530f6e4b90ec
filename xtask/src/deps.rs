//! System packages the build and tests need, installed on demand.

use std::process::Command;

use anyhow::{bail, Context};

/// Debian packages, with what needs them.
pub const BUILD_AND_TEST: &[(&str, &str)] = &[
    ("clang-19", "compiles the BPF programs in xdp-ebpf/"),
    ("libbpf-dev", "bpf_helpers.h for the BPF programs"),
    ("linux-libc-dev", "kernel UAPI headers for the BPF programs"),
    ("iproute2", "ip and tc for test namespaces"),
    ("iputils-ping", "ping in tests and the demo"),
    ("util-linux", "nsenter to run the daemon inside a namespace"),
    ("ethtool", "GRO and checksum settings of test veths"),
    ("nftables", "nft, which the daemon drives for source NAT"),
    ("protobuf-compiler", "protoc, which etcd-client's build script runs"),
    ("etcd-server", "the etcd that cluster tests and the cluster demo run"),
    ("busybox-static", "udhcpc, the DHCP client of the DHCP tests"),
    ("isc-dhcp-relay", "dhcrelay, the relay agent of the DHCP relay test"),
    ("kea-admin", "perfdhcp, the DHCP load generator of the crash test and `bench dhcp`"),
    ("isc-dhcp-client", "dhclient, a DHCP client of the DHCP tests"),
    ("dhcpcd-base", "dhcpcd, a DHCP client of the DHCP tests"),
    ("dhcping", "dhcping, which sends the DHCPINFORM of the DHCP INFORM test"),
    ("prometheus", "promtool, which lints the /metrics page in the metrics test"),
    ("ndisc6", "rdisc6, which checks router advertisements (RDNSS, DNSSL) in the RA test"),
    ("bind9-dnsutils", "dig, the DNS client of the DNS tests"),
    ("cmake", "builds C dependencies of pingora (the HTTP proxy): libz-ng-sys"),
    ("curl", "the HTTP client of the HTTP proxy tests"),
    ("openssl", "makes the test CA and certificates of the HTTPS tests, and s_client"),
    ("nsd", "the real secondary of the DNS transfer test (its service is stopped after install)"),
    ("openssh-server", "sshd, the containers' SSH server in the SSH proxy tests (run in test namespaces only)"),
    ("openssh-client", "ssh, scp, sftp and ssh-keygen, the customers' clients in the SSH proxy tests"),
    ("python3", "the HTTP tests' backends and WebSocket client (tests/http_peer.py, standard library only)"),
    ("wrk", "the load generator that must see zero errors across HTTP vhost and certificate changes"),
    ("pebble", "the ACME test CA that issues to the HTTP proxy by real HTTP-01 in the http_acme test"),
    ("tmux", "the pseudo-terminal `hostgate top` is driven in and read from by the top test"),
    ("rsyslog", "the real syslog receiver of the remote log test (run in a test namespace; its service is stopped)"),
    ("rsyslog-gnutls", "rsyslog's TLS stream driver (gtls), for syslog over TLS in the remote log test"),
    ("rsync", "rsync over ssh through the SSH proxy (both ends: the client and the container's sshd)"),
];

/// Servers whose package starts them in the host's own namespace on
/// install; the tests run their own instance inside a test namespace.
const STOP_AFTER_INSTALL: &[&str] = &["nsd", "prometheus", "kea-dhcp4-server", "ssh", "rsyslog"];

fn installed(pkg: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", pkg])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
}

/// Installs whatever of `packages` is missing, saying what and why.
pub fn ensure(packages: &[(&str, &str)]) -> anyhow::Result<()> {
    let missing: Vec<&(&str, &str)> = packages.iter().filter(|(p, _)| !installed(p)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    for (pkg, why) in &missing {
        println!("xtask: installing {pkg}: {why}");
    }
    let names: Vec<&str> = missing.iter().map(|(p, _)| *p).collect();
    if !is_root() {
        bail!("missing packages; run as root: apt-get install -y {}", names.join(" "));
    }
    let update = Command::new("apt-get").args(["update", "-q"]).status().context("running apt-get update")?;
    if !update.success() {
        bail!("apt-get update failed");
    }
    // Server packages (openssh-server) start their daemon in the host's
    // namespace on install; tests run their own inside test namespaces, so
    // forbid that start (Debian's policy-rc.d) unless a policy exists.
    let policy = std::path::Path::new("/usr/sbin/policy-rc.d");
    let own_policy = !policy.exists() && std::fs::write(policy, "#!/bin/sh\nexit 101\n").is_ok();
    if own_policy {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(policy, std::fs::Permissions::from_mode(0o755));
    }
    let status = Command::new("apt-get")
        .args(["install", "-y", "-q", "--no-install-recommends"])
        .args(&names)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status();
    if own_policy {
        let _ = std::fs::remove_file(policy);
    }
    let status = status.context("running apt-get install")?;
    if !status.success() {
        bail!("apt-get install {} failed", names.join(" "));
    }
    for service in names.iter().filter(|n| STOP_AFTER_INSTALL.contains(n)) {
        // Best effort: without systemd (a container) the init script may
        // have started it, or nothing did.
        let _ = Command::new("systemctl").args(["disable", "--now", service]).status();
        let _ = Command::new("service").args([service, "stop"]).status();
    }
    Ok(())
}

/// Runs cargo with `args` from the workspace root, failing on a non-zero exit.
pub fn cargo(args: &[&str]) -> anyhow::Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    println!("xtask: cargo {}", args.join(" "));
    let mut command = Command::new(cargo);
    for (name, _) in std::env::vars_os() {
        if name.to_str().is_some_and(set_by_cargo_run) {
            command.env_remove(&name);
        }
    }
    let status = command.args(args).current_dir(workspace_root()).status().context("running cargo")?;
    if !status.success() {
        bail!("cargo {} failed", args.join(" "));
    }
    Ok(())
}

/// The variables `cargo run` gives xtask about xtask's own package. A
/// cargo started with them in its environment reruns every build script
/// that watches them (ring's watches `CARGO_MANIFEST_DIR` and
/// `CARGO_PKG_NAME`), and so rebuilds nearly everything that a `cargo
/// build` outside xtask built a moment before, and the next one rebuilds
/// it again.
fn set_by_cargo_run(name: &str) -> bool {
    name.starts_with("CARGO_PKG_")
        || matches!(
            name,
            "CARGO_MANIFEST_DIR"
                | "CARGO_MANIFEST_PATH"
                | "CARGO_MANIFEST_LINKS"
                | "CARGO_CRATE_NAME"
                | "CARGO_BIN_NAME"
                | "CARGO_PRIMARY_PACKAGE"
                | "OUT_DIR"
        )
}

pub fn workspace_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(|p| p.to_path_buf()).unwrap_or_default()
}

/// The target directory cargo builds into (honours CARGO_TARGET_DIR).
pub fn target_dir() -> std::path::PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map(Into::into).unwrap_or_else(|| workspace_root().join("target"))
}

/// Whether we run as root (the owner of our /proc entry is uid 0).
pub fn is_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
}

#[cfg(test)]
mod tests {
    use super::set_by_cargo_run;

    #[test]
    fn only_xtasks_own_package_variables_are_dropped() {
        for name in ["CARGO_PKG_NAME", "CARGO_PKG_VERSION_MAJOR", "CARGO_MANIFEST_DIR", "OUT_DIR"] {
            assert!(set_by_cargo_run(name), "{name}");
        }
        for name in ["CARGO_TARGET_DIR", "CARGO_HOME", "CARGO", "CARGO_PROFILE_RELEASE_LTO", "PATH"] {
            assert!(!set_by_cargo_run(name), "{name}");
        }
    }
}
