//! The authorisation matrix: every key (scope × tenant, and none) × every method, over gRPC.
//! Requests name tenant `acme`; allowed respond calls target a device that does not exist, so
//! they prove the call got past auth (NOT_FOUND from the twin) without changing anything.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{ACME, App, GLOBEX, Options, correlation, spawn_app};
use culprit_bus::{Message, Publisher, Topic};
use culprit_proto::v1 as pb;
use prost::Message as _;
use tokio_stream::StreamExt;
use tonic::Code;

const METHODS: [&str; 7] = [
    "GetCorrelation",
    "ListCorrelations",
    "WatchCorrelations",
    "SubmitDetection",
    "IsolateDevice",
    "ReleaseDevice",
    "GetAction",
];

const NO_DEVICE: &str = "0000000000000000000000000000000000000000";

fn target() -> Option<pb::DeviceTarget> {
    Some(pb::DeviceTarget {
        target: Some(pb::device_target::Target::DeviceId(NO_DEVICE.into())),
        tenant: ACME.into(),
    })
}

fn detection() -> pb::Detection {
    pb::Detection {
        source: pb::SourceKind::Suricata as i32,
        tenant: ACME.into(),
        source_id: format!("{}", rand::random::<u32>()),
        revision: "0".into(),
        category: "command_and_control".into(),
        detection_type: "ET MALWARE".into(),
        host: Some(pb::HostRef {
            ip: Some("192.168.1.41".into()),
            ..Default::default()
        }),
        window: Some(pb::Window {
            start: Some(common::ts("2023-08-16T04:54:34Z")),
            end: Some(common::ts("2023-08-16T04:59:22Z")),
        }),
        ..Default::default()
    }
}

async fn call(app: &App, method: &str, key: Option<&str>) -> Code {
    let stored = correlation(ACME, "2569").detection_key;
    let (mut c, mut r) = (app.corr(), app.resp());
    let res: Result<(), tonic::Status> = match method {
        "GetCorrelation" => c
            .get_correlation(app.req(
                key,
                pb::GetCorrelationRequest {
                    selector: Some(pb::get_correlation_request::Selector::DetectionKey(stored)),
                },
            ))
            .await
            .map(drop),
        "ListCorrelations" => c
            .list_correlations(app.req(
                key,
                pb::ListCorrelationsRequest {
                    tenants: vec![ACME.into()],
                    ..Default::default()
                },
            ))
            .await
            .map(drop),
        "WatchCorrelations" => c
            .watch_correlations(app.req(
                key,
                pb::WatchCorrelationsRequest {
                    tenants: vec![ACME.into()],
                    ..Default::default()
                },
            ))
            .await
            .map(drop),
        "SubmitDetection" => c
            .submit_detection(app.req(
                key,
                pb::SubmitDetectionRequest {
                    payload: Some(pb::submit_detection_request::Payload::Detection(detection())),
                },
            ))
            .await
            .map(drop),
        "IsolateDevice" => r
            .isolate_device(app.req(
                key,
                pb::IsolateDeviceRequest {
                    target: target(),
                    isolation_type: pb::IsolationType::Full as i32,
                    comment: "matrix".into(),
                },
            ))
            .await
            .map(drop),
        "ReleaseDevice" => r
            .release_device(app.req(
                key,
                pb::ReleaseDeviceRequest {
                    target: target(),
                    comment: "matrix".into(),
                },
            ))
            .await
            .map(drop),
        "GetAction" => r
            .get_action(app.req(
                key,
                pb::GetActionRequest {
                    tenant: ACME.into(),
                    action_id: "7f5a3a0e-0000-0000-0000-000000000000".into(),
                },
            ))
            .await
            .map(drop),
        _ => unreachable!(),
    };
    res.err().map_or(Code::Ok, |s| s.code())
}

fn scope_of(method: &str) -> &'static str {
    match method {
        "SubmitDetection" => "submit",
        "IsolateDevice" | "ReleaseDevice" => "respond",
        _ => "read",
    }
}

/// What an acme key with the right scope gets.
fn allowed(method: &str) -> Code {
    match method {
        "IsolateDevice" | "ReleaseDevice" | "GetAction" => Code::NotFound,
        _ => Code::Ok,
    }
}

#[tokio::test]
async fn every_scope_times_every_method_and_cross_tenant() {
    let app = spawn_app(Options {
        twin: true,
        ..Options::default()
    })
    .await;
    app.store(&correlation(ACME, "2569")).await;
    let mut failures = Vec::new();
    let mut respond_calls = 0;
    for method in METHODS {
        for key in [
            None,
            Some("read"),
            Some("submit"),
            Some("respond"),
            Some("all"),
            Some("globex"),
        ] {
            let want = match key {
                None => Code::Unauthenticated,
                Some("globex") => Code::PermissionDenied,
                Some("all") => allowed(method),
                Some(k) if k == scope_of(method) => allowed(method),
                Some(_) => Code::PermissionDenied,
            };
            let got = call(&app, method, key).await;
            if got != want {
                failures.push(format!("{method} with {key:?}: got {got:?}, want {want:?}"));
            }
            if method == "IsolateDevice" || method == "ReleaseDevice" {
                respond_calls += 1;
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
    assert!(app.twin_actions().await.is_empty());
    // Every response attempt is audited, including the refused ones.
    let audit = app.audit().await;
    assert_eq!(audit.len(), respond_calls);
    assert_eq!(
        audit
            .iter()
            .filter(|r| r.actor == "unauthenticated")
            .count(),
        2
    );
    assert!(
        audit
            .iter()
            .all(|r| r.outcome == culprit_gateway::stores::Outcome::Denied)
    );
    app.shutdown().await;
}

#[tokio::test]
async fn a_key_for_one_tenant_never_sees_another() {
    let app = spawn_app(Options::default()).await;
    app.store(&correlation(ACME, "a1")).await;
    app.store(&correlation(GLOBEX, "g1")).await;
    let mut c = app.corr();
    // Unfiltered listings are narrowed to the key's tenants.
    let list = c
        .list_correlations(app.req(Some("globex"), pb::ListCorrelationsRequest::default()))
        .await
        .unwrap()
        .into_inner()
        .correlations;
    assert_eq!(
        list.iter().map(|c| c.tenant.as_str()).collect::<Vec<_>>(),
        [GLOBEX]
    );
    // Naming the other tenant, existing data or not, is PERMISSION_DENIED.
    for id in ["a1", "does-not-exist"] {
        let e = c
            .get_correlation(app.req(
                Some("globex"),
                pb::GetCorrelationRequest {
                    selector: Some(pb::get_correlation_request::Selector::DetectionKey(
                        correlation(ACME, id).detection_key,
                    )),
                },
            ))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied, "{id}");
    }
    let e = c
        .get_correlation(app.req(
            Some("globex"),
            pb::GetCorrelationRequest {
                selector: Some(pb::get_correlation_request::Selector::SourceRef(
                    pb::SourceRef {
                        source: pb::SourceKind::Vectra as i32,
                        source_id: "a1".into(),
                        tenant: ACME.into(),
                    },
                )),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    // The watch of a globex key skips acme's events.
    let mut stream = c
        .watch_correlations(app.req(Some("globex"), pb::WatchCorrelationsRequest::default()))
        .await
        .unwrap()
        .into_inner();
    for corr in [correlation(ACME, "a2"), correlation(GLOBEX, "g2")] {
        let ev = pb::CorrelationEvent {
            kind: Some(pb::correlation_event::Kind::NewResult(pb::NewResult {
                correlation: Some(corr.clone()),
            })),
            ..Default::default()
        };
        app.bus
            .publish(
                Topic::Correlations,
                Message::new(corr.detection_key.clone(), ev.encode_to_vec()),
            )
            .await
            .unwrap();
    }
    let first = stream.next().await.unwrap().unwrap();
    let Some(pb::correlation_event::Kind::NewResult(n)) = first.kind else {
        panic!()
    };
    assert_eq!(n.correlation.unwrap().detection_id, "g2");
    app.shutdown().await;
}
