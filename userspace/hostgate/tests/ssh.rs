//! The SSH/SFTP proxy end to end: the real daemon in a node namespace, a
//! real OpenSSH `sshd` in a container namespace (its own config and host
//! key, trusting only the proxy's key), and the real `ssh`, `scp` and
//! `sftp` in the client namespace with a customer's ed25519 key.

mod common;

use std::{
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

use common::{add_web_container, ok, TestNode};
use hostgate_api::SshSession;
use hostgate_testbed::{privileged, topology::NODE_V4, ChildGuard};

/// `ssh-keygen` a passphrase-less ed25519 key at `path`.
fn keygen(path: &Path) {
    keygen_typed(path, &["-t", "ed25519"]);
}

fn keygen_typed(path: &Path, kind: &[&str]) {
    let out = Command::new("ssh-keygen")
        .arg("-q")
        .args(kind)
        .args(["-N", "", "-C", "test", "-f"])
        .arg(path)
        .output()
        .expect("run ssh-keygen (apt-get install openssh-client)");
    assert!(out.status.success(), "ssh-keygen: {}", String::from_utf8_lossy(&out.stderr));
}

/// The container's sshd: listening on `addr`:22, trusting `authorized`.
fn start_sshd(node: &TestNode, dir: &Path, addr: &str, authorized: &str) -> ChildGuard {
    let host_key = dir.join("sshd_host_ed25519");
    keygen(&host_key);
    let keys = dir.join("authorized_keys");
    std::fs::write(&keys, authorized).expect("authorized_keys");
    let config = dir.join("sshd_config");
    std::fs::write(
        &config,
        format!(
            "ListenAddress {addr}:22\nHostKey {}\nPidFile none\nAuthorizedKeysFile {}\nStrictModes no\nUsePAM no\n\
             PasswordAuthentication no\nKbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\n\
             Subsystem sftp /usr/lib/openssh/sftp-server\nLogLevel VERBOSE\n",
            host_key.display(),
            keys.display()
        ),
    )
    .expect("sshd_config");
    // sshd's privilege separation directory (a plain directory; no network).
    std::fs::create_dir_all("/run/sshd").expect("/run/sshd");
    let log = dir.join("sshd.log");
    let child = node.topo.containers[0]
        .ns
        .command("/usr/sbin/sshd")
        .args(["-D", "-e", "-f"])
        .arg(&config)
        .stdin(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("sshd log"))
        .spawn()
        .expect("run /usr/sbin/sshd (apt-get install openssh-server)");
    let guard = ChildGuard::new("sshd", child);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !std::fs::read_to_string(&log).unwrap_or_default().contains("Server listening") {
        assert!(Instant::now() < deadline, "sshd did not start: {}", std::fs::read_to_string(&log).unwrap_or_default());
        std::thread::sleep(Duration::from_millis(50));
    }
    guard
}

/// A customer's OpenSSH client program in the client namespace, with only
/// `key`, no agent, no user config, and `known` as its known_hosts.
struct Customer {
    key: PathBuf,
    known: PathBuf,
    strict: &'static str,
}

impl Customer {
    fn command(&self, node: &TestNode, program: &str) -> Command {
        let mut c = node.topo.client.command("timeout");
        c.args(["120", program, "-F", "/dev/null", "-i"]).arg(&self.key);
        for o in [
            "IdentitiesOnly=yes".to_string(),
            "IdentityAgent=none".to_string(),
            "BatchMode=yes".to_string(),
            "ConnectTimeout=10".to_string(),
            format!("StrictHostKeyChecking={}", self.strict),
            format!("UserKnownHostsFile={}", self.known.display()),
        ] {
            c.args(["-o", &o]);
        }
        c
    }

    fn ssh(&self, node: &TestNode, user: &str, remote: &str) -> Output {
        self.command(node, "ssh").arg(format!("{user}@{NODE_V4}")).arg(remote).output().expect("run ssh")
    }
}

fn sha256(path: &Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().expect("sha256sum");
    String::from_utf8_lossy(&out.stdout).split_whitespace().next().unwrap_or_default().to_string()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The history, polled until `done` holds (entries are written when a
/// session ends, just after the client exits).
fn history_until(node: &TestNode, args: &[&str], done: impl Fn(&[SshSession]) -> bool) -> Vec<SshSession> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut all = vec!["ssh", "history", "--json"];
        all.extend(args);
        let h: Vec<SshSession> = serde_json::from_str(&ok(node.cli(&all))).expect("history JSON");
        if done(&h) || Instant::now() > deadline {
            return h;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn openssh_through_the_proxy() {
    if !privileged("openssh_through_the_proxy") {
        return;
    }
    let listen = format!("\n[ssh]\nlisten = [\"{NODE_V4}:22\"]\n");
    let mut node = TestNode::with_config("ssh", 1, &listen);
    node.start_daemon();
    let dir = tempfile::tempdir().expect("tempdir");
    let c = &node.topo.containers[0];
    let (iface, v4) = (c.node_iface.clone(), c.v4.to_string());
    ok(node.cli(&["customer", "add", "acme"]));
    add_web_container(&node, &iface, std::slice::from_ref(&v4), None);

    // The container trusts the proxy's own key, fetched from the daemon.
    let proxy_key = ok(node.cli(&["ssh", "proxy-key", "--client"]));
    assert!(proxy_key.starts_with("ssh-ed25519 "), "{proxy_key}");
    let sshd = start_sshd(&node, dir.path(), &v4, &proxy_key);

    let key = dir.path().join("customer");
    let stranger_key = dir.path().join("stranger");
    keygen(&key);
    keygen(&stranger_key);
    let added =
        ok(node.cli(&["ssh", "key", "add", "--customer", "acme", key.with_extension("pub").to_str().expect("path")]));
    assert!(added.contains("SHA256:"), "{added}");
    let known = dir.path().join("known_hosts");
    let alice = Customer { key: key.clone(), known: known.clone(), strict: "accept-new" };

    // exec with output and exit status.
    let out = alice.ssh(&node, "web", "echo hi; exit 3");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hi\n", "stderr: {}\nlog: {}", stderr(&out), node.log());
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));

    // A PTY (pty-req relayed), and local forwarding (direct-tcpip) to the
    // container's own sshd, whose banner comes back through the proxy.
    let tty =
        alice.command(&node, "ssh").arg("-tt").arg(format!("web@{NODE_V4}")).arg("tty").output().expect("ssh -tt");
    assert!(String::from_utf8_lossy(&tty.stdout).starts_with("/dev/pts/"), "{:?} {}", tty.stdout, stderr(&tty));
    // An interactive shell on a PTY: keystrokes in, output and the shell's
    // exit status back.
    let mut shell = alice
        .command(&node, "ssh")
        .arg("-tt")
        .arg(format!("web@{NODE_V4}"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ssh shell");
    {
        use std::io::Write;
        let mut stdin = shell.stdin.take().expect("stdin");
        stdin.write_all(b"echo shell-$((6*7))\nexit 4\n").expect("type");
    }
    let shell = shell.wait_with_output().expect("shell");
    assert!(String::from_utf8_lossy(&shell.stdout).contains("shell-42"), "{:?} {}", shell.stdout, stderr(&shell));
    assert_eq!(shell.status.code(), Some(4), "{}", stderr(&shell));
    let fwd = alice
        .command(&node, "ssh")
        .arg("-W")
        .arg(format!("{v4}:22"))
        .arg(format!("web@{NODE_V4}"))
        .stdin(Stdio::null())
        .output()
        .expect("ssh -W");
    assert!(String::from_utf8_lossy(&fwd.stdout).starts_with("SSH-2.0-OpenSSH"), "{:?} {}", fwd.stdout, stderr(&fwd));

    // ECDSA and RSA keys (RSA signs with rsa-sha2-512 or -256) work too.
    for (name, kind) in [("ecdsa", &["-t", "ecdsa", "-b", "256"][..]), ("rsa", &["-t", "rsa", "-b", "2048"][..])] {
        let k = dir.path().join(name);
        keygen_typed(&k, kind);
        ok(node.cli(&["ssh", "key", "add", "--customer", "acme", k.with_extension("pub").to_str().expect("path")]));
        let who = Customer { key: k, known: known.clone(), strict: "accept-new" };
        let o = who.ssh(&node, "web+acme", "echo key");
        assert_eq!(String::from_utf8_lossy(&o.stdout), "key\n", "{name}: {}", stderr(&o));
    }

    // An unknown user and a wrong key fail alike.
    let unknown = alice.ssh(&node, "nosuch", "true");
    let stranger = Customer { key: stranger_key, known: known.clone(), strict: "accept-new" };
    let wrong = stranger.ssh(&node, "web", "true");
    assert_eq!(unknown.status.code(), Some(255));
    assert_eq!(wrong.status.code(), Some(255));
    let denied = |o: &Output| stderr(o).lines().last().unwrap_or_default().split_once(": ").map(|(_, m)| m.to_string());
    assert_eq!(denied(&unknown), Some("Permission denied (publickey).".into()), "{}", stderr(&unknown));
    assert_eq!(denied(&unknown), denied(&wrong), "{} / {}", stderr(&unknown), stderr(&wrong));

    // scp (SFTP protocol) up and legacy scp (exec) down: 20 MiB intact.
    let local = dir.path().join("random.bin");
    let status = Command::new("head")
        .args(["-c", "20971520", "/dev/urandom"])
        .stdout(std::fs::File::create(&local).expect("file"))
        .status()
        .expect("head");
    assert!(status.success());
    let remote = dir.path().join("remote.bin");
    let started = Instant::now();
    let up = alice
        .command(&node, "scp")
        .arg(&local)
        .arg(format!("web@{NODE_V4}:{}", remote.display()))
        .output()
        .expect("scp");
    assert!(up.status.success(), "scp up: {}", stderr(&up));
    eprintln!("20 MiB scp up through the proxy in {:?}", started.elapsed());
    assert_eq!(sha256(&remote), sha256(&local), "uploaded file differs");
    let back = dir.path().join("back.bin");
    let down = alice
        .command(&node, "scp")
        .arg("-O")
        .arg(format!("web@{NODE_V4}:{}", remote.display()))
        .arg(&back)
        .output()
        .expect("scp -O");
    assert!(down.status.success(), "scp -O down: {}", stderr(&down));
    assert_eq!(sha256(&back), sha256(&local), "downloaded file differs");

    // sftp in batch mode.
    let batch = dir.path().join("batch");
    let (put, got) = (dir.path().join("sftp-put.bin"), dir.path().join("sftp-got.bin"));
    std::fs::write(
        &batch,
        format!("put {} {}\nget {} {}\n", local.display(), put.display(), put.display(), got.display()),
    )
    .expect("batch");
    let sftp = alice.command(&node, "sftp").arg("-b").arg(&batch).arg(format!("web@{NODE_V4}")).output().expect("sftp");
    assert!(sftp.status.success(), "sftp: {}", stderr(&sftp));
    assert_eq!(sha256(&got), sha256(&local), "sftp round trip differs");

    // History: the exec session with its bytes and exit status, and the refusals.
    let fp = ok(Command::new("ssh-keygen")
        .args(["-l", "-E", "sha256", "-f"])
        .arg(key.with_extension("pub"))
        .output()
        .expect("keygen -l"));
    let fp = fp.split_whitespace().nth(1).expect("fingerprint").to_string();
    let h = history_until(&node, &["--customer", "acme"], |h| h.iter().any(|s| s.exit_status == Some(3)));
    let exec = h.iter().find(|s| s.exit_status == Some(3)).unwrap_or_else(|| panic!("no exec session: {h:#?}"));
    assert_eq!((exec.customer.as_str(), exec.container.as_str(), exec.outcome.as_str()), ("acme", "web", "ok"));
    assert_eq!(exec.fingerprint, fp);
    assert!(exec.source.starts_with("198.18.0.2:"), "{}", exec.source);
    assert_eq!(exec.bytes_down, 3, "hi\\n");
    assert!(h.iter().any(|s| s.bytes_up >= 20 << 20), "the upload's bytes: {h:#?}");
    let all = history_until(&node, &[], |h| h.iter().filter(|s| s.outcome == "denied").count() >= 2);
    assert!(all.iter().any(|s| s.outcome == "denied" && s.user == "nosuch"), "{all:#?}");
    assert!(all.iter().any(|s| s.outcome == "denied" && s.user == "web" && s.customer.is_empty()), "{all:#?}");
    let table = ok(node.cli(&["ssh", "history", "--customer", "acme"]));
    assert!(table.contains("web") && table.contains(" 3 "), "{table}");

    // The proxy's identity survives a restart: strict known_hosts checking passes.
    node.daemon.as_mut().expect("daemon").signal_and_wait(libc::SIGTERM, Duration::from_secs(10)).expect("stopped");
    node.daemon = None;
    node.start_daemon();
    let strict = Customer { key, known, strict: "yes" };
    let again =
        strict.command(&node, "ssh").arg("-v").arg(format!("web@{NODE_V4}")).arg("echo again").output().expect("ssh");
    assert_eq!(String::from_utf8_lossy(&again.stdout), "again\n", "after restart: {}", stderr(&again));
    // The banner names no library and no version.
    let version = stderr(&again).lines().find(|l| l.contains("remote software version")).map(|l| l.trim().to_string());
    assert_eq!(version.as_deref(), Some("debug1: Remote protocol version 2.0, remote software version hostgate"));

    // The container's host key changes (a new sshd with a new key): the
    // proxy refuses it, says so in the log and in the history.
    drop(sshd);
    let dir2 = tempfile::tempdir().expect("tempdir");
    let _sshd2 = start_sshd(&node, dir2.path(), &v4, &proxy_key);
    let refused = strict.ssh(&node, "web", "echo never");
    assert_eq!(refused.status.code(), Some(255), "{}", stderr(&refused));
    assert!(refused.stdout.is_empty(), "{:?}", refused.stdout);
    let h = history_until(&node, &["--customer", "acme"], |h| h.iter().any(|s| s.outcome == "host-key-mismatch"));
    assert!(h.iter().any(|s| s.outcome == "host-key-mismatch"), "{h:#?}");
    assert!(node.log().contains("container host key mismatch"), "{}", node.log());

    // Forgotten on purpose, the new key is pinned and sessions work again.
    ok(node.cli(&["ssh", "known-rm", "web"]));
    let repinned = strict.ssh(&node, "web", "echo repinned");
    assert_eq!(String::from_utf8_lossy(&repinned.stdout), "repinned\n", "{}", stderr(&repinned));

    // Keys are listed with their fingerprint; removed, a key fails at once;
    // added again, it works at once.
    let listed = ok(node.cli(&["ssh", "key", "list", "--customer", "acme"]));
    assert!(listed.contains(&fp) && listed.contains("ssh-ed25519 test"), "{listed}");
    ok(node.cli(&["ssh", "key", "rm", "--customer", "acme", &fp]));
    let removed = strict.ssh(&node, "web", "echo removed");
    assert!(stderr(&removed).contains("Permission denied (publickey)"), "{}", stderr(&removed));
    let pubkey = strict.key.with_extension("pub");
    ok(node.cli(&["ssh", "key", "add", "--customer", "acme", pubkey.to_str().expect("path")]));
    let back = strict.ssh(&node, "web", "echo back");
    assert_eq!(String::from_utf8_lossy(&back.stdout), "back\n", "{}", stderr(&back));

    // Ten failed logins in a minute ban the source, and the client is told
    // why (even with the right key); other sources are not affected.
    for i in 0..10 {
        let o = stranger.ssh(&node, "web", "true");
        assert!(stderr(&o).contains("Permission denied"), "attempt {i}: {}", stderr(&o));
    }
    let banned = strict.ssh(&node, "web", "echo banned");
    assert_eq!(banned.status.code(), Some(255), "{}", stderr(&banned));
    assert!(stderr(&banned).contains("Too many failed logins from your address"), "{}", stderr(&banned));
}
