//! The twin over HTTPS: a client trusting the generated CA gets answers with https endpoints;
//! one that does not is refused at the handshake.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{TENANT, scenario};
use culprit_mde_twin::{DEFAULT_TLS_HOSTS, Twin, TwinConfig};
use serde_json::Value;

async fn tls_twin() -> culprit_mde_twin::TwinHandle {
    let mut config =
        TwinConfig::single_tenant(TENANT, common::APP, common::SECRET, vec![scenario()]).with_tls();
    config.tls.extra_hosts = vec!["twin.lab.example".into()];
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    Twin::start(config, listener).await.unwrap()
}

fn client(ca_pem: Option<&str>) -> reqwest::Client {
    let mut b = reqwest::Client::builder().no_proxy();
    if let Some(pem) = ca_pem {
        b = b.add_root_certificate(reqwest::Certificate::from_pem(pem.as_bytes()).unwrap());
    }
    b.build().unwrap()
}

#[tokio::test]
async fn openid_configuration_advertises_https_endpoints() {
    let twin = tls_twin().await;
    let base = twin.base_url();
    assert!(base.starts_with("https://127.0.0.1:"), "{base}");
    let pem = twin.ca_pem().expect("a CA with TLS on");
    assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"), "{pem}");
    let doc: Value = client(Some(pem))
        .get(format!(
            "{base}/{TENANT}/v2.0/.well-known/openid-configuration"
        ))
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap()
        .json()
        .await
        .unwrap();
    for field in [
        "token_endpoint",
        "issuer",
        "jwks_uri",
        "authorization_endpoint",
    ] {
        let url = doc[field].as_str().unwrap();
        assert!(url.starts_with(&format!("{base}/")), "{field}: {url}");
    }
    twin.shutdown().await;
}

#[tokio::test]
async fn certificate_names_the_default_and_extra_hosts() {
    let twin = tls_twin().await;
    let hosts = twin.tls_hosts();
    for h in DEFAULT_TLS_HOSTS
        .iter()
        .copied()
        .chain(["twin.lab.example"])
    {
        assert!(hosts.iter().any(|x| x == h), "{h} missing from {hosts:?}");
    }
    // `localhost` must verify as a name, not only the IP the listener is on.
    let url = format!("https://localhost:{}/_twin/clock", twin.addr().port());
    let resp = client(twin.ca_pem()).get(url).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    twin.shutdown().await;
}

#[tokio::test]
async fn a_client_without_the_ca_is_refused() {
    let twin = tls_twin().await;
    let err = client(None)
        .get(format!("{}/_twin/clock", twin.base_url()))
        .send()
        .await
        .unwrap_err();
    assert!(err.is_connect(), "{err:?}");
    twin.shutdown().await;
}

#[tokio::test]
async fn each_start_generates_a_new_ca_and_plain_http_has_none() {
    let a = tls_twin().await;
    let b = tls_twin().await;
    assert_ne!(a.ca_pem(), b.ca_pem());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let plain = Twin::start(common::config(), listener).await.unwrap();
    assert!(plain.base_url().starts_with("http://"));
    assert!(plain.ca_pem().is_none() && plain.tls_hosts().is_empty());
    for t in [a, b, plain] {
        t.shutdown().await;
    }
}
