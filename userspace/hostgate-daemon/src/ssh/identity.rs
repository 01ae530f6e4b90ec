//! The proxy's keys: generated once, kept in the store (create-only, so
//! two daemons starting together on one etcd agree on one key), and read
//! back on every start. The host key is what customers' `known_hosts`
//! pins; the client key is what containers' sshd trust.

use anyhow::Context;
use hostgate_store::{Compare, Op, Txn};
use russh::keys::{
    ssh_key::{certificate, private::Ed25519Keypair, LineEnding},
    Certificate, PrivateKey,
};
use serde::{Deserialize, Serialize};
use tracing::info;

use super::keys;
use crate::Daemon;

/// A private key in OpenSSH format, as stored.
#[derive(Serialize, Deserialize)]
struct StoredKey {
    openssh: String,
}

/// The proxy's host keys (ed25519 only for now).
pub async fn host_keys(d: &Daemon) -> anyhow::Result<Vec<PrivateKey>> {
    Ok(vec![load_or_create(d, &format!("{}ed25519", keys::HOSTKEYS)).await?])
}

/// The hostgate SSH CA: signs the short-lived user certificates the proxy
/// logs in to containers with (their sshd trusts it by
/// `TrustedUserCAKeys`). Like the other private keys it never leaves the
/// store through the API: only its public half is shown.
pub async fn ca_key(d: &Daemon) -> anyhow::Result<PrivateKey> {
    load_or_create(d, keys::CA_KEY).await
}

/// Who a certificate is issued for: written into its key id, so the
/// container's sshd logs name the customer behind every proxied login.
pub struct CertSubject<'a> {
    pub customer: &'a str,
    pub fingerprint: &'a str,
    pub session: &'a str,
    pub agent_forwarding: bool,
}

/// How long a certificate is valid: long enough to log in, useless soon
/// after (sshd checks it only at authentication; sessions outlive it).
pub const CERT_LIFETIME_SECS: u64 = 300;
/// Accepted clock skew between the node and containers.
const CERT_BACKDATE_SECS: u64 = 60;

/// A user certificate for `key`, valid for `principal` for a few minutes,
/// signed by `ca`. Extensions grant what the proxy relays: a PTY, port
/// forwarding, user rc, and agent forwarding only when the customer's
/// policy allows it (sshd enforces the certificate's extensions).
pub fn sign_user_cert(
    ca: &PrivateKey,
    key: &PrivateKey,
    principal: &str,
    who: &CertSubject<'_>,
) -> anyhow::Result<Certificate> {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs();
    let mut nonce = [0u8; 16];
    urandom(&mut nonce)?;
    let mut serial = [0u8; 8];
    urandom(&mut serial)?;
    let mut b = certificate::Builder::new(
        nonce.to_vec(),
        key.public_key().key_data().clone(),
        now.saturating_sub(CERT_BACKDATE_SECS),
        now + CERT_LIFETIME_SECS,
    )?;
    b.serial(u64::from_be_bytes(serial))?;
    b.cert_type(certificate::CertType::User)?;
    b.key_id(format!("hostgate customer={} key={} session={}", who.customer, who.fingerprint, who.session))?;
    b.valid_principal(principal)?;
    for ext in ["permit-port-forwarding", "permit-pty", "permit-user-rc"] {
        b.extension(ext, "")?;
    }
    if who.agent_forwarding {
        b.extension("permit-agent-forwarding", "")?;
    }
    Ok(b.sign(ca)?)
}

/// The key the proxy logs in to containers with.
pub async fn client_key(d: &Daemon) -> anyhow::Result<PrivateKey> {
    load_or_create(d, keys::CLIENT_KEY).await
}

async fn load_or_create(d: &Daemon, key: &str) -> anyhow::Result<PrivateKey> {
    if let Some(kv) = d.store.get(key).await? {
        return decode(&kv.decode::<StoredKey>()?).with_context(|| format!("{key} in the store"));
    }
    let fresh = generate()?;
    let stored = StoredKey { openssh: fresh.to_openssh(LineEnding::LF)?.to_string() };
    let txn = Txn::new().when(Compare::Absent(key.to_string())).then(Op::put_json(key, &stored)?);
    d.store.commit(txn).await?;
    // Whoever won the race, the stored key is the one.
    let kv = d.store.get(key).await?.with_context(|| format!("{key} vanished after it was written"))?;
    let k = decode(&kv.decode::<StoredKey>()?)?;
    info!(store_key = key, fingerprint = %hostgate_ssh::authorized::fingerprint(k.public_key()), "SSH key in use");
    Ok(k)
}

fn decode(s: &StoredKey) -> anyhow::Result<PrivateKey> {
    Ok(PrivateKey::from_openssh(&s.openssh)?)
}

fn generate() -> anyhow::Result<PrivateKey> {
    let mut seed = [0u8; 32];
    urandom(&mut seed)?;
    Ok(PrivateKey::from(Ed25519Keypair::from_seed(&seed)))
}

fn urandom(buf: &mut [u8]) -> anyhow::Result<()> {
    use std::io::Read;
    std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(buf)).context("reading /dev/urandom")
}

/// One public key as an `authorized_keys` / `known_hosts` line body.
pub fn public_line(k: &PrivateKey, comment: &str) -> anyhow::Result<String> {
    let mut public = k.public_key().clone();
    public.set_comment(comment);
    Ok(public.to_openssh()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn who(agent_forwarding: bool) -> CertSubject<'static> {
        CertSubject { customer: "acme", fingerprint: "SHA256:abc", session: "42", agent_forwarding }
    }

    #[test]
    fn user_certificate_for_one_principal_and_minutes() {
        let (ca, key) = (generate().expect("ca"), generate().expect("key"));
        let cert = sign_user_cert(&ca, &key, "root", &who(false)).expect("signed");
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs();
        let ca_fp = ca.public_key().fingerprint(Default::default());
        cert.validate_at(now, [&ca_fp]).expect("valid now, signed by the CA");
        assert!(cert.validate_at(now + CERT_LIFETIME_SECS + 1, [&ca_fp]).is_err(), "expires within minutes");
        let other = generate().expect("other").public_key().fingerprint(Default::default());
        assert!(cert.validate_at(now, [&other]).is_err(), "only this CA");
        assert_eq!(cert.cert_type(), certificate::CertType::User);
        assert_eq!(cert.valid_principals(), ["root".to_string()], "never all principals");
        assert_eq!(cert.key_id(), "hostgate customer=acme key=SHA256:abc session=42");
        assert_eq!(cert.public_key(), key.public_key().key_data());
        let exts: Vec<&str> = cert.extensions().keys().map(String::as_str).collect();
        assert_eq!(exts, ["permit-port-forwarding", "permit-pty", "permit-user-rc"]);
        let with_agent = sign_user_cert(&ca, &key, "root", &who(true)).expect("signed");
        assert!(with_agent.extensions().contains_key("permit-agent-forwarding"));
    }
}
