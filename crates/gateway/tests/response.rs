//! ResponseService against the MDE twin: every code the issue fixes, and an audit record for
//! every attempt.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{ACME, DEVICE, Options, correlation, spawn_app};
use culprit_gateway::ACTION_ID_METADATA;
use culprit_gateway::stores::Outcome;
use culprit_model::Duration;
use culprit_proto::v1 as pb;
use tonic::Code;

fn by_device(id: &str) -> Option<pb::DeviceTarget> {
    Some(pb::DeviceTarget {
        target: Some(pb::device_target::Target::DeviceId(id.into())),
        tenant: ACME.into(),
    })
}

fn by_key(key: &str) -> Option<pb::DeviceTarget> {
    Some(pb::DeviceTarget {
        target: Some(pb::device_target::Target::DetectionKey(key.into())),
        tenant: String::new(),
    })
}

fn isolate(
    target: Option<pb::DeviceTarget>,
    t: pb::IsolationType,
    comment: &str,
) -> pb::IsolateDeviceRequest {
    pb::IsolateDeviceRequest {
        target,
        isolation_type: t as i32,
        comment: comment.into(),
    }
}

fn release(target: Option<pb::DeviceTarget>) -> pb::ReleaseDeviceRequest {
    pb::ReleaseDeviceRequest {
        target,
        comment: "incident closed".into(),
    }
}

#[tokio::test]
async fn isolate_release_lifecycle_with_every_no_op_refused() {
    let app = spawn_app(Options {
        twin: true,
        ..Options::default()
    })
    .await;
    let mut cl = app.resp();
    let full = isolate(
        by_device(DEVICE),
        pb::IsolationType::Full,
        "C2 from winx64_payload.exe",
    );

    let a = cl
        .isolate_device(app.req(Some("respond"), full.clone()))
        .await
        .unwrap()
        .into_inner()
        .action
        .unwrap();
    assert_eq!(a.r#type, pb::ActionType::Isolate as i32);
    assert_eq!(a.isolation_type, pb::IsolationType::Full as i32);
    assert_eq!(a.status, pb::ActionStatus::Pending as i32);
    assert_eq!(
        (
            a.device_id.as_str(),
            a.requestor.as_str(),
            a.tenant.as_str()
        ),
        (DEVICE, "respond", ACME)
    );
    let twin = app.twin_actions().await;
    assert_eq!(twin.len(), 1);
    assert_eq!(twin[0]["requestorComment"], "C2 from winx64_payload.exe");

    // Pending: ALREADY_EXISTS naming the pending action.
    let e = cl
        .isolate_device(app.req(Some("respond"), full.clone()))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::AlreadyExists);
    assert_eq!(
        e.metadata()
            .get(ACTION_ID_METADATA)
            .unwrap()
            .to_str()
            .unwrap(),
        a.id
    );
    assert!(e.message().contains(&a.id));

    // Done: isolating again is a no-op, refused.
    app.twin_clock.advance(Duration::from_seconds(60));
    let e = cl
        .isolate_device(app.req(Some("respond"), full.clone()))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert!(e.message().contains("already isolated"), "{}", e.message());

    let got = app
        .resp()
        .get_action(app.req(
            Some("read"),
            pb::GetActionRequest {
                tenant: ACME.into(),
                action_id: a.id.clone(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .action
        .unwrap();
    assert_eq!(got.status, pb::ActionStatus::Succeeded as i32);

    let r = cl
        .release_device(app.req(Some("respond"), release(by_device(DEVICE))))
        .await
        .unwrap()
        .into_inner()
        .action
        .unwrap();
    assert_eq!(r.r#type, pb::ActionType::Release as i32);
    app.twin_clock.advance(Duration::from_seconds(60));
    let e = cl
        .release_device(app.req(Some("respond"), release(by_device(DEVICE))))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert!(e.message().contains("not isolated"), "{}", e.message());
    assert_eq!(app.twin_actions().await.len(), 2, "no-ops never reach MDE");

    let audit = app.audit().await;
    let outcomes: Vec<_> = audit
        .iter()
        .map(|r| (r.action.as_str(), r.outcome, r.code.as_str()))
        .collect();
    assert_eq!(
        outcomes,
        [
            ("isolate", Outcome::Allowed, "OK"),
            ("isolate", Outcome::Denied, "AlreadyExists"),
            ("isolate", Outcome::Denied, "FailedPrecondition"),
            ("release", Outcome::Allowed, "OK"),
            ("release", Outcome::Denied, "FailedPrecondition"),
        ]
    );
    assert!(audit.iter().all(|r| r.actor == "respond"
        && r.tenant == ACME
        && r.device_id.as_deref() == Some(DEVICE)));
    assert_eq!(audit[0].action_id.as_deref(), Some(a.id.as_str()));
    assert_eq!(audit[1].action_id.as_deref(), Some(a.id.as_str()));
    app.shutdown().await;
}

#[tokio::test]
async fn by_detection_key_uses_the_answers_device_and_refuses_ambiguity() {
    let app = spawn_app(Options {
        twin: true,
        ..Options::default()
    })
    .await;
    let c = correlation(ACME, "2569");
    app.store(&c).await;
    let mut amb = correlation(ACME, "2570");
    amb.status = pb::Status::DeviceAmbiguous as i32;
    amb.devices = vec![
        pb::DeviceRef {
            device_id: DEVICE.into(),
            ..Default::default()
        },
        pb::DeviceRef {
            device_id: "other".into(),
            ..Default::default()
        },
    ];
    amb.device = None;
    app.store(&amb).await;
    let mut cl = app.resp();
    let e = cl
        .isolate_device(app.req(
            Some("respond"),
            isolate(by_key(&amb.detection_key), pb::IsolationType::Full, "x"),
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert!(e.message().contains("several devices"), "{}", e.message());
    let e = cl
        .isolate_device(app.req(
            Some("respond"),
            isolate(by_key("vectra:acme:404:0"), pb::IsolationType::Full, "x"),
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    assert!(app.twin_actions().await.is_empty());

    let a = cl
        .isolate_device(app.req(
            Some("respond"),
            isolate(by_key(&c.detection_key), pb::IsolationType::Selective, "C2"),
        ))
        .await
        .unwrap()
        .into_inner()
        .action
        .unwrap();
    assert_eq!(a.device_id, DEVICE);
    assert_eq!(a.detection_key, c.detection_key);
    let twin = app.twin_actions().await;
    assert_eq!(twin.len(), 1);
    assert_eq!(twin[0]["scope"], "Selective");
    let audit = app.audit().await;
    assert_eq!(audit.len(), 3, "one record per attempt");
    assert_eq!(
        audit[2].detection_key.as_deref(),
        Some(c.detection_key.as_str())
    );
    assert_eq!(audit[2].isolation_type.as_deref(), Some("Selective"));
    app.shutdown().await;
}

#[tokio::test]
async fn unknown_device_bad_input_and_unknown_action() {
    let app = spawn_app(Options {
        twin: true,
        ..Options::default()
    })
    .await;
    let mut cl = app.resp();
    let cases = [
        (
            isolate(
                by_device("0000000000000000000000000000000000000000"),
                pb::IsolationType::Full,
                "x",
            ),
            Code::NotFound,
            "not found",
        ),
        (
            isolate(by_device(DEVICE), pb::IsolationType::Full, "  "),
            Code::InvalidArgument,
            "comment",
        ),
        (
            isolate(by_device(DEVICE), pb::IsolationType::Unspecified, "x"),
            Code::InvalidArgument,
            "isolation_type",
        ),
        (
            isolate(None, pb::IsolationType::Full, "x"),
            Code::InvalidArgument,
            "target",
        ),
    ];
    for (req, code, text) in cases {
        let e = cl
            .isolate_device(app.req(Some("respond"), req))
            .await
            .unwrap_err();
        assert_eq!(e.code(), code, "{}", e.message());
        assert!(e.message().contains(text), "{}", e.message());
    }
    let e = cl
        .get_action(app.req(
            Some("read"),
            pb::GetActionRequest {
                tenant: ACME.into(),
                action_id: "7f5a3a0e-0000-0000-0000-000000000000".into(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    assert!(app.twin_actions().await.is_empty());
    assert_eq!(app.audit().await.len(), 4);
    app.shutdown().await;
}

#[tokio::test]
async fn missing_machine_isolate_role_is_failed_precondition_naming_it() {
    let roles = vec![
        "Machine.Read.All".to_owned(),
        "ThreatHunting.Read.All".to_owned(),
    ];
    let app = spawn_app(Options {
        twin: true,
        twin_roles: Some(roles),
        ..Options::default()
    })
    .await;
    let e = app
        .resp()
        .isolate_device(app.req(
            Some("respond"),
            isolate(by_device(DEVICE), pb::IsolationType::Full, "x"),
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert!(e.message().contains("Machine.Isolate"), "{}", e.message());
    assert!(app.twin_actions().await.is_empty());
    let audit = app.audit().await;
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0].outcome, Outcome::Denied);
    app.shutdown().await;
}
