//! OTLP export: spans reach a collector (an in-test OTLP/HTTP receiver on port 0) with the
//! service name, and the flush at shutdown sends what is still buffered.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a panic is the test failure report

use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::post;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use prost::Message as _;
use tokio::sync::mpsc;
use tracing_subscriber::layer::SubscriberExt as _;

async fn receive(
    State(tx): State<mpsc::UnboundedSender<ExportTraceServiceRequest>>,
    headers: HeaderMap,
    body: Bytes,
) -> impl IntoResponse {
    assert_eq!(
        headers.get(header::CONTENT_TYPE).unwrap(),
        "application/x-protobuf"
    );
    let request = ExportTraceServiceRequest::decode(body).unwrap();
    tx.send(request).unwrap();
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/x-protobuf")],
        ExportTraceServiceResponse::default().encode_to_vec(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_reach_the_collector_with_the_service_name() {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = Router::new()
        .route("/v1/traces", post(receive))
        .with_state(tx);
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let provider = culprit_telemetry::tracer_provider(
        "culprit-test-hunter",
        Some(&format!("http://{addr}")),
        Duration::from_secs(10),
    )
    .unwrap();
    let subscriber = tracing_subscriber::registry().with(culprit_telemetry::otel_layer(&provider));
    let trace_id = tracing::subscriber::with_default(subscriber, || {
        let outer = tracing::info_span!(target: "culprit_hunter", "hunt.batch", tenant = "lab");
        let id = culprit_telemetry::propagation::trace_id(&outer).expect("a trace id");
        outer.in_scope(|| {
            tracing::info_span!(target: "culprit_hunter", "hunt.call").in_scope(|| {});
        });
        // Not ours and below WARN: not exported.
        tracing::info_span!(target: "hyper::client", "poll").in_scope(|| {});
        id
    });
    // The batch processor holds the spans until the flush at shutdown (blocking HTTP).
    tokio::task::spawn_blocking(move || provider.shutdown().unwrap())
        .await
        .unwrap();

    let mut spans = Vec::new();
    let mut service = None;
    // The bound only turns a hang into a failure; the flush above already sent everything.
    while spans.len() < 2 {
        let request = tokio::time::timeout(Duration::from_secs(30), rx.recv())
            .await
            .expect("an export")
            .unwrap();
        for rs in request.resource_spans {
            let resource = rs.resource.unwrap();
            for attr in resource.attributes {
                if attr.key == "service.name" {
                    service = attr.value.and_then(|v| v.value);
                }
            }
            for ss in rs.scope_spans {
                spans.extend(ss.spans);
            }
        }
    }
    assert_eq!(
        service,
        Some(Value::StringValue("culprit-test-hunter".into()))
    );
    let mut names: Vec<&str> = spans.iter().map(|s| s.name.as_str()).collect();
    names.sort_unstable();
    assert_eq!(names, ["hunt.batch", "hunt.call"]);
    for s in &spans {
        let hex: String = s.trace_id.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, trace_id, "{}", s.name);
    }
    let batch = spans.iter().find(|s| s.name == "hunt.batch").unwrap();
    let call = spans.iter().find(|s| s.name == "hunt.call").unwrap();
    assert_eq!(call.parent_span_id, batch.span_id);
    assert!(rx.try_recv().is_err(), "nothing else was exported");
}
