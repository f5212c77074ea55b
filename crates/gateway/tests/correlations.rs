//! CorrelationService over real gRPC: get, list with filters and page tokens, watch with
//! resume, submit.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{ACME, GLOBEX, Options, correlation, spawn_app, ts};
use culprit_bus::{Message, Publisher, QueueName, Subscriber, Topic};
use culprit_proto::v1 as pb;
use prost::Message as _;
use tokio_stream::StreamExt;
use tonic::Code;

fn by_key(key: &str) -> pb::GetCorrelationRequest {
    pb::GetCorrelationRequest {
        selector: Some(pb::get_correlation_request::Selector::DetectionKey(
            key.into(),
        )),
    }
}

#[tokio::test]
async fn get_by_key_and_by_source_ref() {
    let app = spawn_app(Options::default()).await;
    let c = correlation(ACME, "2569");
    app.store(&c).await;
    let mut cl = app.corr();
    let got = cl
        .get_correlation(app.req(Some("read"), by_key(&c.detection_key)))
        .await
        .unwrap()
        .into_inner()
        .correlation
        .unwrap();
    assert_eq!(got, c);
    let by_ref = pb::GetCorrelationRequest {
        selector: Some(pb::get_correlation_request::Selector::SourceRef(
            pb::SourceRef {
                source: pb::SourceKind::Vectra as i32,
                source_id: "2569".into(),
                tenant: String::new(),
            },
        )),
    };
    let got = cl
        .get_correlation(app.req(Some("read"), by_ref))
        .await
        .unwrap()
        .into_inner()
        .correlation
        .unwrap();
    assert_eq!(got.detection_key, c.detection_key);
    let missing = cl
        .get_correlation(app.req(Some("read"), by_key("vectra:acme:404:0")))
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
    let bad = cl
        .get_correlation(app.req(Some("read"), by_key("nonsense")))
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    assert!(bad.message().contains("detection_key"), "{}", bad.message());
    app.shutdown().await;
}

#[tokio::test]
async fn list_filters_and_pages() {
    let app = spawn_app(Options::default()).await;
    for i in 0..7 {
        let mut c = correlation(ACME, &format!("{}", 100 + i));
        c.computed_at = Some(ts(&format!("2023-08-16T05:0{i}:00Z")));
        if i % 2 == 1 {
            c.status = pb::Status::InsufficientTelemetry as i32;
            c.probable = None;
        }
        app.store(&c).await;
    }
    app.store(&correlation(GLOBEX, "900")).await;
    let mut cl = app.corr();
    let mut seen = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let req = pb::ListCorrelationsRequest {
            page_size: 3,
            page_token: token.clone(),
            ..Default::default()
        };
        let page = cl
            .list_correlations(app.req(Some("both"), req))
            .await
            .unwrap()
            .into_inner();
        pages += 1;
        seen.extend(page.correlations.into_iter().map(|c| c.detection_id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(seen.len(), 8, "{seen:?}");
    assert!(pages >= 3);
    // Newest first within acme.
    let acme: Vec<_> = seen
        .iter()
        .filter(|s| s.starts_with('1'))
        .cloned()
        .collect();
    assert_eq!(acme, ["106", "105", "104", "103", "102", "101", "100"]);

    let filtered = pb::ListCorrelationsRequest {
        statuses: vec![pb::Status::Attributed as i32],
        min_confidence: Some(0.9),
        computed_after: Some(ts("2023-08-16T05:02:00Z")),
        computed_before: Some(ts("2023-08-16T05:06:00Z")),
        ..Default::default()
    };
    let ids: Vec<_> = cl
        .list_correlations(app.req(Some("read"), filtered.clone()))
        .await
        .unwrap()
        .into_inner()
        .correlations
        .into_iter()
        .map(|c| c.detection_id)
        .collect();
    assert_eq!(ids, ["104", "102"]);

    // A token is bound to its filters.
    let first = cl
        .list_correlations(app.req(
            Some("read"),
            pb::ListCorrelationsRequest {
                page_size: 1,
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let reuse = pb::ListCorrelationsRequest {
        page_token: first.next_page_token,
        ..filtered
    };
    let e = cl
        .list_correlations(app.req(Some("read"), reuse))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("page_token"));
    app.shutdown().await;
}

fn event(c: &pb::Correlation) -> Vec<u8> {
    pb::CorrelationEvent {
        kind: Some(pb::correlation_event::Kind::NewResult(pb::NewResult {
            correlation: Some(c.clone()),
        })),
        ..Default::default()
    }
    .encode_to_vec()
}

async fn publish(app: &common::App, c: &pb::Correlation) {
    app.bus
        .publish(
            Topic::Correlations,
            Message::new(c.detection_key.clone(), event(c)),
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn watch_streams_filters_and_resumes_after_a_disconnect() {
    watch_and_resume(Options::default()).await;
}

#[tokio::test]
async fn watch_resumes_on_the_redis_log() {
    watch_and_resume(Options {
        redis: true,
        ..Options::default()
    })
    .await;
}

/// Positions compare as `a-b` stream ids or as plain numbers.
fn pos_key(p: &str) -> (u64, u64) {
    match p.split_once('-') {
        Some((a, b)) => (a.parse().unwrap(), b.parse().unwrap()),
        None => (p.parse().unwrap(), 0),
    }
}

async fn watch_and_resume(options: Options) {
    let app = spawn_app(options).await;
    let mut cl = app.corr();
    let watch = |after: &str| pb::WatchCorrelationsRequest {
        after_position: after.to_owned(),
        from_oldest: after.is_empty(),
        ..Default::default()
    };
    let mut stream = cl
        .watch_correlations(app.req(Some("read"), watch("")))
        .await
        .unwrap()
        .into_inner();
    publish(&app, &correlation(GLOBEX, "g1")).await; // another tenant: never seen
    publish(&app, &correlation(ACME, "1")).await;
    let first = stream.next().await.unwrap().unwrap();
    let pb::correlation_event::Kind::NewResult(n) = first.kind.clone().unwrap() else {
        panic!("expected a new result");
    };
    assert_eq!(n.correlation.unwrap().detection_id, "1");
    assert!(!first.position.is_empty());
    drop(stream); // disconnect

    // Published while nobody watches, plus a redelivery of "1" (same id, same bytes).
    publish(&app, &correlation(ACME, "2")).await;
    publish(&app, &correlation(ACME, "1")).await;
    publish(&app, &correlation(ACME, "3")).await;
    let mut resumed = cl
        .watch_correlations(app.req(Some("read"), watch(&first.position)))
        .await
        .unwrap()
        .into_inner();
    let mut ids = Vec::new();
    let mut last = first.position.clone();
    for _ in 0..2 {
        let e = resumed.next().await.unwrap().unwrap();
        assert!(pos_key(&e.position) > pos_key(&last));
        last = e.position.clone();
        let pb::correlation_event::Kind::NewResult(n) = e.kind.unwrap() else {
            panic!()
        };
        ids.push(n.correlation.unwrap().detection_id);
    }
    assert_eq!(ids, ["2", "3"], "nothing missed, nothing twice");

    let bad = cl
        .watch_correlations(app.req(Some("read"), watch("not-a-position")))
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    app.shutdown().await;
}

#[tokio::test]
async fn watch_carries_attribution_changes_filtered_by_the_current_answer() {
    let app = spawn_app(Options::default()).await;
    let mut cl = app.corr();
    let req = pb::WatchCorrelationsRequest {
        min_confidence: Some(0.9),
        ..Default::default()
    };
    let mut stream = cl
        .watch_correlations(app.req(Some("read"), req))
        .await
        .unwrap()
        .into_inner();
    let before = correlation(ACME, "7");
    let mut weak = before.clone();
    weak.probable.as_mut().unwrap().confidence = 0.5;
    let change = |previous: &pb::Correlation, current: &pb::Correlation| pb::CorrelationEvent {
        kind: Some(pb::correlation_event::Kind::AttributionChanged(
            pb::AttributionChanged {
                previous: Some(previous.clone()),
                current: Some(current.clone()),
                reason: "probable process changed".into(),
            },
        )),
        ..Default::default()
    };
    // Dropped by the filter (the current answer is weak), then passed.
    for (i, e) in [change(&before, &weak), change(&weak, &before)]
        .iter()
        .enumerate()
    {
        let msg = Message::new(format!("{}#{i}", before.detection_key), e.encode_to_vec());
        app.bus.publish(Topic::Correlations, msg).await.unwrap();
    }
    let got = stream.next().await.unwrap().unwrap();
    let Some(pb::correlation_event::Kind::AttributionChanged(c)) = got.kind else {
        panic!("expected an attribution change")
    };
    assert_eq!(c.current.unwrap().probable.unwrap().confidence, 0.97);
    assert_eq!(c.previous.unwrap().probable.unwrap().confidence, 0.5);
    app.shutdown().await;
}

#[tokio::test]
async fn watch_ends_with_unavailable_on_shutdown() {
    let app = spawn_app(Options::default()).await;
    let mut cl = app.corr();
    let mut stream = cl
        .watch_correlations(app.req(Some("read"), pb::WatchCorrelationsRequest::default()))
        .await
        .unwrap()
        .into_inner();
    let ending = tokio::spawn(async move { stream.next().await });
    app.shutdown().await;
    let end = ending.await.unwrap();
    match end {
        Some(Err(s)) => assert_eq!(s.code(), Code::Unavailable),
        None => {}
        Some(Ok(e)) => panic!("unexpected event {e:?}"),
    }
}

#[tokio::test]
async fn submit_normalises_publishes_once_and_reports_duplicates() {
    let app = spawn_app(Options::default()).await;
    let mut hunt = app.bus.subscribe(QueueName::Hunt, 10).await.unwrap();
    let body = std::fs::read(common::scenario_dir().join("ndr/vectra_detections.json")).unwrap();
    let raw = |tenant: &str| pb::SubmitDetectionRequest {
        payload: Some(pb::submit_detection_request::Payload::Raw(
            pb::RawDetection {
                format: pb::RawFormat::VectraJson as i32,
                tenant: tenant.into(),
                body: body.clone(),
            },
        )),
    };
    let mut cl = app.corr();
    let out = cl
        .submit_detection(app.req(Some("submit"), raw(ACME)))
        .await
        .unwrap()
        .into_inner();
    assert!(!out.detections.is_empty());
    assert!(
        out.detections
            .iter()
            .all(|d| !d.duplicate && d.detection_key.starts_with("vectra:acme:"))
    );
    for d in &out.detections {
        let delivery = hunt.next().await.unwrap();
        assert_eq!(delivery.message.message_id, d.detection_key);
        let det = pb::Detection::decode(delivery.message.payload.as_slice()).unwrap();
        assert_eq!(det.tenant, ACME);
        delivery.ack().await.unwrap();
    }
    let again = cl
        .submit_detection(app.req(Some("submit"), raw(ACME)))
        .await
        .unwrap()
        .into_inner();
    assert!(again.detections.iter().all(|d| d.duplicate));
    use culprit_bus::BusInspector;
    assert_eq!(app.bus.queue_depth(QueueName::Hunt).await.unwrap(), 0);

    let bad = pb::SubmitDetectionRequest {
        payload: Some(pb::submit_detection_request::Payload::Raw(
            pb::RawDetection {
                format: pb::RawFormat::VectraJson as i32,
                tenant: ACME.into(),
                body: b"{not json".to_vec(),
            },
        )),
    };
    let e = cl
        .submit_detection(app.req(Some("submit"), bad))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("raw.body"), "{}", e.message());
    app.shutdown().await;
}
