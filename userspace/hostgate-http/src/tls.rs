//! TLS termination's pure part: a certificate (PEM chain + key) judged
//! before it is stored, the index of stored certificates by name (exact,
//! then one-label wildcard, then the default), and the rustls resolver that
//! serves from the index in force and is swapped live. No sockets, no
//! clocks: the caller passes "now".

use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
};

use rustls::{
    crypto::ring as provider,
    pki_types::{CertificateDer, PrivateKeyDer},
    server::{ClientHello, ResolvesServerCert},
    sign::CertifiedKey,
    ServerConfig,
};
use serde::{Deserialize, Serialize};
use x509_parser::{extensions::GeneralName, prelude::FromDer, public_key::PublicKey};

/// A certificate as the store holds it (`http/certs/<name>`): the PEM text
/// as given, so what the operator added is what `cert list` describes and
/// what a restart loads again.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct StoredCert {
    pub name: String,
    /// Leaf first, then intermediates.
    pub chain_pem: String,
    pub key_pem: String,
    /// Served to clients without SNI or asking for a name nothing covers.
    #[serde(default)]
    pub default: bool,
}

impl std::fmt::Debug for StoredCert {
    /// Never prints the key, so no log line or panic message carries it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredCert").field("name", &self.name).field("default", &self.default).finish_non_exhaustive()
    }
}

/// What a certificate says about itself, for listing and for the index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertInfo {
    /// DNS names of the leaf's subjectAltName, lower case (`*.` kept).
    pub names: Vec<String>,
    pub subject: String,
    pub issuer: String,
    /// Unix seconds.
    pub not_before: i64,
    pub not_after: i64,
    /// The same, as text (`Nov 26 23:00:00 2126 +00:00`).
    pub not_before_text: String,
    pub not_after_text: String,
    /// `RSA 2048`, `ECDSA P-256`, ...
    pub key_type: String,
}

/// A certificate ready to serve.
#[derive(Clone, Debug)]
pub struct Parsed {
    pub info: CertInfo,
    pub key: Arc<CertifiedKey>,
}

/// Why a certificate is refused; the message starts with the field
/// (`cert` or `key`, the CLI's `--cert`/`--key`).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{field}: {problem}")]
pub struct CertError {
    pub field: &'static str,
    pub problem: String,
}

fn bad(field: &'static str, problem: impl Into<String>) -> CertError {
    CertError { field, problem: problem.into() }
}

/// Parses and judges a PEM chain and its key at time `now` (unix seconds):
/// the chain parses, the key is one rustls can sign with (RSA, ECDSA
/// P-256/P-384, Ed25519) and belongs to the leaf, the leaf is valid now,
/// and it names at least one DNS name in its subjectAltName (browsers
/// ignore the subject's CN).
pub fn parse(chain_pem: &str, key_pem: &str, now: i64) -> Result<Parsed, CertError> {
    let chain = read_chain(chain_pem)?;
    let key = read_key(key_pem)?;
    let signer =
        provider::sign::any_supported_type(&key).map_err(|e| bad("key", format!("not a usable private key ({e})")))?;
    let info = describe(&chain[0], now)?;
    let certified = CertifiedKey::new(chain, signer);
    certified
        .keys_match()
        .map_err(|_| bad("key", "does not belong to the certificate (the leaf's public key differs)"))?;
    Ok(Parsed { info, key: Arc::new(certified) })
}

/// The DER certificates of a CA bundle (PEM) for checking backends'
/// chains: at least one, each a parseable X.509 certificate.
pub fn ca_certificates(pem: &str) -> Result<Vec<Vec<u8>>, String> {
    let certs = rustls_pemfile::certs(&mut pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("not a PEM file of certificates ({e})"))?;
    if certs.is_empty() {
        return Err("no CERTIFICATE block in the PEM file".to_string());
    }
    for (i, der) in certs.iter().enumerate() {
        x509_parser::certificate::X509Certificate::from_der(der)
            .map_err(|e| format!("certificate {} does not parse ({e})", i + 1))?;
    }
    Ok(certs.into_iter().map(|c| c.to_vec()).collect())
}

fn read_chain(pem: &str) -> Result<Vec<CertificateDer<'static>>, CertError> {
    let chain = rustls_pemfile::certs(&mut pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad("cert", format!("unreadable PEM ({e})")))?;
    if chain.is_empty() {
        return Err(bad("cert", "no CERTIFICATE block in the PEM"));
    }
    Ok(chain)
}

fn read_key(pem: &str) -> Result<PrivateKeyDer<'static>, CertError> {
    match rustls_pemfile::private_key(&mut pem.as_bytes()) {
        Ok(Some(key)) => Ok(key),
        Ok(None) if pem.contains("ENCRYPTED PRIVATE KEY") => {
            Err(bad("key", "is encrypted; give the key without a passphrase"))
        }
        Ok(None) => Err(bad("key", "no PRIVATE KEY block in the PEM (PKCS#8, RSA or EC)")),
        Err(e) => Err(bad("key", format!("unreadable PEM ({e})"))),
    }
}

/// The leaf's names, issuer, validity and key type; refused if it is not
/// valid at `now` or names no DNS name.
fn describe(leaf: &CertificateDer<'_>, now: i64) -> Result<CertInfo, CertError> {
    let (_, x509) = x509_parser::certificate::X509Certificate::from_der(leaf)
        .map_err(|e| bad("cert", format!("the first certificate does not parse ({e})")))?;
    let validity = x509.validity();
    let (not_before, not_after) = (validity.not_before.timestamp(), validity.not_after.timestamp());
    if not_after < now {
        return Err(bad("cert", format!("expired on {}", validity.not_after)));
    }
    if not_before > now {
        return Err(bad("cert", format!("not valid before {}", validity.not_before)));
    }
    let mut names = Vec::new();
    if let Ok(Some(san)) = x509.subject_alternative_name() {
        for n in &san.value.general_names {
            if let GeneralName::DNSName(d) = n {
                names.push(d.to_ascii_lowercase());
            }
        }
    }
    if names.is_empty() {
        return Err(bad("cert", "the leaf has no DNS name in subjectAltName (browsers ignore the CN)"));
    }
    let key_type = match x509.public_key().parsed() {
        Ok(PublicKey::RSA(rsa)) => format!("RSA {}", rsa.key_size()),
        Ok(PublicKey::EC(ec)) => format!("ECDSA P-{}", ec.key_size()),
        Ok(_) if x509.public_key().algorithm.algorithm == x509_parser::oid_registry::OID_SIG_ED25519 => {
            "Ed25519".to_string()
        }
        _ => "other".to_string(),
    };
    Ok(CertInfo {
        names,
        subject: x509.subject().to_string(),
        issuer: x509.issuer().to_string(),
        not_before,
        not_after,
        not_before_text: validity.not_before.to_string(),
        not_after_text: validity.not_after.to_string(),
        key_type,
    })
}

/// The name a certificate is stored under when the operator gives none:
/// its first DNS name.
pub fn default_name(info: &CertInfo) -> &str {
    info.names.first().map_or("", String::as_str)
}

/// Checks a store name: what `cert rm` and the key `http/certs/<name>` use.
pub fn check_name(name: &str) -> Result<(), CertError> {
    let ok = !name.is_empty()
        && name.len() <= 253
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b'*'));
    if ok {
        Ok(())
    } else {
        Err(bad("name", format!("{name:?} is not a certificate name (letters, digits, '.', '-', '_', '*')")))
    }
}

/// Stored certificates by the names they serve, built whole and swapped
/// whole.
#[derive(Debug, Default)]
pub struct CertIndex {
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// `*.example.com` under `example.com`.
    wildcard: HashMap<String, Arc<CertifiedKey>>,
    default: Option<Arc<CertifiedKey>>,
}

impl CertIndex {
    /// Builds the index. Where two certificates claim a name, the one valid
    /// longest wins (a renewed certificate added before the old one is
    /// removed takes over at once); ties go to the later store name, so
    /// the choice does not depend on the order given.
    pub fn build<'a>(certs: impl IntoIterator<Item = (&'a str, &'a Parsed, bool)>) -> CertIndex {
        let mut certs: Vec<_> = certs.into_iter().collect();
        certs.sort_by_key(|(name, p, _)| (p.info.not_after, *name));
        let mut index = CertIndex::default();
        // Ascending: later entries (valid longer) overwrite earlier ones.
        for (_, parsed, default) in certs {
            for n in &parsed.info.names {
                match n.strip_prefix("*.") {
                    Some(suffix) => index.wildcard.insert(suffix.to_string(), parsed.key.clone()),
                    None => index.exact.insert(n.clone(), parsed.key.clone()),
                };
            }
            if default {
                index.default = Some(parsed.key.clone());
            }
        }
        index
    }

    /// The certificate for a client's SNI: the exact name, else a wildcard
    /// covering exactly one more label (as browsers match), else the
    /// default. No SNI: the default.
    pub fn pick(&self, sni: Option<&str>) -> Option<Arc<CertifiedKey>> {
        let Some(sni) = sni else { return self.default.clone() };
        let sni = sni.trim_end_matches('.').to_ascii_lowercase();
        if let Some(k) = self.exact.get(&sni) {
            return Some(k.clone());
        }
        let parent = sni.split_once('.').map(|(_, rest)| rest).filter(|p| p.contains('.'));
        parent.and_then(|p| self.wildcard.get(p)).or(self.default.as_ref()).cloned()
    }

    pub fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.wildcard.is_empty() && self.default.is_none()
    }
}

/// rustls's certificate resolver over the index in force: a handshake picks
/// from the index it finds; a swap affects the next handshake, and a
/// connection keeps the certificate it was given.
#[derive(Debug, Default)]
pub struct LiveResolver {
    index: RwLock<Arc<CertIndex>>,
}

impl LiveResolver {
    pub fn swap(&self, index: CertIndex) {
        *self.index.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(index);
    }

    pub fn index(&self) -> Arc<CertIndex> {
        self.index.read().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl ResolvesServerCert for LiveResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.index().pick(hello.server_name())
    }
}

/// The server side of TLS: TLS 1.2 and 1.3 only, ring as the provider
/// (given explicitly, so nothing depends on a process-wide default), the
/// certificate from `resolver`, ALPN h2 then http/1.1.
pub fn server_config(resolver: Arc<LiveResolver>) -> Result<ServerConfig, rustls::Error> {
    let mut config = ServerConfig::builder_with_provider(Arc::new(provider::default_provider()))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    const EC: &str = include_str!("../testdata/ec.pem");
    const EC_KEY: &str = include_str!("../testdata/ec.key");
    const EC_SEC1_KEY: &str = include_str!("../testdata/ec-sec1.key");
    const RSA: &str = include_str!("../testdata/rsa.pem");
    const RSA_KEY: &str = include_str!("../testdata/rsa.key");
    const NO_SAN: &str = include_str!("../testdata/nosan.pem");
    /// 2030-01-01: inside the fixtures' validity (they run 100 years from 2026).
    const NOW: i64 = 1_893_456_000;

    fn ok(chain: &str, key: &str) -> Parsed {
        parse(chain, key, NOW).expect("valid certificate")
    }

    #[test]
    fn ecdsa_and_rsa_are_described() {
        let ec = ok(EC, EC_KEY);
        assert_eq!(ec.info.names, ["shop.example.com", "www.shop.example.com"]);
        assert_eq!(ec.info.key_type, "ECDSA P-256");
        assert!(ec.info.issuer.contains("shop.example.com"));
        assert_eq!(ok(EC, EC_SEC1_KEY).info.key_type, "ECDSA P-256", "SEC1 keys are read too");
        let rsa = ok(RSA, RSA_KEY);
        assert_eq!(
            (rsa.info.names.as_slice(), rsa.info.key_type.as_str()),
            (&["*.example.test".to_string()][..], "RSA 2048")
        );
        assert_eq!(default_name(&rsa.info), "*.example.test");
    }

    #[test]
    fn refusals_name_the_field() {
        let err = |c: &str, k: &str, now: i64| parse(c, k, now).expect_err("refused").to_string();
        assert!(err(EC, RSA_KEY, NOW).starts_with("key: does not belong"), "{}", err(EC, RSA_KEY, NOW));
        assert_eq!(err("garbage", EC_KEY, NOW), "cert: no CERTIFICATE block in the PEM");
        assert!(err(EC, "garbage", NOW).starts_with("key: no PRIVATE KEY"));
        assert!(err(EC, EC, NOW).starts_with("key: no PRIVATE KEY"), "a certificate is not a key");
        assert!(err(EC, EC_KEY, NOW + 200 * 365 * 86_400).starts_with("cert: expired on"));
        assert!(err(EC, EC_KEY, 0).starts_with("cert: not valid before"));
        let truncated = &EC[..EC.len() / 2];
        assert!(err(truncated, EC_KEY, NOW).starts_with("cert: "), "{}", err(truncated, EC_KEY, NOW));
        // A SAN-less certificate: refused for its names (its key is gone, so any key).
        let e = err(NO_SAN, EC_KEY, NOW);
        assert!(e.starts_with("cert: the leaf has no DNS name"), "{e}");
        assert!(err(EC, "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n", NOW)
            .contains("encrypted"));
    }

    #[test]
    fn names_are_checked() {
        assert!(check_name("*.example.test").is_ok());
        assert!(check_name("shop.example.com").is_ok());
        assert_eq!(check_name("a/b").expect_err("slash").field, "name");
        assert!(check_name("").is_err());
    }

    fn same(a: &Option<Arc<CertifiedKey>>, b: &Parsed) -> bool {
        a.as_ref().is_some_and(|a| Arc::ptr_eq(a, &b.key))
    }

    #[test]
    fn exact_then_one_label_wildcard_then_default() {
        let (ec, rsa) = (ok(EC, EC_KEY), ok(RSA, RSA_KEY));
        let index = CertIndex::build([("shop", &ec, true), ("wild", &rsa, false)]);
        assert!(same(&index.pick(Some("shop.example.com")), &ec));
        assert!(same(&index.pick(Some("SHOP.Example.COM.")), &ec), "case and a trailing dot do not matter");
        assert!(same(&index.pick(Some("a.example.test")), &rsa));
        assert!(same(&index.pick(Some("a.b.example.test")), &ec), "a wildcard covers one label: default");
        assert!(same(&index.pick(Some("example.test")), &ec), "nor the bare domain");
        assert!(same(&index.pick(Some("other.example.org")), &ec), "unknown names get the default");
        assert!(same(&index.pick(None), &ec), "no SNI: the default");
        let no_default = CertIndex::build([("wild", &rsa, false)]);
        assert!(no_default.pick(None).is_none() && no_default.pick(Some("x.example.org")).is_none());
    }

    #[test]
    fn the_longest_valid_certificate_wins_a_name() {
        let old = ok(EC, EC_KEY);
        let mut renewed = ok(EC, EC_KEY);
        renewed.key = Arc::new((*old.key).clone());
        renewed.info.not_after += 86_400;
        for order in [[("a", &old, false), ("b", &renewed, false)], [("b", &renewed, false), ("a", &old, false)]] {
            let index = CertIndex::build(order);
            assert!(same(&index.pick(Some("shop.example.com")), &renewed));
        }
    }

    #[test]
    fn the_resolver_serves_the_index_in_force() {
        let (ec, rsa) = (ok(EC, EC_KEY), ok(RSA, RSA_KEY));
        let resolver = Arc::new(LiveResolver::default());
        assert!(resolver.index().is_empty());
        resolver.swap(CertIndex::build([("shop", &ec, true)]));
        let before = resolver.index();
        resolver.swap(CertIndex::build([("wild", &rsa, true)]));
        assert!(same(&before.pick(None), &ec), "an index taken keeps its certificates");
        assert!(same(&resolver.index().pick(None), &rsa));
        let config = server_config(resolver).expect("TLS 1.2 and 1.3 with ring");
        assert_eq!(config.alpn_protocols, [b"h2".to_vec(), b"http/1.1".to_vec()]);
    }
}

#[cfg(test)]
mod props {
    use proptest::prelude::*;

    use super::*;

    /// Labels from a tiny alphabet, so that names and wildcards collide often.
    fn name() -> impl Strategy<Value = String> {
        prop::collection::vec(prop::sample::select(vec!["a", "b", "shop", "example", "test"]), 1..4)
            .prop_map(|l| l.join("."))
    }

    fn cert_name() -> impl Strategy<Value = String> {
        (any::<bool>(), name()).prop_map(|(wild, n)| if wild { format!("*.{n}") } else { n })
    }

    /// Browsers' rule, stated directly: a certificate name covers the SNI
    /// if equal, or if it is `*.` + what follows the SNI's first label and
    /// that rest still has a dot.
    fn covers(cert: &str, sni: &str) -> bool {
        match cert.strip_prefix("*.") {
            None => cert == sni,
            Some(suffix) => sni.split_once('.').is_some_and(|(_, rest)| rest == suffix && rest.contains('.')),
        }
    }

    proptest! {
        /// The index picks a certificate covering the SNI whenever one
        /// exists, preferring an exact name over a wildcard, and the
        /// default only when none covers it.
        #[test]
        fn pick_agrees_with_the_browser_rule(
            certs in prop::collection::vec((prop::collection::vec(cert_name(), 1..3), any::<bool>()), 0..6),
            sni in name(),
        ) {
            let base = parse(include_str!("../testdata/ec.pem"), include_str!("../testdata/ec.key"), 1_893_456_000)
                .expect("fixture");
            let parsed: Vec<(String, Parsed, bool)> = certs
                .iter()
                .enumerate()
                .map(|(i, (names, default))| {
                    let mut p = base.clone();
                    p.key = Arc::new((*base.key).clone());
                    p.info.names = names.clone();
                    (format!("c{i}"), p, *default)
                })
                .collect();
            let index = CertIndex::build(parsed.iter().map(|(n, p, d)| (n.as_str(), p, *d)));
            let picked = index.pick(Some(&sni));
            let holder = |k: &Arc<CertifiedKey>| parsed.iter().find(|(_, p, _)| Arc::ptr_eq(&p.key, k));
            let exact = parsed.iter().any(|(_, p, _)| p.info.names.iter().any(|n| n == &sni));
            let wild = parsed.iter().any(|(_, p, _)| p.info.names.iter().any(|n| n.starts_with("*.") && covers(n, &sni)));
            match picked.as_ref().and_then(holder) {
                Some((_, p, _)) if exact => prop_assert!(p.info.names.contains(&sni)),
                Some((_, p, _)) if wild => prop_assert!(p.info.names.iter().any(|n| covers(n, &sni))),
                Some((_, _, default)) => prop_assert!(*default, "an uncovered name gets only the default"),
                None => prop_assert!(!exact && !wild && parsed.iter().all(|(_, _, d)| !d)),
            }
        }
    }
}
