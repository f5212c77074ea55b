//! `culprit serve` with every role in one process (in-process bus, memory stores): detections
//! submitted over gRPC come back, attributed, on the watch stream and from GetCorrelation; a
//! shutdown drains and returns cleanly.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a panic is the test failure report

use std::path::Path;
use std::time::Duration;

use culprit_mde_twin::{Twin, TwinConfig};
use culprit_proto::v1 as pb;
use culprit_proto::v1::correlation_service_client::CorrelationServiceClient;
use culprit_runtime::Shutdown;
use culprit_settings::Settings;

const TENANT_ID: &str = "7d3f0c1e-0000-4000-8000-0000000e2e01";
const CLIENT_ID: &str = "8e4a1d2f-0000-4000-8000-0000000e2e01";
const SECRET: &str = "embedded-test-secret";

fn scenario() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/scenarios/lsass_01")
}

fn authorized<T>(msg: T, key: &str) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.metadata_mut()
        .insert("authorization", format!("Bearer {key}").parse().unwrap());
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_process_attributes_submitted_detections_and_drains() {
    let twin_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let twin = Twin::start(
        TwinConfig::single_tenant(TENANT_ID, CLIENT_ID, SECRET, vec![scenario()]),
        twin_listener,
    )
    .await
    .unwrap();
    let key = culprit_gateway::create_key_with_id(
        "e2e",
        &[culprit_gateway::Scope::Read, culprit_gateway::Scope::Submit],
        &["lab".to_owned()],
    )
    .unwrap();
    let base = twin.base_url();
    let toml = format!(
        "[tenants.lab]\ntenant_id = \"{TENANT_ID}\"\nclient_id = \"{CLIENT_ID}\"\nclient_secret = \"{SECRET}\"\n\
         [tenants.lab.endpoints]\nlogin = \"{base}\"\ngraph = \"{base}\"\nmde_api = \"{base}\"\n\
         [hunter]\nbatch_window_ms = 200\n\
         [gateway]\napi_keys = [{}]\n",
        key.config_line
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("culprit.toml");
    std::fs::write(&path, toml).unwrap();
    let settings = Settings::load_from(Some(&path), &[]).unwrap();
    settings.validate().unwrap();

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = Shutdown::new();
    let server = tokio::spawn(culprit::serve::serve_with(
        settings,
        None,
        shutdown.clone(),
        Some(listener),
    ));

    use secrecy::ExposeSecret;
    let api_key = key.key.expose_secret().to_owned();
    let mut client = CorrelationServiceClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    let mut watch = client
        .watch_correlations(authorized(
            pb::WatchCorrelationsRequest {
                from_oldest: true,
                ..Default::default()
            },
            &api_key,
        ))
        .await
        .unwrap()
        .into_inner();

    let body = std::fs::read(scenario().join("ndr/vectra_detections.json")).unwrap();
    let submitted = client
        .submit_detection(authorized(
            pb::SubmitDetectionRequest {
                payload: Some(pb::submit_detection_request::Payload::Raw(
                    pb::RawDetection {
                        format: pb::RawFormat::VectraJson as i32,
                        tenant: "lab".into(),
                        body,
                    },
                )),
            },
            &api_key,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(submitted.detections.len(), 3);

    let mut answered = std::collections::BTreeMap::new();
    // The bound only turns a hang into a failure; the stream's events are the signal.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while answered.len() < 3 {
        let ev = tokio::time::timeout_at(deadline, watch.message())
            .await
            .expect("three results in time")
            .unwrap()
            .expect("stream open");
        if let Some(pb::correlation_event::Kind::NewResult(r)) = ev.kind {
            let c = culprit_model::Correlation::try_from(r.correlation.unwrap()).unwrap();
            answered.insert(c.detection_id.clone(), c);
        }
    }
    for (id, file) in [
        ("2568", "msedge.exe"),
        ("2569", "winx64_payload.exe"),
        ("2570", "svchost.exe"),
    ] {
        let c = &answered[id];
        assert_eq!(
            c.status,
            culprit_model::Status::Attributed,
            "{id}: {}",
            c.explanation
        );
        assert_eq!(c.probable.as_ref().unwrap().file_name, file, "{id}");
        assert!(c.links.is_some(), "portal links on {id}");
    }
    let key_2569 = answered["2569"].detection_key.to_string();
    let got = client
        .get_correlation(authorized(
            pb::GetCorrelationRequest {
                selector: Some(pb::get_correlation_request::Selector::DetectionKey(
                    key_2569,
                )),
            },
            &api_key,
        ))
        .await
        .unwrap()
        .into_inner();
    let c = culprit_model::Correlation::try_from(got.correlation.unwrap()).unwrap();
    assert_eq!(c.probable.unwrap().process_id, 1988);

    drop(watch);
    shutdown.trigger();
    server.await.unwrap().unwrap();
    twin.shutdown().await;
}
