//! The proxy's keys: generated once, kept in the store (create-only, so
//! two daemons starting together on one etcd agree on one key), and read
//! back on every start. The host key is what customers' `known_hosts`
//! pins; the client key is what containers' sshd trust.

use anyhow::Context;
use hostgate_store::{Compare, Op, Txn};
use russh::keys::{
    ssh_key::{private::Ed25519Keypair, LineEnding},
    PrivateKey,
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
    use std::io::Read;
    let mut seed = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut seed))
        .context("reading /dev/urandom for a new SSH key")?;
    Ok(PrivateKey::from(Ed25519Keypair::from_seed(&seed)))
}

/// One public key as an `authorized_keys` / `known_hosts` line body.
pub fn public_line(k: &PrivateKey, comment: &str) -> anyhow::Result<String> {
    let mut public = k.public_key().clone();
    public.set_comment(comment);
    Ok(public.to_openssh()?)
}
