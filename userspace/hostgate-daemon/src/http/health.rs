//! Active health checks of the HTTP backends.
//!
//! Once a second every backend of the table in force is asked, for each
//! vhost that uses it and has a health path, `GET path` with that vhost's
//! host (over TLS, with the vhost's SNI and certificate checks, when the
//! vhost speaks TLS to its backends), and must answer the status asked.
//! A backend no vhost asks anything of is checked by a TCP connect.
//! Transitions are logged; every result is applied to the table, which also
//! ends a passive mark-down (`Shared::connect_failed`).

use std::{
    collections::{BTreeMap, HashMap},
    net::SocketAddr,
    sync::Arc,
    time::Duration,
};

use hostgate_http::{
    model::{BackendTls, HealthCheck},
    RoutingTable,
};
use rustls::{
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider},
    pki_types::{CertificateDer, ServerName, UnixTime},
    ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tracing::{info, warn};

use crate::Daemon;

const CHECK_EVERY: Duration = Duration::from_secs(1);
const CHECK_TIMEOUT: Duration = Duration::from_millis(800);

/// A TLS client setting, or why it could not be built.
type TlsClient = Result<Arc<ClientConfig>, String>;

/// What a backend is asked by one vhost.
#[derive(Debug, Clone, PartialEq)]
struct Ask {
    host: String,
    check: HealthCheck,
    tls: Option<BackendTls>,
}

/// Runs the checks for as long as the daemon runs.
pub async fn check_health(d: Arc<Daemon>) {
    let mut last: HashMap<SocketAddr, bool> = HashMap::new();
    let mut clients = TlsClients::default();
    loop {
        let checks = health_checks(&d.http.table());
        let probes = checks.iter().map(|(&addr, asks)| {
            let asks: Vec<_> = asks.iter().map(|a| (a, a.tls.as_ref().map(|t| clients.get(t)))).collect();
            async move { (addr, probe(addr, asks).await) }
        });
        for (addr, result) in futures_util::future::join_all(probes).await {
            let up = result.is_ok();
            if last.insert(addr, up) != Some(up) {
                match result {
                    Ok(()) => info!(backend = %addr, "HTTP backend up"),
                    Err(why) => warn!(backend = %addr, %why, "HTTP backend down"),
                }
            }
            d.http.set_health(addr, up);
        }
        last.retain(|a, _| checks.contains_key(a));
        clients.keep_only(checks.values().flatten().filter_map(|a| a.tls.as_ref()));
        d.http.tidy_limiters();
        tokio::time::sleep(CHECK_EVERY).await;
    }
}

/// Every backend of `table`, with what its vhosts ask of it (nothing: a
/// TCP connect).
fn health_checks(table: &RoutingTable) -> BTreeMap<SocketAddr, Vec<Ask>> {
    let mut checks: BTreeMap<SocketAddr, Vec<Ask>> = BTreeMap::new();
    for v in table.vhosts() {
        let host = v.vhost.host.trim_start_matches("*.");
        let ask = v.vhost.health.as_ref().map(|check| Ask {
            host: host.to_string(),
            check: check.clone(),
            tls: v.vhost.backend_tls.clone(),
        });
        for backend in v.pools().flat_map(|(_, pool)| pool.backends()) {
            let asked = checks.entry(backend.addr).or_default();
            if let Some(ask) = &ask {
                if !asked.contains(ask) {
                    asked.push(ask.clone());
                }
            }
        }
    }
    checks
}

/// One backend's check: each ask in turn (with its TLS client, or an
/// error why there is none), or a connect.
async fn probe(addr: SocketAddr, asks: Vec<(&Ask, Option<TlsClient>)>) -> Result<(), String> {
    if asks.is_empty() {
        return match tokio::time::timeout(CHECK_TIMEOUT, tokio::net::TcpStream::connect(addr)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(format!("connect: {e}")),
            Err(_) => Err("connect: timed out".to_string()),
        };
    }
    for (ask, tls) in asks {
        let path = &ask.check.path;
        let asked = async {
            let tcp = tokio::net::TcpStream::connect(addr).await.map_err(|e| format!("connect: {e}"))?;
            match (tls, &ask.tls) {
                (Some(config), Some(backend_tls)) => {
                    let name = ServerName::try_from(backend_tls.name.clone()).map_err(|e| format!("TLS name: {e}"))?;
                    let tls = tokio_rustls::TlsConnector::from(config?)
                        .connect(name, tcp)
                        .await
                        .map_err(|e| format!("TLS to {}: {e}", backend_tls.name))?;
                    http_get(tls, ask).await
                }
                _ => http_get(tcp, ask).await,
            }
        };
        tokio::time::timeout(CHECK_TIMEOUT, asked).await.map_err(|_| format!("GET {path}: timed out"))??;
    }
    Ok(())
}

/// `GET path` on `s`; Ok when the answer's status is the one asked. The
/// connection is closed properly either way (TLS: with close_notify).
async fn http_get(mut s: impl AsyncRead + AsyncWrite + Unpin, ask: &Ask) -> Result<(), String> {
    let answer = status(&mut s, ask).await;
    let _ = s.shutdown().await;
    let (path, expect) = (&ask.check.path, ask.check.expect_status);
    match answer {
        Ok(status) if status == expect => Ok(()),
        Ok(status) => Err(format!("GET {path}: {status}, expected {expect}")),
        Err(e) => Err(format!("GET {path}: {e}")),
    }
}

/// The status of the answer to `GET path`.
async fn status(s: &mut (impl AsyncRead + AsyncWrite + Unpin), ask: &Ask) -> Result<u16, String> {
    s.write_all(&hostgate_http::h1::probe_request(&ask.host, &ask.check.path)).await.map_err(|e| e.to_string())?;
    let mut buf = Vec::with_capacity(1024);
    loop {
        match s.read_buf(&mut buf).await {
            Ok(0) => return Err("closed before answering".to_string()),
            Ok(_) => {}
            Err(e) => return Err(e.to_string()),
        }
        match hostgate_http::h1::parse_response(&buf, true) {
            Ok(Some(head)) => return Ok(head.status),
            Ok(None) if buf.len() < 16 * 1024 => {}
            Ok(None) => return Err("response head too long".to_string()),
            Err(e) => return Err(e.to_string()),
        }
    }
}

/// The TLS client of each backend TLS setting in use, built once (the
/// system's roots are read once, when a vhost first needs them).
#[derive(Default)]
struct TlsClients {
    built: Vec<(BackendTls, TlsClient)>,
    system_roots: Option<Arc<RootCertStore>>,
}

impl TlsClients {
    fn get(&mut self, tls: &BackendTls) -> TlsClient {
        if let Some((_, built)) = self.built.iter().find(|(t, _)| t == tls) {
            return built.clone();
        }
        let built = self.build(tls).map(Arc::new);
        self.built.push((tls.clone(), built.clone()));
        built
    }

    fn keep_only<'a>(&mut self, used: impl Iterator<Item = &'a BackendTls>) {
        let used: Vec<_> = used.collect();
        self.built.retain(|(t, _)| used.contains(&t));
    }

    /// As pingora's connector for the same vhost: verified against the
    /// vhost's CA or the system's roots, or not verified at all.
    fn build(&mut self, tls: &BackendTls) -> Result<ClientConfig, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS versions: {e}"))?;
        let config = if !tls.verify {
            builder.dangerous().with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
        } else if let Some(pem) = &tls.ca_pem {
            let mut roots = RootCertStore::empty();
            let bad = |e: String| format!("the vhost's backend CA: {e}");
            for der in hostgate_http::tls::ca_certificates(pem).map_err(bad)? {
                roots.add(CertificateDer::from(der)).map_err(|e| bad(e.to_string()))?;
            }
            builder.with_root_certificates(roots)
        } else {
            builder.with_root_certificates(self.system_roots())
        };
        Ok(config.with_no_client_auth())
    }

    fn system_roots(&mut self) -> Arc<RootCertStore> {
        self.system_roots
            .get_or_insert_with(|| {
                let mut roots = RootCertStore::empty();
                match pingora::tls::load_native_certs() {
                    Ok(certs) => {
                        roots.add_parsable_certificates(certs);
                    }
                    Err(e) => warn!(error = %e, "reading the system's CA certificates"),
                }
                Arc::new(roots)
            })
            .clone()
    }
}

/// `--backend-no-verify`: any certificate is taken, as by the proxy's own
/// connections to such a backend; the handshake's signatures are still
/// checked (they prove the peer holds the key of the certificate it sent).
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
