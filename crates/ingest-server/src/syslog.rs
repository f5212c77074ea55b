//! Syslog listeners for Vectra CEF and JSON: UDP, TCP and TLS.
//!
//! - UDP: one or more LF-separated messages per datagram.
//! - TCP and TLS: RFC 6587 octet counting (`LEN SP MSG`) or LF framing, detected per frame.
//!   Only peers inside `allowed_peers` may connect; others are closed at once.
//! - Backpressure: a connection has at most `in_flight` frames being published; the next
//!   frame is read only when one of them is confirmed, so a slow or blocked broker slows the
//!   sender (TCP flow control) instead of filling memory.
//! - A frame that fails for a transient reason (broker or store away) is retried with backoff
//!   until it is confirmed or the service shuts down; unreadable frames are dead-lettered.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use culprit_ingest::vectra_syslog::next_frame;
use culprit_model::detection::canonical_ip;
use culprit_runtime::{Backoff, Shutdown};
use ipnet::IpNet;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use crate::{IngestPublisher, ServiceError, Source};

/// A silent client must not hold a handshake for ever.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest UDP datagram.
const MAX_DATAGRAM: usize = 65_535;

/// One syslog listener's settings.
#[derive(Debug, Clone)]
pub struct SyslogConfig {
    pub source: Source,
    /// TCP/TLS: peers allowed to connect. UDP: datagrams from other peers are dropped (when
    /// the list is not empty).
    pub allowed_peers: Vec<IpNet>,
    /// Frames of one connection (or of the UDP socket) being published at once.
    pub in_flight: usize,
    /// A TCP/TLS connection buffering more than this without a complete frame is closed.
    pub max_frame_bytes: usize,
}

impl SyslogConfig {
    /// Parses CIDRs (`10.0.0.0/8`, `::1/128`; a bare address means just that host).
    pub fn parse_peers(field: &str, peers: &[String]) -> Result<Vec<IpNet>, ServiceError> {
        peers
            .iter()
            .map(|p| {
                p.parse::<IpNet>()
                    .or_else(|_| p.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|e| ServiceError::Config {
                        field: field.to_owned(),
                        reason: format!("{p:?} is not a CIDR or an address: {e}"),
                    })
            })
            .collect()
    }

    /// Whether `peer` may send.
    pub fn allows(&self, peer: IpAddr) -> bool {
        let peer = canonical_ip(peer);
        self.allowed_peers.iter().any(|net| net.contains(&peer))
    }
}

/// A TLS acceptor presenting the PEM certificate chain and key in these files.
pub fn tls_acceptor(
    field: &str,
    cert_file: &Path,
    key_file: &Path,
) -> Result<TlsAcceptor, ServiceError> {
    let bad = |what: &str, e: &dyn std::fmt::Display| ServiceError::Config {
        field: field.to_owned(),
        reason: format!("{what}: {e}"),
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_file)
        .map_err(|e| bad(&format!("cert_file {}", cert_file.display()), &e))?
        .collect::<Result<_, _>>()
        .map_err(|e| bad(&format!("cert_file {}", cert_file.display()), &e))?;
    if chain.is_empty() {
        return Err(bad(
            &format!("cert_file {}", cert_file.display()),
            &"no certificate in the file",
        ));
    }
    let key = PrivateKeyDer::from_pem_file(key_file)
        .map_err(|e| bad(&format!("key_file {}", key_file.display()), &e))?;
    // An explicit provider: `builder()` would panic were a second one ever linked in.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad("protocol versions", &e))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| bad("certificate and key", &e))?;
    Ok(TlsAcceptor::from(Arc::new(server)))
}

/// Receives datagrams until shutdown, then waits for the frames in flight.
pub async fn run_udp(
    socket: UdpSocket,
    publisher: IngestPublisher,
    cfg: SyslogConfig,
    shutdown: Shutdown,
) {
    let permits = Arc::new(Semaphore::new(cfg.in_flight.max(1)));
    let mut tasks = JoinSet::new();
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        // Room first: while every slot is taken the kernel buffers (and at worst drops)
        // datagrams, which is UDP's contract, instead of this process growing.
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            () = shutdown.triggered() => break,
        };
        let (n, peer) = tokio::select! {
            r = socket.recv_from(&mut buf) => match r {
                Ok(got) => got,
                Err(e) => {
                    tracing::warn!(source = %cfg.source.name, error = %e, "syslog UDP receive failed");
                    continue;
                }
            },
            () = shutdown.triggered() => break,
        };
        if !cfg.allowed_peers.is_empty() && !cfg.allows(peer.ip()) {
            tracing::warn!(source = %cfg.source.name, %peer, "syslog datagram from a peer not in allowed_peers dropped");
            continue;
        }
        let frame = buf[..n].to_vec();
        let (publisher, source, sd) = (publisher.clone(), cfg.source.clone(), shutdown.clone());
        tasks.spawn(async move {
            deliver(&publisher, &source, &frame, &sd).await;
            drop(permit);
        });
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
}

/// Accepts TCP (or, with `tls`, TLS) connections from allowed peers until shutdown; each
/// connection task is tracked by `shutdown` so draining waits for its frames in flight.
pub async fn run_tcp(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    publisher: IngestPublisher,
    cfg: SyslogConfig,
    shutdown: Shutdown,
) {
    let cfg = Arc::new(cfg);
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(got) => got,
                Err(e) => {
                    tracing::warn!(source = %cfg.source.name, error = %e, "syslog accept failed");
                    // Out of descriptors and the like: give the process a moment.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = shutdown.triggered() => break,
        };
        if !cfg.allows(peer.ip()) {
            tracing::warn!(source = %cfg.source.name, %peer, "syslog connection from a peer not in allowed_peers refused");
            drop(stream);
            continue;
        }
        let (publisher, cfg, sd, tls) = (
            publisher.clone(),
            cfg.clone(),
            shutdown.clone(),
            tls.clone(),
        );
        shutdown.spawn(async move {
            match tls {
                None => connection(stream, peer, &publisher, &cfg, &sd).await,
                Some(acceptor) => {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls_stream)) => {
                            connection(tls_stream, peer, &publisher, &cfg, &sd).await;
                        }
                        Ok(Err(e)) => {
                            tracing::warn!(source = %cfg.source.name, %peer, error = %e, "syslog TLS handshake failed");
                        }
                        Err(_) => {
                            tracing::warn!(source = %cfg.source.name, %peer, "syslog TLS handshake timed out");
                        }
                    }
                }
            }
        });
    }
}

/// Reads frames until EOF, a framing error or shutdown, publishing at most `in_flight` at a
/// time; returns once every frame read is confirmed (or given up at shutdown).
async fn connection<S: AsyncRead + Unpin>(
    mut stream: S,
    peer: SocketAddr,
    publisher: &IngestPublisher,
    cfg: &SyslogConfig,
    shutdown: &Shutdown,
) {
    let permits = Arc::new(Semaphore::new(cfg.in_flight.max(1)));
    let mut tasks = JoinSet::new();
    let mut buf: Vec<u8> = Vec::with_capacity(8192);
    let mut eof = false;
    'read: loop {
        loop {
            let (used, frame) = match next_frame(&buf) {
                Ok(Some((used, frame))) => (used, frame.to_vec()),
                Ok(None) if eof && !buf.is_empty() => {
                    // The last LF-framed message may lack its newline.
                    (buf.len(), buf.clone())
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(source = %cfg.source.name, %peer, error = %e, "syslog framing error; closing the connection");
                    break 'read;
                }
            };
            buf.drain(..used);
            if frame.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            // Waiting here is the backpressure: nothing more is read meanwhile.
            let Ok(permit) = permits.clone().acquire_owned().await else {
                break 'read;
            };
            let (publisher, source, sd) = (publisher.clone(), cfg.source.clone(), shutdown.clone());
            tasks.spawn(async move {
                deliver(&publisher, &source, &frame, &sd).await;
                drop(permit);
            });
            while tasks.try_join_next().is_some() {}
        }
        if eof {
            break;
        }
        if buf.len() > cfg.max_frame_bytes {
            tracing::warn!(source = %cfg.source.name, %peer, limit = cfg.max_frame_bytes, "syslog frame too long; closing the connection");
            break;
        }
        tokio::select! {
            r = stream.read_buf(&mut buf) => match r {
                Ok(0) => eof = true,
                Ok(_) => {}
                Err(e) => {
                    tracing::debug!(source = %cfg.source.name, %peer, error = %e, "syslog connection read failed");
                    break;
                }
            },
            () = shutdown.triggered() => break,
        }
    }
    while tasks.join_next().await.is_some() {}
}

/// Publishes one frame, retrying transient failures until confirmed; gives up only when the
/// service is shutting down (and says so) or the frame can never be published.
async fn deliver(publisher: &IngestPublisher, source: &Source, frame: &[u8], shutdown: &Shutdown) {
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
    loop {
        match publisher.ingest(source, frame).await {
            Ok(report) => {
                tracing::debug!(source = %source.name, published = report.published.len(), rejected = report.rejected.len(), "syslog frame handled");
                return;
            }
            Err(e) if !e.is_retryable() => {
                tracing::error!(source = %source.name, error = %e, "syslog frame cannot be published");
                if let Err(d) = publisher
                    .dead_letter(source, frame, &format!("frame: {e}"))
                    .await
                {
                    tracing::error!(source = %source.name, error = %d, "syslog frame could not be dead-lettered either; dropped");
                }
                return;
            }
            Err(e) if shutdown.is_triggered() => {
                tracing::error!(source = %source.name, error = %e, "shutting down with the broker away: syslog frame dropped");
                return;
            }
            Err(e) => {
                let delay = backoff.next_delay();
                tracing::warn!(source = %source.name, error = %e, ?delay, "syslog frame not published; retrying");
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = shutdown.triggered() => {}
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_are_matched_by_cidr_and_mapped_addresses_count_as_ipv4() {
        let cfg = SyslogConfig {
            source: Source::new("s", "t", crate::Format::VectraSyslog),
            allowed_peers: SyslogConfig::parse_peers(
                "p",
                &["10.1.0.0/16".into(), "::1".into(), "192.0.2.7".into()],
            )
            .unwrap(),
            in_flight: 1,
            max_frame_bytes: 10,
        };
        assert!(cfg.allows("10.1.200.3".parse().unwrap()));
        assert!(cfg.allows("::ffff:10.1.0.9".parse().unwrap()));
        assert!(cfg.allows("::1".parse().unwrap()));
        assert!(cfg.allows("192.0.2.7".parse().unwrap()));
        assert!(!cfg.allows("192.0.2.8".parse().unwrap()));
        assert!(!cfg.allows("10.2.0.1".parse().unwrap()));
        let err =
            SyslogConfig::parse_peers("ingest.sources.x.allowed_peers", &["10.0.0.0/33".into()])
                .unwrap_err()
                .to_string();
        assert!(
            err.contains("ingest.sources.x.allowed_peers") && err.contains("10.0.0.0/33"),
            "{err}"
        );
    }
}
