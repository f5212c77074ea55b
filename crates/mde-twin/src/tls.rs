//! HTTPS for the twin: a certificate authority generated at start-up signs one server
//! certificate for every name the twin answers for, and a listener that hands axum finished
//! TLS connections.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use crate::TwinError;

/// Names the server certificate always covers: loopback, and the public Microsoft hosts so a
/// client reaching the twin through a proxy (which maps them to the twin) verifies them.
pub const DEFAULT_TLS_HOSTS: &[&str] = &[
    "localhost",
    "127.0.0.1",
    "::1",
    "login.microsoftonline.com",
    "graph.microsoft.com",
    "api.securitycenter.microsoft.com",
    "api.security.microsoft.com",
];

/// A slow or silent client must not hold a handshake task for ever.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The generated CA and the acceptor presenting the server certificate it signed.
pub(crate) struct TwinTls {
    pub(crate) ca_pem: String,
    pub(crate) hosts: Vec<String>,
    pub(crate) acceptor: TlsAcceptor,
}

fn tls_error(what: &str, e: impl std::fmt::Display) -> TwinError {
    TwinError::Config(format!("tls: {what}: {e}"))
}

/// Generates a fresh CA and a server certificate for [`DEFAULT_TLS_HOSTS`] plus `extra_hosts`.
pub(crate) fn generate(extra_hosts: &[String]) -> Result<TwinTls, TwinError> {
    let mut hosts: Vec<String> = DEFAULT_TLS_HOSTS.iter().map(|h| (*h).to_owned()).collect();
    for h in extra_hosts {
        if !hosts.iter().any(|known| known.eq_ignore_ascii_case(h)) {
            hosts.push(h.clone());
        }
    }
    let mut ca_params =
        CertificateParams::new(Vec::<String>::new()).map_err(|e| tls_error("CA parameters", e))?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    // A name of its own per start: a client holding an older twin's CA then reads
    // "unknown issuer", not a bad signature from a same-named CA.
    let ca_name = format!("Culprit MDE twin CA {}", uuid::Uuid::new_v4().simple());
    ca_params
        .distinguished_name
        .push(DnType::CommonName, ca_name);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_key = KeyPair::generate().map_err(|e| tls_error("CA key", e))?;
    let ca_cert = ca_params
        .self_signed(&ca_key)
        .map_err(|e| tls_error("CA certificate", e))?;
    let issuer = Issuer::new(ca_params, ca_key);

    let mut leaf_params = CertificateParams::new(hosts.clone())
        .map_err(|e| tls_error("tls hosts (each must be a DNS name or an IP address)", e))?;
    leaf_params
        .distinguished_name
        .push(DnType::CommonName, "Culprit MDE twin");
    leaf_params.use_authority_key_identifier_extension = true;
    leaf_params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    leaf_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let leaf_key = KeyPair::generate().map_err(|e| tls_error("server key", e))?;
    let leaf_cert = leaf_params
        .signed_by(&leaf_key, &issuer)
        .map_err(|e| tls_error("server certificate", e))?;

    let chain: Vec<CertificateDer<'static>> = vec![leaf_cert.der().clone(), ca_cert.der().clone()];
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
    // An explicit provider: `builder()` would panic were a second one ever linked in.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_error("protocol versions", e))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| tls_error("server certificate", e))?;
    // HTTP/1.1 only: the workspace builds axum without `http2`, so offering h2 would strand
    // clients (curl) that pick it.
    server.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TwinTls {
        ca_pem: ca_cert.pem(),
        hosts,
        acceptor: TlsAcceptor::from(Arc::new(server)),
    })
}

/// An axum listener yielding connections whose TLS handshake has completed. Handshakes run
/// in their own tasks so one slow client does not hold up the others.
pub(crate) struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
    accepting: JoinHandle<()>,
}

impl TlsListener {
    pub(crate) fn new(tcp: TcpListener, acceptor: TlsAcceptor) -> std::io::Result<Self> {
        let local = tcp.local_addr()?;
        let (tx, ready) = mpsc::channel(64);
        let accepting = tokio::spawn(accept_loop(tcp, acceptor, tx));
        Ok(TlsListener {
            ready,
            local,
            accepting,
        })
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        // Shutting the server down stops taking new connections.
        self.accepting.abort();
    }
}

async fn accept_loop(
    tcp: TcpListener,
    acceptor: TlsAcceptor,
    tx: mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>,
) {
    loop {
        let (stream, peer) = match tcp.accept().await {
            Ok(conn) => conn,
            Err(e) => {
                // Like axum's own loop: out of file descriptors and the like pass with time.
                tracing::warn!(error = %e, "twin: accepting a connection failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let acceptor = acceptor.clone();
        let tx = tx.clone();
        tokio::spawn(async move {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => {
                    let _ = tx.send((tls, peer)).await;
                }
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "twin: TLS handshake failed"),
                Err(_) => tracing::debug!(%peer, "twin: TLS handshake timed out"),
            }
        });
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(conn) => conn,
            // The accept loop only ends when this listener is dropped; never yield a fake one.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}
