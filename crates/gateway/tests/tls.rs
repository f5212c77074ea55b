//! Mutual TLS: with `client_ca_file` set, only clients with a certificate from that CA get in
//! (the API key is still required). Certificates are made with the `openssl` CLI.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::Command;

use common::{Options, spawn_app};
use culprit_proto::v1 as pb;
use culprit_proto::v1::correlation_service_client::CorrelationServiceClient;
use culprit_settings::GatewayTlsSettings;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

const SCRIPT: &str = r#"
set -e
ec="-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes"
openssl req -x509 $ec -keyout ca.key -out ca.pem -days 2 -subj /CN=culprit-test-ca \
  -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign
for who in server client; do
  openssl req $ec -keyout $who.key -out $who.csr -subj /CN=localhost
  if [ $who = server ]; then eku=serverAuth; else eku=clientAuth; fi
  printf "subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=$eku\n" > $who.ext
  openssl x509 -req -in $who.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out $who.pem -days 2 -extfile $who.ext
done
"#;

fn make_certs(dir: &Path) {
    let out = Command::new("sh")
        .arg("-c")
        .arg(SCRIPT)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openssl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn read(dir: &Path, f: &str) -> Vec<u8> {
    std::fs::read(dir.join(f)).unwrap()
}

async fn dial(
    app: &common::App,
    dir: &Path,
    with_identity: bool,
) -> Result<Channel, tonic::transport::Error> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(read(dir, "ca.pem")))
        .domain_name("localhost");
    if with_identity {
        tls = tls.identity(Identity::from_pem(
            read(dir, "client.pem"),
            read(dir, "client.key"),
        ));
    }
    Channel::from_shared(format!("https://localhost:{}", app.addr.port()))
        .unwrap()
        .tls_config(tls)?
        .connect()
        .await
}

#[tokio::test]
async fn mutual_tls_admits_only_clients_with_a_certificate_from_the_ca() {
    let dir = tempfile::tempdir().unwrap();
    make_certs(dir.path());
    let p = |f: &str| dir.path().join(f).display().to_string();
    let tls = GatewayTlsSettings {
        cert_file: p("server.pem"),
        key_file: p("server.key"),
        client_ca_file: p("ca.pem"),
    };
    let app = spawn_app(Options {
        tls,
        ..Options::default()
    })
    .await;
    let channel = dial(&app, dir.path(), true).await.unwrap();
    let mut client = CorrelationServiceClient::new(channel);
    client
        .list_correlations(app.req(Some("read"), pb::ListCorrelationsRequest::default()))
        .await
        .unwrap();

    let refused = match dial(&app, dir.path(), false).await {
        Err(_) => true,
        Ok(ch) => CorrelationServiceClient::new(ch)
            .list_correlations(app.req(Some("read"), pb::ListCorrelationsRequest::default()))
            .await
            .is_err(),
    };
    assert!(refused, "a client without a certificate must not get in");
    app.shutdown().await;
}
