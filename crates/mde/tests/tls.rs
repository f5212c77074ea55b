//! TLS and proxies as customers run them, against the twin over HTTPS: the generated CA
//! configured as `ca_file`, no CA (a clear error), a real HTTP CONNECT proxy in the path, and
//! verification turned off on purpose.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::Capture;

use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use base64::Engine;
use culprit_mde::{ClientConfig, Cloud, Endpoints, IsolationType, MdeClient, MdeError, ProxyAuth};
use culprit_mde_twin::{Twin, TwinConfig, TwinHandle};
use secrecy::SecretString;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use url::Url;

const TENANT: &str = "5f1c8a2e-0000-4000-8000-00000000c0de";
const CLIENT: &str = "6a2b9c3d-0000-4000-8000-00000000c0de";
const SECRET: &str = "twin-secret-for-tls-tests";
const DEVICE_NAME: &str = "mkt01.pandalab.com";
const UNTRUSTED: &str = "certificate not trusted: set tls.ca_file or fix the proxy's CA";

/// The twin over HTTPS on `ip`:0 with the bundled scenario; `ip` joins the certificate's names.
async fn tls_twin_on(ip: &str) -> TwinHandle {
    let scenario =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/scenarios/lsass_01");
    let mut config = TwinConfig::single_tenant(TENANT, CLIENT, SECRET, vec![scenario]).with_tls();
    config.tls.extra_hosts = vec![ip.to_owned()];
    let listener = TcpListener::bind((ip, 0)).await.unwrap();
    Twin::start(config, listener).await.unwrap()
}

async fn tls_twin() -> TwinHandle {
    tls_twin_on("127.0.0.1").await
}

/// Client settings for the twin's own address (no proxy in the path).
fn direct_config(twin: &TwinHandle) -> ClientConfig {
    let mut cfg = ClientConfig::new(
        Cloud::Commercial,
        TENANT,
        CLIENT,
        SecretString::from(SECRET),
    );
    cfg.endpoints = Some(Endpoints::single(&Url::parse(&twin.base_url()).unwrap()));
    cfg
}

/// The CA as a PEM file, as an operator would save `--ca-out`.
fn ca_file(twin: &TwinHandle) -> tempfile::NamedTempFile {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    f.write_all(twin.ca_pem().unwrap().as_bytes()).unwrap();
    f
}

/// Token, a hunting query finding the device, and isolating it: the calls Culprit makes.
async fn hunt_and_isolate(client: &MdeClient) {
    let query =
        format!("DeviceInfo | where DeviceName == \"{DEVICE_NAME}\" | project DeviceId | take 1");
    let found = client.hunt(&query, None).await.unwrap();
    let col = found.table.column_index("DeviceId").unwrap();
    let device_id = found.table.rows[0][col].as_str().unwrap().to_owned();
    assert_eq!(device_id.len(), 40, "{device_id}");
    let action = client
        .isolate(&device_id, IsolationType::Selective, "tls test")
        .await
        .unwrap();
    assert_eq!(action.machine_id, Some(device_id));
    assert_eq!(action.action_type, "Isolate");
}

fn expect_untrusted(err: MdeError, host: &str) {
    let text = err.to_string();
    assert!(text.contains(UNTRUSTED), "{text}");
    match err {
        MdeError::UntrustedCertificate { host: h, detail } => {
            assert_eq!(h, host);
            assert!(detail.contains("UnknownIssuer"), "{detail}");
        }
        other => panic!("expected UntrustedCertificate, got {other:?}"),
    }
}

#[tokio::test]
async fn hunting_and_isolation_over_https_with_the_ca_file() {
    let twin = tls_twin().await;
    assert!(twin.base_url().starts_with("https://"));
    let ca = ca_file(&twin);
    let mut cfg = direct_config(&twin);
    cfg.ca_file = Some(ca.path().to_path_buf());
    hunt_and_isolate(&MdeClient::new(cfg).unwrap()).await;
    let counts = twin.call_counts(TENANT);
    assert_eq!(counts.tokens_issued, 2, "one Graph and one MDE token");
    twin.shutdown().await;
}

#[tokio::test]
async fn ca_only_trusts_the_ca_file_alone() {
    let twin = tls_twin().await;
    let ca = ca_file(&twin);
    let mut cfg = direct_config(&twin);
    cfg.ca_file = Some(ca.path().to_path_buf());
    cfg.ca_only = true;
    hunt_and_isolate(&MdeClient::new(cfg).unwrap()).await;
    twin.shutdown().await;
}

#[tokio::test]
async fn without_the_ca_the_error_says_what_to_set() {
    let twin = tls_twin().await;
    let client = MdeClient::new(direct_config(&twin)).unwrap();
    let err = client.hunt("DeviceInfo | take 1", None).await.unwrap_err();
    assert_eq!(err.kind(), "untrusted_certificate");
    assert!(!err.is_retryable(), "a missing CA does not fix itself");
    expect_untrusted(err, "127.0.0.1");
    assert_eq!(twin.call_counts(TENANT).tokens_issued, 0);
    twin.shutdown().await;
}

#[tokio::test]
async fn another_twins_ca_is_not_trusted() {
    let twin = tls_twin().await;
    let other = tls_twin().await;
    let ca = ca_file(&other);
    let mut cfg = direct_config(&twin);
    cfg.ca_file = Some(ca.path().to_path_buf());
    let err = MdeClient::new(cfg)
        .unwrap()
        .hunt("DeviceInfo | take 1", None)
        .await
        .unwrap_err();
    expect_untrusted(err, "127.0.0.1");
    twin.shutdown().await;
    other.shutdown().await;
}

#[tokio::test]
async fn a_ca_file_that_is_missing_or_not_pem_is_a_config_error() {
    let twin = tls_twin().await;
    let dir = tempfile::tempdir().unwrap();
    let not_pem = dir.path().join("ca.pem");
    std::fs::write(&not_pem, "not a certificate").unwrap();
    for path in [dir.path().join("absent.pem"), not_pem] {
        let mut cfg = direct_config(&twin);
        cfg.ca_file = Some(path.clone());
        let err = MdeClient::new(cfg).unwrap_err();
        assert!(
            matches!(
                err,
                MdeError::InvalidConfig {
                    field: "tls.ca_file",
                    ..
                }
            ),
            "{path:?}: {err:?}"
        );
        assert!(
            err.to_string().contains(&path.display().to_string()),
            "{err}"
        );
    }
    let mut cfg = direct_config(&twin);
    cfg.ca_only = true;
    let err = MdeClient::new(cfg).unwrap_err();
    assert!(
        matches!(
            err,
            MdeError::InvalidConfig {
                field: "tls.ca_file",
                ..
            }
        ),
        "{err:?}"
    );
    twin.shutdown().await;
}

#[tokio::test]
async fn verification_off_works_and_warns() {
    let twin = tls_twin().await;
    let capture = Capture::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::WARN)
        .with_ansi(false)
        .with_writer(capture.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let mut cfg = direct_config(&twin);
    cfg.danger_accept_invalid_certs = true;
    let client = MdeClient::new(cfg).unwrap();
    let logs = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
    assert!(logs.contains("WARN"), "{logs}");
    assert!(
        logs.contains("TLS certificate verification is OFF"),
        "{logs}"
    );
    assert!(!logs.contains(SECRET), "{logs}");
    hunt_and_isolate(&client).await;
    twin.shutdown().await;
}

/// A small HTTP CONNECT proxy on 127.0.0.1:0 that tunnels every target to `upstream` (as a
/// corporate proxy reaches the real hosts) and records which targets it tunnelled.
struct ConnectProxy {
    addr: SocketAddr,
    tunnelled: Arc<Mutex<Vec<String>>>,
    refused: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl ConnectProxy {
    /// `credentials` ("user:pass") makes the proxy demand that basic auth.
    async fn start(upstream: SocketAddr, credentials: Option<&str>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let expected = credentials.map(|c| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(c)
            )
        });
        let tunnelled = Arc::new(Mutex::new(Vec::new()));
        let refused = Arc::new(Mutex::new(Vec::new()));
        let (t, r) = (tunnelled.clone(), refused.clone());
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (t, r, expected) = (t.clone(), r.clone(), expected.clone());
                tokio::spawn(tunnel(stream, upstream, expected, t, r));
            }
        });
        ConnectProxy {
            addr,
            tunnelled,
            refused,
            task,
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn tunnelled(&self) -> Vec<String> {
        self.tunnelled.lock().unwrap().clone()
    }

    fn refused(&self) -> Vec<String> {
        self.refused.lock().unwrap().clone()
    }
}

impl Drop for ConnectProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Reads the request head (CONNECT sends no body before the 200).
async fn read_head(stream: &mut TcpStream) -> Option<String> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte).await.ok()? == 0 || head.len() > 16 * 1024 {
            return None;
        }
        head.push(byte[0]);
    }
    String::from_utf8(head).ok()
}

async fn tunnel(
    mut client: TcpStream,
    upstream: SocketAddr,
    expected_auth: Option<String>,
    tunnelled: Arc<Mutex<Vec<String>>>,
    refused: Arc<Mutex<Vec<String>>>,
) {
    let Some(head) = read_head(&mut client).await else {
        return;
    };
    let mut lines = head.split("\r\n");
    let request: Vec<&str> = lines.next().unwrap_or_default().split(' ').collect();
    let [method, target, _version] = request[..] else {
        return;
    };
    if method != "CONNECT" {
        let _ = client
            .write_all(b"HTTP/1.1 405 Method Not Allowed\r\n\r\n")
            .await;
        return;
    }
    let auth = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("proxy-authorization"))
        .map(|(_, v)| v.trim().to_owned());
    if expected_auth.is_some() && auth != expected_auth {
        refused.lock().unwrap().push(target.to_owned());
        let _ = client
            .write_all(
                b"HTTP/1.1 407 Proxy Authentication Required\r\n\
                  Proxy-Authenticate: Basic realm=\"test\"\r\nContent-Length: 0\r\n\r\n",
            )
            .await;
        return;
    }
    let Ok(mut server) = TcpStream::connect(upstream).await else {
        let _ = client.write_all(b"HTTP/1.1 502 Bad Gateway\r\n\r\n").await;
        return;
    };
    tunnelled.lock().unwrap().push(target.to_owned());
    if client
        .write_all(b"HTTP/1.1 200 Connection Established\r\n\r\n")
        .await
        .is_ok()
    {
        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
    }
}

/// The commercial cloud's real hosts, reached only through `proxy`.
fn proxied_config(proxy: &ConnectProxy) -> ClientConfig {
    let mut cfg = ClientConfig::new(
        Cloud::Commercial,
        TENANT,
        CLIENT,
        SecretString::from(SECRET),
    );
    cfg.proxy = Some(proxy.url());
    cfg
}

const PROXY_USER: &str = "culprit";
const PROXY_PASSWORD: &str = "proxy-pa55word";

#[tokio::test]
async fn through_a_connect_proxy_with_basic_auth() {
    let twin = tls_twin().await;
    let proxy =
        ConnectProxy::start(twin.addr(), Some(&format!("{PROXY_USER}:{PROXY_PASSWORD}"))).await;
    let ca = ca_file(&twin);
    let mut cfg = proxied_config(&proxy);
    cfg.ca_file = Some(ca.path().to_path_buf());
    cfg.proxy_auth = Some(ProxyAuth {
        username: PROXY_USER.to_owned(),
        password: SecretString::from(PROXY_PASSWORD),
    });
    assert!(!format!("{cfg:?}").contains(PROXY_PASSWORD));
    hunt_and_isolate(&MdeClient::new(cfg).unwrap()).await;
    let mut hosts = proxy.tunnelled();
    hosts.sort();
    hosts.dedup();
    assert_eq!(
        hosts,
        [
            "api.securitycenter.microsoft.com:443",
            "graph.microsoft.com:443",
            "login.microsoftonline.com:443",
        ]
    );
    assert!(proxy.refused().is_empty(), "{:?}", proxy.refused());
    assert_eq!(twin.call_counts(TENANT).tokens_issued, 2);
    twin.shutdown().await;
}

#[tokio::test]
async fn credentials_in_the_proxy_url_work_too() {
    let twin = tls_twin().await;
    let proxy =
        ConnectProxy::start(twin.addr(), Some(&format!("{PROXY_USER}:{PROXY_PASSWORD}"))).await;
    let ca = ca_file(&twin);
    let mut cfg = proxied_config(&proxy);
    cfg.proxy = Some(format!(
        "http://{PROXY_USER}:{PROXY_PASSWORD}@{}",
        proxy.addr
    ));
    cfg.ca_file = Some(ca.path().to_path_buf());
    let found = MdeClient::new(cfg)
        .unwrap()
        .hunt("DeviceInfo | take 1", None)
        .await
        .unwrap();
    assert_eq!(found.table.rows.len(), 1);
    assert!(
        proxy
            .tunnelled()
            .contains(&"graph.microsoft.com:443".to_owned())
    );
    twin.shutdown().await;
}

#[tokio::test]
async fn a_proxy_refusing_the_credentials_fails_the_call() {
    let twin = tls_twin().await;
    let proxy = ConnectProxy::start(twin.addr(), Some("culprit:right")).await;
    let ca = ca_file(&twin);
    let mut cfg = proxied_config(&proxy);
    cfg.ca_file = Some(ca.path().to_path_buf());
    cfg.proxy_auth = Some(ProxyAuth {
        username: PROXY_USER.to_owned(),
        password: SecretString::from("wrong"),
    });
    let err = MdeClient::new(cfg)
        .unwrap()
        .hunt("DeviceInfo | take 1", None)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), "transport", "{err:?}");
    assert!(!err.to_string().contains("wrong"), "{err}");
    assert_eq!(proxy.refused(), ["login.microsoftonline.com:443"]);
    assert!(proxy.tunnelled().is_empty());
    twin.shutdown().await;
}

#[tokio::test]
async fn through_a_proxy_without_its_ca_the_error_names_the_proxy_ca() {
    let twin = tls_twin().await;
    let proxy = ConnectProxy::start(twin.addr(), None).await;
    let err = MdeClient::new(proxied_config(&proxy))
        .unwrap()
        .hunt("DeviceInfo | take 1", None)
        .await
        .unwrap_err();
    expect_untrusted(err, "login.microsoftonline.com");
    assert_eq!(proxy.tunnelled(), ["login.microsoftonline.com:443"]);
    twin.shutdown().await;
}

#[tokio::test]
async fn no_proxy_hosts_are_reached_directly() {
    // 127.0.0.2 is loopback on Linux but not in the built-in exemptions, so only the no_proxy
    // entry keeps these calls off the proxy.
    let twin = tls_twin_on("127.0.0.2").await;
    let proxy = ConnectProxy::start(twin.addr(), None).await;
    let ca = ca_file(&twin);
    let mut cfg = direct_config(&twin);
    cfg.proxy = Some(proxy.url());
    cfg.ca_file = Some(ca.path().to_path_buf());
    cfg.no_proxy = vec!["127.0.0.2".to_owned()];
    hunt_and_isolate(&MdeClient::new(cfg.clone()).unwrap()).await;
    assert!(proxy.tunnelled().is_empty(), "{:?}", proxy.tunnelled());

    cfg.no_proxy = Vec::new();
    MdeClient::new(cfg.clone())
        .unwrap()
        .hunt("DeviceInfo | take 1", None)
        .await
        .unwrap();
    assert!(
        !proxy.tunnelled().is_empty(),
        "without the entry the proxy is used"
    );

    cfg.no_proxy = vec!["a.example,b.example".to_owned()];
    let err = MdeClient::new(cfg).unwrap_err();
    assert!(
        matches!(
            err,
            MdeError::InvalidConfig {
                field: "no_proxy",
                ..
            }
        ),
        "{err:?}"
    );
    twin.shutdown().await;
}
