//! A real, single-member etcd (Debian's `etcd-server`) for cluster tests
//! and demos: its own data directory, listening on one address inside a
//! namespace (or on loopback), killed and wiped on drop.

use std::{
    net::{SocketAddr, TcpStream},
    path::PathBuf,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use crate::{unique_name, ChildGuard, Netns, TestbedError};

/// The etcd binary, from Debian's etcd-server.
pub const ETCD: &str = "/usr/bin/etcd";

/// A running etcd.
#[derive(Debug)]
pub struct EtcdServer {
    child: Option<ChildGuard>,
    data_dir: PathBuf,
    log: PathBuf,
    client: SocketAddr,
    netns: Option<String>,
}

impl EtcdServer {
    /// Starts etcd serving clients on `client` (and peers on the next port),
    /// inside `netns` if given, and waits until it accepts connections.
    /// Heartbeat and election timeouts are short so that etcd grants leases
    /// of one second (its minimum TTL is 1.5 election timeouts).
    pub fn start(netns: Option<&Netns>, client: SocketAddr) -> Result<EtcdServer, TestbedError> {
        let name = unique_name("etcd");
        let data_dir = std::env::temp_dir().join(&name);
        let log = std::env::temp_dir().join(format!("{name}.log"));
        let mut server = EtcdServer { child: None, data_dir, log, client, netns: netns.map(|n| n.path()) };
        server.spawn()?;
        Ok(server)
    }

    fn spawn(&mut self) -> Result<(), TestbedError> {
        let peer = SocketAddr::new(self.client.ip(), self.client.port() + 1);
        let client_url = format!("http://{}", self.client);
        let peer_url = format!("http://{peer}");
        let mut cmd = match &self.netns {
            Some(path) => {
                let mut c = Command::new("nsenter");
                c.arg(format!("--net={path}")).arg("--").arg(ETCD);
                c
            }
            None => Command::new(ETCD),
        };
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log)?;
        let log_err = log.try_clone()?;
        cmd.args(["--name", "hostgate-test", "--data-dir"])
            .arg(&self.data_dir)
            .args(["--listen-client-urls", &client_url, "--advertise-client-urls", &client_url])
            .args(["--listen-peer-urls", &peer_url, "--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &format!("hostgate-test={peer_url}")])
            .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
            .args(["--logger", "zap", "--log-level", "warn"])
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err);
        let child = cmd
            .spawn()
            .map_err(|source| TestbedError::Spawn { cmd: format!("{ETCD} (apt-get install etcd-server)"), source })?;
        self.child = Some(ChildGuard::new("etcd", child));
        self.wait_ready()
    }

    fn wait_ready(&mut self) -> Result<(), TestbedError> {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Some(status) = self.child.as_mut().and_then(ChildGuard::try_exited) {
                return Err(TestbedError::Failed(format!("etcd exited ({status}): {}", self.log())));
            }
            if self.accepts() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(TestbedError::Failed(format!("etcd did not start within 20 s: {}", self.log())))
    }

    /// Whether the client port accepts a connection (from inside the namespace).
    fn accepts(&self) -> bool {
        let Some(path) = &self.netns else {
            return TcpStream::connect_timeout(&self.client, Duration::from_millis(200)).is_ok();
        };
        let (path, addr) = (path.clone(), self.client);
        std::thread::spawn(move || {
            crate::sender::enter_netns(&path).is_ok()
                && TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
        })
        .join()
        .unwrap_or(false)
    }

    /// The client URL, for `etcd_endpoints`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.client)
    }

    /// Stops etcd (SIGKILL), keeping its data.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill();
        }
    }

    /// Starts a stopped etcd again on its data.
    pub fn restart(&mut self) -> Result<(), TestbedError> {
        self.stop();
        self.spawn()
    }

    /// What etcd logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() {
            eprintln!("etcd log:\n{}", self.log());
        }
        let _ = std::fs::remove_dir_all(&self.data_dir);
        let _ = std::fs::remove_file(&self.log);
    }
}
