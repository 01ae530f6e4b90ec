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

use common::{add_web_container, eventually, ok, TestNode};
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
    start_sshd_with(node, dir, addr, authorized, "")
}

/// As `start_sshd`, with `extra` sshd_config lines first (the first value
/// of a keyword wins in sshd_config).
fn start_sshd_with(node: &TestNode, dir: &Path, addr: &str, authorized: &str, extra: &str) -> ChildGuard {
    let host_key = dir.join("sshd_host_ed25519");
    keygen(&host_key);
    let keys = dir.join("authorized_keys");
    std::fs::write(&keys, authorized).expect("authorized_keys");
    let config = dir.join("sshd_config");
    std::fs::write(
        &config,
        format!(
            "{extra}ListenAddress {addr}:22\nHostKey {}\nPidFile none\nAuthorizedKeysFile {}\nStrictModes no\nUsePAM no\n\
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
        c.args(["120", program]);
        self.options(&mut c);
        c
    }

    /// `ssh` with this customer's options, without `timeout` (which would
    /// take ssh out of a terminal's foreground process group); bound by a
    /// `ChildGuard` instead.
    fn untimed_ssh(&self, node: &TestNode) -> Command {
        let mut c = node.topo.client.command("ssh");
        self.options(&mut c);
        c
    }

    /// The `ssh` command line rsync should use (`rsync -e`).
    fn rsync_shell(&self) -> String {
        let mut c = Command::new("ssh");
        self.options(&mut c);
        std::iter::once("ssh".to_string())
            .chain(c.get_args().map(|a| a.to_string_lossy().into_owned()))
            .collect::<Vec<_>>()
            .join(" ")
    }

    fn options(&self, c: &mut Command) {
        c.args(["-F", "/dev/null", "-i"]).arg(&self.key);
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

    // A user name the customer mapped to its container (sshpiper's user
    // mapping); bad maps are refused naming the field, and a removed one
    // fails like any unknown user.
    assert!(ok(node.cli(&["ssh", "user", "add", "--customer", "acme", "deploy", "web"])).contains("container web"));
    let o = alice.ssh(&node, "deploy", "echo mapped");
    assert_eq!(String::from_utf8_lossy(&o.stdout), "mapped\n", "{}", stderr(&o));
    for (user, container, problem) in
        [("a+b", "web", "user: \"a+b\""), ("ops", "nosuch", "container: nosuch does not exist")]
    {
        let refused = node.cli(&["ssh", "user", "add", "--customer", "acme", user, container]);
        assert!(!refused.status.success() && stderr(&refused).contains(problem), "{}", stderr(&refused));
    }
    assert!(ok(node.cli(&["ssh", "user", "list", "--customer", "acme"])).contains("deploy"));
    ok(node.cli(&["ssh", "user", "rm", "--customer", "acme", "deploy"]));
    let gone = alice.ssh(&node, "deploy", "true");
    assert_eq!(denied(&gone), denied(&wrong), "{}", stderr(&gone));

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
    // The customer's session log (logfmt by default): the exec session with
    // its key, bytes and exit status; a refusal nobody's key made is in no
    // customer's file.
    let session_log = node.dir.path().join("state/log/ssh/acme.log");
    let read_log = || std::fs::read_to_string(&session_log).unwrap_or_default();
    assert!(eventually(Duration::from_secs(5), || read_log().contains("exit_status=3")), "{}", read_log());
    let line = read_log().lines().find(|l| l.contains("exit_status=3")).map(str::to_string).unwrap_or_default();
    for field in [" user=web ", &format!(" key={fp} "), " container=web ", " outcome=ok ", " bytes_down=3 "] {
        assert!(line.contains(field), "{field:?} in {line}");
    }
    assert!(line.starts_with("time=20") && line.contains(" source=198.18.0.2:"), "{line}");
    let stranger_fp = ok(Command::new("ssh-keygen")
        .args(["-l", "-E", "sha256", "-f"])
        .arg(stranger.key.with_extension("pub"))
        .output()
        .expect("keygen -l"));
    let stranger_fp = stranger_fp.split_whitespace().nth(1).expect("fingerprint").to_string();
    assert!(!read_log().contains(&stranger_fp), "a key of no customer is logged nowhere: {}", read_log());
    let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&session_log).expect("meta").permissions());
    assert_eq!(mode & 0o777, 0o640, "session logs are not world-readable");

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
    // An OpenSSH client is offered AES-GCM only (it ranks ChaCha20 and
    // AES-CTR higher, both dearer per relayed byte), where AES is fast.
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("aes") && std::arch::is_x86_feature_detected!("pclmulqdq") {
        let kex = stderr(&again);
        assert!(kex.contains("kex: server->client cipher: aes128-gcm@openssh.com"), "{kex}");
        assert!(kex.contains("kex: client->server cipher: aes128-gcm@openssh.com"), "{kex}");
    }

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

/// A node with the proxy on `NODE_V4:22` (plus `extra` `[ssh]` lines), a
/// customer `acme` with a container `web` and a customer key.
struct Bed {
    node: TestNode,
    dir: tempfile::TempDir,
    v4: String,
    alice: Customer,
}

fn bed(purpose: &str, extra: &str) -> Bed {
    let listen = format!("\n[ssh]\nlisten = [\"{NODE_V4}:22\"]\n{extra}\n");
    let mut node = TestNode::with_config(purpose, 1, &listen);
    node.start_daemon();
    let dir = tempfile::tempdir().expect("tempdir");
    let c = &node.topo.containers[0];
    let (iface, v4) = (c.node_iface.clone(), c.v4.to_string());
    ok(node.cli(&["customer", "add", "acme"]));
    add_web_container(&node, &iface, std::slice::from_ref(&v4), None);
    let key = dir.path().join("customer");
    keygen(&key);
    ok(node.cli(&["ssh", "key", "add", "--customer", "acme", key.with_extension("pub").to_str().expect("path")]));
    let alice = Customer { key, known: dir.path().join("known_hosts"), strict: "accept-new" };
    Bed { node, dir, v4, alice }
}

fn fingerprint_of(public: &Path) -> String {
    let out =
        ok(Command::new("ssh-keygen").args(["-l", "-E", "sha256", "-f"]).arg(public).output().expect("keygen -l"));
    out.split_whitespace().nth(1).expect("fingerprint").to_string()
}

fn random_file(path: &Path, bytes: u64) {
    let status = Command::new("head")
        .args(["-c", &bytes.to_string(), "/dev/urandom"])
        .stdout(std::fs::File::create(path).expect("file"))
        .status()
        .expect("head");
    assert!(status.success());
}

/// Runs `remote` under `ssh -tt` on a real terminal (a pty the test
/// holds), waits for `ready` in its output, resizes the terminal to 50x132
/// (the kernel sends ssh SIGWINCH, ssh sends window-change) and returns
/// the whole output and the exit status.
fn on_a_terminal(node: &TestNode, who: &Customer, remote: &str) -> (String, Option<i32>) {
    use std::{
        io::Read,
        os::fd::{FromRawFd, OwnedFd},
        os::unix::process::CommandExt,
    };
    let (mut master, mut slave) = (0, 0);
    let size = libc::winsize { ws_row: 24, ws_col: 80, ws_xpixel: 0, ws_ypixel: 0 };
    // SAFETY: openpty writes two fds into the given integers; the name
    // and termios pointers may be null.
    let rc = unsafe { libc::openpty(&mut master, &mut slave, std::ptr::null_mut(), std::ptr::null(), &size) };
    assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
    // SAFETY: both fds were just opened and are owned here alone.
    let (master, slave) = unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
    let mut cmd = who.untimed_ssh(node);
    cmd.arg("-tt").arg(format!("web@{NODE_V4}")).arg(remote);
    cmd.stdin(slave.try_clone().expect("dup")).stdout(slave.try_clone().expect("dup")).stderr(slave);
    // SAFETY: only async-signal-safe calls between fork and exec: a new
    // session whose controlling terminal is the pty (stdin), so ssh is its
    // foreground process group and gets SIGWINCH.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = ChildGuard::new("ssh on a pty", cmd.spawn().expect("ssh"));
    drop(cmd);
    let mut reader = std::fs::File::from(master.try_clone().expect("dup"));
    let (tx, rx) = std::sync::mpsc::channel::<Vec<u8>>();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        // EIO once the last slave fd is closed (ssh exited).
        while let Ok(n @ 1..) = reader.read(&mut buf) {
            if tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut resized = false;
    while Instant::now() < deadline {
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(chunk) => out.extend(chunk),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
        }
        if !resized && String::from_utf8_lossy(&out).contains("ready") {
            let bigger = libc::winsize { ws_row: 50, ws_col: 132, ws_xpixel: 0, ws_ypixel: 0 };
            // SAFETY: TIOCSWINSZ reads one winsize from the pointer.
            let rc = unsafe { libc::ioctl(std::os::fd::AsRawFd::as_raw_fd(&master), libc::TIOCSWINSZ, &bigger) };
            assert_eq!(rc, 0, "TIOCSWINSZ: {}", std::io::Error::last_os_error());
            resized = true;
        }
    }
    let status = child.wait_timeout(Duration::from_secs(5)).and_then(|s| s.code());
    (String::from_utf8_lossy(&out).into_owned(), status)
}

/// Upstream logins with short-lived certificates from the hostgate CA (the
/// container's sshd trusts only the CA), and what sessions carry through
/// the proxy beyond files: local forwarding to a port only the container
/// has, keepalives, a terminal's resizes, agent forwarding only when the
/// customer's policy allows it, and rsync.
#[test]
fn certificates_forwarding_and_terminals() {
    if !privileged("certificates_forwarding_and_terminals") {
        return;
    }
    let bed = bed("sshca", "");
    let (node, dir, alice) = (&bed.node, bed.dir.path(), &bed.alice);
    let target = format!("web@{NODE_V4}");

    let ca = ok(node.cli(&["ssh", "ca", "show"])).trim().to_string();
    assert!(ca.starts_with("ssh-ed25519 ") && ca.contains(" hostgate-ca@"), "{ca}");
    let proxy_key = ok(node.cli(&["ssh", "proxy-key", "--client"]));
    assert_ne!(ca.split_whitespace().nth(1), proxy_key.split_whitespace().nth(1), "the CA is a key of its own");
    assert_eq!(ok(node.cli(&["ssh", "ca", "show"])).trim(), ca, "generated once");
    let trusted = dir.join("trusted_user_ca");
    std::fs::write(&trusted, format!("{ca}\n")).expect("trusted CA file");
    let container_ns = &node.topo.containers[0].ns;
    container_ns.ip(["link", "set", "lo", "up"]).expect("container lo");
    node.topo.client.ip(["link", "set", "lo", "up"]).expect("client lo");
    // No authorized_keys at all: only certificates of the CA get in.
    let extra = format!("TrustedUserCAKeys {}\nAuthorizedKeysFile none\nLogLevel DEBUG1\n", trusted.display());
    let _sshd = start_sshd_with(node, dir, &bed.v4, "", &extra);

    let out = alice.ssh(node, "web", "echo cert; exit 5");
    let sshd_log = || std::fs::read_to_string(dir.join("sshd.log")).unwrap_or_default();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "cert\n", "{}\n{}\n{}", stderr(&out), sshd_log(), node.log());
    assert_eq!(out.status.code(), Some(5));
    // The container's own log names the customer and key behind the login.
    let fp = fingerprint_of(&alice.key.with_extension("pub"));
    let accepted = sshd_log().lines().find(|l| l.contains("Accepted publickey")).map(str::to_string);
    let accepted = accepted.unwrap_or_else(|| panic!("no login in the sshd log: {}", sshd_log()));
    assert!(accepted.contains("ED25519-CERT"), "{accepted}");
    assert!(accepted.contains(&format!("ID hostgate customer=acme key={fp} session=")), "{accepted}");

    // Keepalives: the client probes every second and gives up after one
    // unanswered probe; a 3 s command outlives that only if they are answered.
    let kept = alice
        .command(node, "ssh")
        .args(["-o", "ServerAliveInterval=1", "-o", "ServerAliveCountMax=1"])
        .arg(&target)
        .arg("sleep 3; echo alive")
        .output()
        .expect("ssh");
    assert_eq!(String::from_utf8_lossy(&kept.stdout), "alive\n", "{}", stderr(&kept));

    // ssh -L to a port only the container's loopback has.
    let _inside = hostgate_testbed::servers::tcp_identity(
        &container_ns.path(),
        "127.0.0.1:8099".parse().expect("addr"),
        "inside-the-container",
    )
    .expect("server in the container");
    let fwd_log = dir.join("ssh-L.log");
    let _forward = ChildGuard::new(
        "ssh -L",
        alice
            .untimed_ssh(node)
            .args(["-N", "-o", "ExitOnForwardFailure=yes", "-L", "127.0.0.1:18099:127.0.0.1:8099"])
            .arg(&target)
            .stdin(Stdio::null())
            .stderr(std::fs::File::create(&fwd_log).expect("log"))
            .spawn()
            .expect("ssh -L"),
    );
    let mut fetched = String::new();
    let through = eventually(Duration::from_secs(15), || {
        fetched = node
            .topo
            .client
            .exec("socat", ["-u", "TCP:127.0.0.1:18099", "STDOUT"])
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        fetched == "inside-the-container"
    });
    assert!(through, "fetched {fetched:?}; ssh -L: {}", std::fs::read_to_string(&fwd_log).unwrap_or_default());

    // A terminal: pty-req carries 24x80, a resize reaches the container.
    let (screen, status) = on_a_terminal(
        node,
        alice,
        "stty size; echo ready; for i in $(seq 100); do [ \"$(stty size)\" = \"50 132\" ] && { echo resized; exit 0; }; sleep 0.1; done; exit 1",
    );
    assert!(screen.contains("24 80"), "{screen:?}");
    assert!(screen.contains("resized"), "{screen:?}");
    assert_eq!(status, Some(0), "{screen:?}");

    // Agent forwarding: refused until the customer's policy allows it.
    let agent_sock = dir.join("agent.sock");
    let _agent = ChildGuard::new(
        "ssh-agent",
        Command::new("ssh-agent")
            .arg("-D")
            .arg("-a")
            .arg(&agent_sock)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("ssh-agent"),
    );
    assert!(eventually(Duration::from_secs(5), || agent_sock.exists()), "ssh-agent socket");
    let agent_key = dir.join("agent-key");
    keygen(&agent_key);
    let added = Command::new("ssh-add").env("SSH_AUTH_SOCK", &agent_sock).arg(&agent_key).output().expect("ssh-add");
    assert!(added.status.success(), "ssh-add: {}", stderr(&added));
    let agent_fp = fingerprint_of(&agent_key.with_extension("pub"));
    // The customer's own agent (SSH_AUTH_SOCK, ssh -A); it also offers
    // the agent key, which the proxy refuses before the file key is tried.
    let with_agent = || {
        let mut c = node.topo.client.command("timeout");
        c.args(["120", "ssh", "-F", "/dev/null", "-A", "-i"]).arg(&alice.key);
        for o in ["BatchMode=yes", "StrictHostKeyChecking=accept-new"] {
            c.args(["-o", o]);
        }
        c.arg("-o").arg(format!("UserKnownHostsFile={}", alice.known.display()));
        c.env("SSH_AUTH_SOCK", &agent_sock).arg(&target).arg("ssh-add -l; echo rc=$?").output().expect("ssh -A")
    };
    let refused = with_agent();
    let text = String::from_utf8_lossy(&refused.stdout);
    assert!(text.contains("rc=2") && !text.contains(&agent_fp), "{text} {}", stderr(&refused));
    let policy = ok(node.cli(&["ssh", "policy", "--customer", "acme"]));
    assert!(policy.contains("agent forwarding refused"), "{policy}");
    let policy = ok(node.cli(&["ssh", "policy", "--customer", "acme", "--agent-forwarding", "true"]));
    assert!(policy.contains("agent forwarding allowed"), "{policy}");
    let allowed = with_agent();
    let text = String::from_utf8_lossy(&allowed.stdout);
    assert!(text.contains(&agent_fp) && text.contains("rc=0"), "{text} {}\n{}", stderr(&allowed), sshd_log());
    let unknown = node.cli(&["ssh", "policy", "--customer", "nobody", "--agent-forwarding", "true"]);
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("customer: nobody does not exist"), "{unknown:?}");

    // rsync over ssh, both ways, intact.
    let local = dir.join("rsync-src.bin");
    random_file(&local, 8 << 20);
    let remote = dir.join("rsync-remote.bin");
    let back = dir.join("rsync-back.bin");
    for (from, to) in [
        (local.display().to_string(), format!("{target}:{}", remote.display())),
        (format!("{target}:{}", remote.display()), back.display().to_string()),
    ] {
        let o = node
            .topo
            .client
            .command("timeout")
            .args(["120", "rsync", "-a", "-e", &alice.rsync_shell(), &from, &to])
            .output()
            .expect("rsync");
        assert!(o.status.success(), "rsync {from} {to}: {}", stderr(&o));
    }
    assert_eq!(sha256(&back), sha256(&local), "rsync round trip differs");
    assert_eq!(sha256(&remote), sha256(&local));
}

/// Abuse limits from the config: a connection that does not log in within
/// the grace time is closed, so is a session idle for the idle timeout
/// (keepalives do not keep it), and a customer's third concurrent session
/// is refused until one of the two ends.
#[test]
fn grace_idle_and_session_limits() {
    if !privileged("grace_idle_and_session_limits") {
        return;
    }
    let bed = bed("sshab", "login_grace_secs = 2\nidle_timeout_secs = 3\nmax_sessions_per_customer = 2\n");
    let (node, dir, alice) = (&bed.node, bed.dir.path(), &bed.alice);
    let target = format!("web@{NODE_V4}");
    let proxy_key = ok(node.cli(&["ssh", "proxy-key", "--client"]));
    let _sshd = start_sshd(node, dir, &bed.v4, &proxy_key);

    // Login grace: a client that connects, says its version and then
    // never authenticates is cut off.
    let path = node.topo.client.path();
    let silent = std::thread::spawn(move || -> Result<(String, usize), String> {
        use std::io::Read;
        hostgate_testbed::sender::enter_netns(&path).map_err(|e| e.to_string())?;
        let mut s = std::net::TcpStream::connect((NODE_V4, 22)).map_err(|e| e.to_string())?;
        std::io::Write::write_all(&mut s, b"SSH-2.0-silent\r\n").map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(Duration::from_secs(15))).map_err(|e| e.to_string())?;
        let mut all = Vec::new();
        let mut buf = [0u8; 1024];
        loop {
            match s.read(&mut buf) {
                Ok(0) => return Ok((String::from_utf8_lossy(&all).into_owned(), all.len())),
                Ok(n) => all.extend_from_slice(&buf[..n]),
                Err(e) => return Err(format!("still open after 15 s ({e}); got {:?}", String::from_utf8_lossy(&all))),
            }
        }
    });
    let (banner, _) = silent.join().expect("thread").expect("the proxy closes a connection that never logs in");
    assert!(banner.starts_with("SSH-2.0-hostgate"), "{banner:?}");

    // Data keeps a session alive past the idle timeout ...
    let busy = alice.ssh(node, "web", "for i in 1 2 3 4 5 6 7 8 9 10; do echo $i; sleep 0.5; done");
    assert_eq!(busy.status.code(), Some(0), "{}", stderr(&busy));
    assert!(String::from_utf8_lossy(&busy.stdout).ends_with("10\n"));
    // ... keepalives do not: a silent command is cut off (it would run 30 s).
    let started = Instant::now();
    let idle = alice
        .command(node, "ssh")
        .args(["-o", "ServerAliveInterval=1"])
        .arg(&target)
        .arg("sleep 30; echo never")
        .output()
        .expect("ssh");
    assert_eq!(idle.status.code(), Some(255), "{}", stderr(&idle));
    assert!(idle.stdout.is_empty());
    assert!(started.elapsed() < Duration::from_secs(25), "closed by the idle timeout, not by the command's end");
    let h = history_until(node, &["--customer", "acme"], |h| h.iter().any(|s| s.outcome == "idle-timeout"));
    assert!(h.iter().any(|s| s.outcome == "idle-timeout"), "{h:#?}");

    // Two concurrent sessions per customer: the third is refused like a
    // wrong key, recorded as such, and admitted once a slot is free.
    let ticking = "for i in $(seq 40); do echo tick; sleep 0.5; done";
    let mut open = Vec::new(); // (the client, its stdout: closing it would SIGPIPE ssh)
    for i in 0..2 {
        let mut child = alice
            .command(node, "ssh")
            .arg(&target)
            .arg(ticking)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("ssh");
        let mut first = String::new();
        let mut stdout = std::io::BufReader::new(child.stdout.take().expect("stdout"));
        std::io::BufRead::read_line(&mut stdout, &mut first).expect("read");
        assert_eq!(first, "tick\n", "session {i} logged in");
        open.push((ChildGuard::new("ticking ssh", child), stdout));
    }
    let third = alice.ssh(node, "web", "echo third");
    assert_eq!(third.status.code(), Some(255), "{}", stderr(&third));
    assert!(stderr(&third).contains("Permission denied (publickey)"), "{}", stderr(&third));
    let h = history_until(node, &["--customer", "acme"], |h| h.iter().any(|s| s.outcome == "session-limit"));
    assert!(h.iter().any(|s| s.outcome == "session-limit"), "{h:#?}");
    drop(open.pop());
    let mut admitted = String::new();
    let again = eventually(Duration::from_secs(10), || {
        admitted = String::from_utf8_lossy(&alice.ssh(node, "web", "echo third").stdout).into_owned();
        admitted == "third\n"
    });
    assert!(again, "a freed slot admits the next session: {admitted:?}");
}
