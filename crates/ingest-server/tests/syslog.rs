//! Syslog listeners over real UDP, TCP and TLS sockets on loopback, publishing to the real
//! local RabbitMQ.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use culprit_ingest_server::syslog::{self, SyslogConfig};
use culprit_ingest_server::{Format, IngestPublisher, Source};
use culprit_runtime::{Drained, Shutdown};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

fn cef(id: u32, dst: &str) -> String {
    format!(
        "CEF:0|Vectra Networks|X Series|5.7|hidden_https_tunnel_cnc|Hidden HTTPS Tunnel|7|externalId={id} cat=COMMAND & CONTROL src=10.100.199.10 shost=ws1 flexNumber1Label=threat flexNumber1=95 flexNumber2Label=certainty flexNumber2=80 dst={dst} dpt=443 proto=tcp start=1589430827000 end=1589433101000"
    )
}

fn config(peers: &[&str]) -> SyslogConfig {
    SyslogConfig {
        source: Source::new("vectra-syslog", TENANT, Format::VectraSyslog),
        allowed_peers: SyslogConfig::parse_peers(
            "allowed_peers",
            &peers.iter().map(|p| (*p).to_owned()).collect::<Vec<_>>(),
        )
        .unwrap(),
        in_flight: 4,
        max_frame_bytes: 64 * 1024,
    }
}

async fn tcp_listener(
    publisher: IngestPublisher,
    cfg: SyslogConfig,
    tls: Option<tokio_rustls::TlsAcceptor>,
) -> (SocketAddr, Shutdown) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = Shutdown::new();
    shutdown.spawn(syslog::run_tcp(
        listener,
        tls,
        publisher,
        cfg,
        shutdown.clone(),
    ));
    (addr, shutdown)
}

#[tokio::test]
async fn tcp_reads_octet_counted_and_lf_framed_messages() {
    let env = Env::new().await;
    let (addr, shutdown) =
        tcp_listener(env.publisher.clone(), config(&["127.0.0.0/8"]), None).await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    let rfc5424 = format!(
        "<13>1 2020-05-14T05:46:11Z brain1 vectra - - - {}",
        cef(101, "1.2.3.4")
    );
    let rfc3164 = format!("<13>May 14 05:46:11 brain1 {}", cef(102, "1.2.3.5"));
    let mut stream = Vec::new();
    stream.extend(format!("{} {rfc5424}", rfc5424.len()).as_bytes());
    stream.extend(format!("{rfc3164}\n").as_bytes());
    stream.extend(format!("{} {}", cef(103, "1.2.3.6").len(), cef(103, "1.2.3.6")).as_bytes());
    // The last LF frame ends with the connection.
    stream.extend(cef(104, "1.2.3.7").as_bytes());
    // Sent in awkward pieces: frames cross reads.
    for piece in stream.chunks(37) {
        s.write_all(piece).await.unwrap();
    }
    s.shutdown().await.unwrap();
    let mut ids: Vec<String> = env
        .take_hunt(4)
        .await
        .iter()
        .map(|m| decode(m).source_id)
        .collect();
    ids.sort();
    assert_eq!(ids, ["101", "102", "103", "104"]);
    shutdown.trigger();
    assert_eq!(shutdown.drain(WAIT).await, Drained::Clean);
    env.cleanup().await;
}

#[tokio::test]
async fn udp_datagrams_are_published_and_multi_target_needs_a_target_list() {
    let env = Env::new().await;
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    let shutdown = Shutdown::new();
    shutdown.spawn(syslog::run_udp(
        socket,
        env.publisher.clone(),
        config(&[]),
        shutdown.clone(),
    ));
    let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let msg = format!("<13>May 14 05:46:11 brain1 {}", cef(201, "0.0.0.0"));
    client.send_to(msg.as_bytes(), addr).await.unwrap();
    let msgs = env.take_hunt(1).await;
    let d = decode(&msgs[0]);
    assert_eq!(d.source_id, "201");
    assert_eq!(d.tenant, TENANT);
    assert!(d.needs_target_list, "dst=0.0.0.0 names no target");
    assert!(d.flows.is_empty(), "no target is made up: {:?}", d.flows);
    shutdown.trigger();
    assert_eq!(shutdown.drain(WAIT).await, Drained::Clean);
    env.cleanup().await;
}

#[tokio::test]
async fn peers_outside_the_allowed_cidrs_are_refused() {
    let env = Env::new().await;
    let (addr, shutdown) = tcp_listener(
        env.publisher.clone(),
        config(&["192.0.2.0/24", "::1/128"]),
        None,
    )
    .await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    let _ = s
        .write_all(format!("{}\n", cef(301, "1.2.3.4")).as_bytes())
        .await;
    let mut rest = Vec::new();
    // Closed by the server without a word (EOF, or a reset if our bytes were still unread).
    let read = tokio::time::timeout(WAIT, s.read_to_end(&mut rest))
        .await
        .unwrap();
    assert!(
        read.map_or(true, |n| n == 0),
        "the server answered {rest:?}"
    );
    shutdown.trigger();
    assert_eq!(shutdown.drain(WAIT).await, Drained::Clean);
    assert_eq!(
        env.hunt_depth().await,
        0,
        "a refused peer's frame was published"
    );
    env.cleanup().await;
}

#[tokio::test]
async fn tls_with_a_generated_certificate() {
    let env = Env::new().await;
    let dir = tempfile::tempdir().unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let (cert_file, key_file) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
    std::fs::write(&cert_file, cert.cert.pem()).unwrap();
    std::fs::write(&key_file, cert.signing_key.serialize_pem()).unwrap();
    let acceptor = syslog::tls_acceptor("tls", &cert_file, &key_file).unwrap();
    let (addr, shutdown) = tcp_listener(
        env.publisher.clone(),
        config(&["127.0.0.1/32"]),
        Some(acceptor),
    )
    .await;

    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.cert.der().clone()).unwrap();
    let client = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = connector.connect(name, tcp).await.unwrap();
    let m = cef(401, "1.2.3.4");
    tls.write_all(format!("{} {m}", m.len()).as_bytes())
        .await
        .unwrap();
    tls.write_all(format!("{}\n", cef(402, "1.2.3.4")).as_bytes())
        .await
        .unwrap();
    tls.flush().await.unwrap();
    let mut ids: Vec<String> = env
        .take_hunt(2)
        .await
        .iter()
        .map(|m| decode(m).source_id)
        .collect();
    ids.sort();
    assert_eq!(ids, ["401", "402"]);

    // A plaintext sender on the TLS port publishes nothing.
    let mut plain = TcpStream::connect(addr).await.unwrap();
    let _ = plain
        .write_all(format!("{}\n", cef(403, "1.2.3.4")).as_bytes())
        .await;
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(WAIT, plain.read_to_end(&mut rest))
        .await
        .unwrap();
    drop(tls);
    shutdown.trigger();
    assert_eq!(shutdown.drain(WAIT).await, Drained::Clean);
    assert_eq!(
        env.hunt_depth().await,
        0,
        "the plaintext frame was published"
    );
    env.cleanup().await;
}

#[tokio::test]
async fn unreadable_frames_are_dead_lettered_and_the_connection_goes_on() {
    let env = Env::new().await;
    let (addr, shutdown) =
        tcp_listener(env.publisher.clone(), config(&["127.0.0.1/32"]), None).await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    let bad = "<13>May 14 05:46:11 brain1 CEF:0|Vectra Networks|X Series|5.7|x|y|7|cat=COMMAND src=10.0.0.1";
    s.write_all(format!("{bad}\n{}\n", cef(501, "1.2.3.4")).as_bytes())
        .await
        .unwrap();
    let msgs = env.take_hunt(1).await;
    assert_eq!(decode(&msgs[0]).source_id, "501");
    let deadline = tokio::time::Instant::now() + WAIT;
    let dead = loop {
        let dead = env.dead_letters().await;
        if !dead.is_empty() || tokio::time::Instant::now() > deadline {
            break dead;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].message.payload, bad.as_bytes());
    let reason = &dead[0].reason;
    assert!(
        reason.contains("line 1") && reason.contains("required field is missing"),
        "{reason}"
    );
    drop(s);
    shutdown.trigger();
    assert_eq!(shutdown.drain(WAIT).await, Drained::Clean);
    env.cleanup().await;
}

#[tokio::test]
async fn shutdown_drains_cleanly_and_stops_accepting() {
    let env = Env::new().await;
    let (addr, shutdown) =
        tcp_listener(env.publisher.clone(), config(&["127.0.0.1/32"]), None).await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    let mut frames = String::new();
    for id in 600..650 {
        frames.push_str(&cef(id, "1.2.3.4"));
        frames.push('\n');
    }
    s.write_all(frames.as_bytes()).await.unwrap();
    s.flush().await.unwrap();
    // Wait until the server has taken the connection's bytes in (first publishes confirmed).
    let deadline = tokio::time::Instant::now() + WAIT;
    while env.hunt_depth().await == 0 {
        assert!(tokio::time::Instant::now() < deadline, "nothing published");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    s.shutdown().await.unwrap();
    let mut rest = Vec::new();
    tokio::time::timeout(WAIT, s.read_to_end(&mut rest))
        .await
        .unwrap()
        .unwrap();
    shutdown.trigger();
    assert_eq!(shutdown.drain(WAIT).await, Drained::Clean);
    assert_eq!(
        env.hunt_depth().await,
        50,
        "frames read were not all published"
    );
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "still accepting after shutdown"
    );
    env.cleanup().await;
}

/// A bus that holds every publish until the test lets it through, counting how many are
/// waiting at once: a stand-in for a blocked broker whose confirms do not come.
#[derive(Debug)]
struct GatedBus {
    gate: tokio::sync::Semaphore,
    waiting: std::sync::atomic::AtomicUsize,
    most_waiting: std::sync::atomic::AtomicUsize,
    published: std::sync::atomic::AtomicUsize,
}

impl culprit_bus::Publisher for GatedBus {
    fn publish<'a>(
        &'a self,
        _topic: culprit_bus::Topic,
        _msg: culprit_bus::Message,
    ) -> culprit_bus::BoxFuture<'a, Result<(), culprit_bus::BusError>> {
        use std::sync::atomic::Ordering::SeqCst;
        Box::pin(async move {
            let now = self.waiting.fetch_add(1, SeqCst) + 1;
            self.most_waiting.fetch_max(now, SeqCst);
            let permit = self
                .gate
                .acquire()
                .await
                .map_err(|_| culprit_bus::BusError::Closed)?;
            permit.forget();
            self.waiting.fetch_sub(1, SeqCst);
            self.published.fetch_add(1, SeqCst);
            Ok(())
        })
    }

    fn dead_letter<'a>(
        &'a self,
        _queue: culprit_bus::QueueName,
        _msg: culprit_bus::Message,
        _reason: &'a str,
    ) -> culprit_bus::BoxFuture<'a, Result<(), culprit_bus::BusError>> {
        Box::pin(async { Ok(()) })
    }

    fn publish_delayed<'a>(
        &'a self,
        _queue: culprit_bus::QueueName,
        _msg: culprit_bus::Message,
        _delay: Duration,
    ) -> culprit_bus::BoxFuture<'a, Result<(), culprit_bus::BusError>> {
        Box::pin(async { Err(culprit_bus::BusError::Closed) })
    }
}

#[tokio::test]
async fn a_stalled_broker_stops_the_reading_at_in_flight_frames() {
    use std::sync::atomic::Ordering::SeqCst;
    let bus = Arc::new(GatedBus {
        gate: tokio::sync::Semaphore::new(0),
        waiting: Default::default(),
        most_waiting: Default::default(),
        published: Default::default(),
    });
    let publisher = IngestPublisher::new(
        bus.clone(),
        Arc::new(culprit_cache::MemoryStores::new()),
        culprit_ingest_server::PublisherConfig {
            // Long enough that no publish times out while the gate is shut.
            ack_timeout: Duration::from_secs(300),
            ..Default::default()
        },
    );
    let mut cfg = config(&["127.0.0.1/32"]);
    cfg.in_flight = 3;
    let (addr, shutdown) = tcp_listener(publisher, cfg, None).await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    let mut frames = String::new();
    for id in 700..900 {
        frames.push_str(&cef(id, "1.2.3.4"));
        frames.push('\n');
    }
    // 200 small frames fit in the socket buffers: the whole stream is there to be read.
    s.write_all(frames.as_bytes()).await.unwrap();
    s.flush().await.unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    while bus.waiting.load(SeqCst) < 3 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "publishes never started"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Give a listener that ignored the bound every chance to overshoot before the gate opens.
    tokio::task::yield_now().await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(bus.published.load(SeqCst), 0);
    bus.gate.add_permits(1000);
    while bus.published.load(SeqCst) < 200 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {} published",
            bus.published.load(SeqCst)
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(
        bus.most_waiting.load(SeqCst),
        3,
        "more frames were taken in than tcp_in_flight allows"
    );
    drop(s);
    shutdown.trigger();
    assert_eq!(shutdown.drain(WAIT).await, Drained::Clean);
}
