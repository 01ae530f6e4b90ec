//! The SSH/SFTP proxy (issue #11): customers reach their containers with
//! unchanged OpenSSH clients. russh serves customers (`server.rs`) and
//! connects to the container's sshd (`upstream.rs`); session channels are
//! relayed as raw channel data, never parsed (`relay.rs`).
//!
//! State in the store: the proxy's identity (`identity.rs`: host keys and
//! its own client key, generated once), customers' keys
//! (`ssh/keys/<customer>/<fingerprint>`, read at every authentication, so
//! a change takes effect at once), pinned container host keys
//! (`ssh/known/<container>`) and the access history (`history.rs`). The
//! pure decisions (key lines, routing, throttling) are hostgate-ssh's.

mod api;
mod history;
mod identity;
mod relay;
mod server;
mod upstream;

use std::sync::{atomic::AtomicU64, Mutex};

pub use api::{
    add_key, add_user, forget_known, history as list_history, list_keys, list_users, policy, proxy_key, remove_key,
    remove_user,
};
use hostgate_ssh::{SessionLimits, Throttle, ThrottleConfig};
pub(crate) use server::listen;

/// AES-GCM where the CPU has AES-NI and carry-less multiplication: then
/// both legs of a relayed session (the customer's client to us, us to the
/// container's sshd) are cheaper in AES-GCM than in ChaCha20-Poly1305,
/// for russh and for OpenSSH/OpenSSL at the ends, and every byte is
/// decrypted and encrypted once more here than on a direct login.
fn aes_gcm_is_fast() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("aes") && std::arch::is_x86_feature_detected!("pclmulqdq")
    }
    #[cfg(target_arch = "aarch64")]
    {
        std::arch::is_aarch64_feature_detected!("aes") && std::arch::is_aarch64_feature_detected!("pmull")
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        false
    }
}

/// Which leg of a relayed session a russh config is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Leg {
    /// A customer's OpenSSH client that has AES-GCM (from its banner).
    OpenSshClient,
    /// Any other customer client.
    OtherClient,
    /// Us, as the client of a container's sshd.
    Container,
}

/// Cipher preference of one leg. SSH picks the first cipher of the
/// *client's* list that the server offers, and OpenSSH's list is
/// ChaCha20, AES-CTR, then AES-GCM (see `hostgate_ssh::banner`): so an
/// OpenSSH client is offered AES-GCM only, other clients AES-GCM and
/// AES-CTR (ChaCha20 is left out: russh's is slower than AES-GCM with
/// AES-NI, and every client that has ChaCha20 has one of the others).
/// Towards the container we are the client: AES-128-GCM first (10 rounds
/// to AES-256's 14), ChaCha20 kept for an sshd without AES-GCM.
/// Without fast AES, russh's defaults (ChaCha20 first).
fn preferred(leg: Leg) -> russh::Preferred {
    use russh::cipher;
    const OPENSSH_CLIENT: &[cipher::Name] = &[cipher::AES_128_GCM, cipher::AES_256_GCM];
    const OTHER_CLIENT: &[cipher::Name] =
        &[cipher::AES_128_GCM, cipher::AES_256_GCM, cipher::AES_128_CTR, cipher::AES_192_CTR, cipher::AES_256_CTR];
    const CONTAINER: &[cipher::Name] = &[
        cipher::AES_128_GCM,
        cipher::AES_256_GCM,
        cipher::CHACHA20_POLY1305,
        cipher::AES_128_CTR,
        cipher::AES_192_CTR,
        cipher::AES_256_CTR,
    ];
    if !aes_gcm_is_fast() {
        return russh::Preferred::default();
    }
    let ciphers = match leg {
        Leg::OpenSshClient => OPENSSH_CLIENT,
        Leg::OtherClient => OTHER_CLIENT,
        Leg::Container => CONTAINER,
    };
    russh::Preferred { cipher: std::borrow::Cow::Borrowed(ciphers), ..russh::Preferred::default() }
}

/// Store keys of the SSH proxy.
pub mod keys {
    pub const KEYS: &str = "ssh/keys/";
    pub const HOSTKEYS: &str = "ssh/hostkeys/";
    pub const KNOWN: &str = "ssh/known/";
    pub const HISTORY: &str = "ssh/history/";
    /// The proxy's own client key, which containers' sshd trust.
    pub const CLIENT_KEY: &str = "ssh/proxy-key";
    /// The CA that signs the proxy's user certificates.
    pub const CA_KEY: &str = "ssh/ca";
    /// Per-customer settings (agent forwarding).
    pub const POLICY: &str = "ssh/policy/";

    /// Per-customer user names mapped to containers.
    pub const USERS: &str = "ssh/users/";

    pub fn customer_users(customer: &str) -> String {
        format!("{USERS}{customer}/")
    }

    pub fn user(customer: &str, user: &str) -> String {
        format!("{USERS}{customer}/{user}")
    }

    pub fn policy(customer: &str) -> String {
        format!("{POLICY}{customer}")
    }

    pub fn customer_keys(customer: &str) -> String {
        format!("{KEYS}{customer}/")
    }

    pub fn key(customer: &str, fingerprint: &str) -> String {
        format!("{KEYS}{customer}/{}", hostgate_ssh::authorized::store_id(fingerprint))
    }

    pub fn known(container: &str) -> String {
        format!("{KNOWN}{container}")
    }

    /// Customer `-` holds refused attempts whose key matched no customer.
    pub fn history_of(customer: &str) -> String {
        format!("{HISTORY}{}/", if customer.is_empty() { "-" } else { customer })
    }
}

/// What the proxy's connections share.
#[derive(Debug)]
pub struct Shared {
    throttle: Mutex<Throttle>,
    /// The clock of the throttle (milliseconds since this instant).
    epoch: std::time::Instant,
    /// Makes session ids unique within a nanosecond.
    seq: AtomicU64,
    sessions: Mutex<SessionLimits>,
    /// Ended connections by outcome (for `/metrics`).
    ended: Mutex<std::collections::BTreeMap<String, Ended>>,
    /// The per-customer session logs (`[ssh] access_log`), once listening.
    logs: std::sync::OnceLock<(crate::access_log::AccessLogs, crate::access_log::LineFormat)>,
}

/// A session's log line fields, in order.
fn session_fields(s: &hostgate_api::SshSession) -> [(&'static str, serde_json::Value); 12] {
    use hostgate_http::accesslog::iso_time;
    [
        ("time", iso_time(s.end.saturating_mul(1000)).into()),
        ("id", s.id.clone().into()),
        ("source", s.source.clone().into()),
        ("user", s.user.clone().into()),
        ("key", s.fingerprint.clone().into()),
        ("container", s.container.clone().into()),
        ("outcome", s.outcome.clone().into()),
        ("start", iso_time(s.start.saturating_mul(1000)).into()),
        ("duration_s", s.end.saturating_sub(s.start).into()),
        ("bytes_up", s.bytes_up.into()),
        ("bytes_down", s.bytes_down.into()),
        ("exit_status", s.exit_status.map_or(serde_json::Value::Null, Into::into)),
    ]
}

/// Connections that ended with one outcome (`ok`, `denied`,
/// `session-limit`, ...; `no-login` when no key was ever offered), and
/// the bytes their channels carried.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ended {
    pub connections: u64,
    pub bytes_up: u64,
    pub bytes_down: u64,
}

impl Shared {
    pub fn new(max_sessions_per_customer: usize) -> Self {
        Shared {
            throttle: Mutex::new(Throttle::new(ThrottleConfig::default())),
            epoch: std::time::Instant::now(),
            seq: AtomicU64::new(0),
            sessions: Mutex::new(SessionLimits::new(max_sessions_per_customer)),
            ended: Mutex::default(),
            logs: std::sync::OnceLock::new(),
        }
    }

    /// Lines that could not be queued for the session log files.
    pub fn log_dropped(&self) -> u64 {
        self.logs.get().map_or(0, |(l, _)| l.dropped())
    }

    /// Appends a session (or a refused attempt of a known customer's key)
    /// to its customer's log file.
    fn log_session(&self, s: &hostgate_api::SshSession) {
        let Some((logs, format)) = self.logs.get() else { return };
        if s.customer.is_empty() {
            return;
        }
        logs.write(&s.customer, crate::access_log::line(*format, &session_fields(s)));
    }

    /// Counts a connection that ended.
    fn count_ended(&self, s: &hostgate_api::SshSession) {
        let outcome = if s.outcome == "denied" && s.fingerprint.is_empty() && s.user.is_empty() {
            "no-login"
        } else {
            // "upstream-failed: <why>": the kind only, so that labels stay few.
            s.outcome.split(':').next().unwrap_or("-").trim()
        };
        let mut ended = self.ended.lock().unwrap_or_else(|p| p.into_inner());
        let e = ended.entry(outcome.to_string()).or_default();
        e.connections += 1;
        e.bytes_up += s.bytes_up;
        e.bytes_down += s.bytes_down;
    }

    /// Ended connections by outcome.
    pub fn ended(&self) -> std::collections::BTreeMap<String, Ended> {
        self.ended.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn sessions(&self) -> std::sync::MutexGuard<'_, SessionLimits> {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn throttle(&self) -> std::sync::MutexGuard<'_, Throttle> {
        self.throttle.lock().unwrap_or_else(|p| p.into_inner())
    }
}
