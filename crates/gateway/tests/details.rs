//! Richer error details (`google.rpc.Status` in `grpc-status-details-bin`): every refusal
//! carries an `ErrorInfo` in domain `culprit`, invalid arguments a `BadRequest` naming the
//! field, state and role refusals a `PreconditionFailure`, rate limiting a `RetryInfo`. The
//! tests decode them as a client would.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{ACME, DEVICE, Options, correlation, spawn_app};
use culprit_gateway::{ERROR_DOMAIN, reason};
use culprit_proto::v1 as pb;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

fn by_key(key: &str) -> pb::GetCorrelationRequest {
    pb::GetCorrelationRequest {
        selector: Some(pb::get_correlation_request::Selector::DetectionKey(
            key.to_owned(),
        )),
    }
}

/// The details, after checking the ErrorInfo's reason and domain.
fn details(s: &Status, code: Code, want_reason: &str) -> ErrorDetails {
    assert_eq!(s.code(), code, "{s:?}");
    let d = s.get_error_details();
    let info = d
        .error_info()
        .unwrap_or_else(|| panic!("no ErrorInfo in {s:?}"));
    assert_eq!(info.domain, ERROR_DOMAIN);
    assert_eq!(info.reason, want_reason, "{s:?}");
    d
}

fn meta(d: &ErrorDetails, k: &str) -> String {
    d.error_info()
        .and_then(|i| i.metadata.get(k).cloned())
        .unwrap_or_else(|| panic!("no ErrorInfo metadata {k}"))
}

#[tokio::test]
async fn auth_argument_and_lookup_refusals_carry_details() {
    let app = spawn_app(Options::default()).await;
    let mut c = app.corr();

    let e = c
        .get_correlation(app.req(None, by_key("x")))
        .await
        .unwrap_err();
    details(&e, Code::Unauthenticated, reason::API_KEY_MISSING);
    let mut r = tonic::Request::new(by_key("x"));
    r.metadata_mut()
        .insert("authorization", "Bearer culprit_nope".parse().unwrap());
    let e = c.get_correlation(r).await.unwrap_err();
    details(&e, Code::Unauthenticated, reason::API_KEY_UNKNOWN);

    // A malformed key: BadRequest names the field.
    let e = c
        .get_correlation(app.req(Some("read"), by_key("not-a-key")))
        .await
        .unwrap_err();
    let d = details(&e, Code::InvalidArgument, reason::INVALID_ARGUMENT);
    let v = &d.bad_request().expect("BadRequest").field_violations;
    assert_eq!(v.len(), 1);
    assert_eq!(v[0].field, "detection_key");
    assert!(v[0].description.contains("is not a detection key"));
    assert_eq!(meta(&d, "field"), "detection_key");

    // A nested field of a listing: its full path.
    let e = c
        .list_correlations(app.req(
            Some("read"),
            pb::ListCorrelationsRequest {
                statuses: vec![1, 99],
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    let d = details(&e, Code::InvalidArgument, reason::INVALID_ARGUMENT);
    assert_eq!(
        d.bad_request().unwrap().field_violations[0].field,
        "statuses[1]"
    );

    // Scope and tenant refusals name what is missing.
    let e = c
        .submit_detection(app.req(Some("read"), pb::SubmitDetectionRequest::default()))
        .await
        .unwrap_err();
    let d = details(&e, Code::PermissionDenied, reason::SCOPE_MISSING);
    assert_eq!(meta(&d, "scope"), "submit");
    assert_eq!(meta(&d, "key_id"), "read");
    let e = c
        .get_correlation(app.req(Some("read"), by_key("vectra:globex:1:0")))
        .await
        .unwrap_err();
    let d = details(&e, Code::PermissionDenied, reason::TENANT_NOT_ALLOWED);
    assert_eq!(meta(&d, "tenant"), "globex");

    // No answer yet: NOT_FOUND naming the key; an answer that exists is served whole.
    let e = c
        .get_correlation(app.req(Some("read"), by_key("vectra:acme:404:0")))
        .await
        .unwrap_err();
    let d = details(&e, Code::NotFound, reason::CORRELATION_NOT_FOUND);
    assert_eq!(meta(&d, "detection_key"), "vectra:acme:404:0");
    let stored = correlation(ACME, "7");
    app.store(&stored).await;
    let got = c
        .get_correlation(app.req(Some("read"), by_key(&stored.detection_key)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.correlation, Some(stored));
    app.shutdown().await;
}

#[tokio::test]
async fn a_rate_limited_call_says_when_to_retry() {
    let app = spawn_app(Options {
        rate_limit_per_key: 1,
        ..Options::default()
    })
    .await;
    let mut c = app.corr();
    let list = || app.req(Some("read"), pb::ListCorrelationsRequest::default());
    c.list_correlations(list()).await.unwrap();
    let e = c.list_correlations(list()).await.unwrap_err();
    let d = details(&e, Code::ResourceExhausted, reason::RATE_LIMITED);
    let delay = d
        .retry_info()
        .and_then(|r| r.retry_delay)
        .expect("RetryInfo with a delay");
    assert!(
        delay > std::time::Duration::ZERO && delay <= std::time::Duration::from_secs(1),
        "{delay:?}"
    );
    assert_eq!(meta(&d, "key_id"), "read");
    app.shutdown().await;
}

fn isolate(kind: pb::IsolationType) -> pb::IsolateDeviceRequest {
    pb::IsolateDeviceRequest {
        target: Some(pb::DeviceTarget {
            target: Some(pb::device_target::Target::DeviceId(DEVICE.into())),
            tenant: ACME.into(),
        }),
        isolation_type: kind as i32,
        comment: "details test".into(),
    }
}

#[tokio::test]
async fn response_refusals_name_the_action_the_state_and_the_role() {
    let app = spawn_app(Options {
        twin: true,
        ..Options::default()
    })
    .await;
    let mut r = app.resp();
    let e = r
        .isolate_device(app.req(Some("respond"), isolate(pb::IsolationType::Unspecified)))
        .await
        .unwrap_err();
    let d = details(&e, Code::InvalidArgument, reason::INVALID_ARGUMENT);
    assert_eq!(
        d.bad_request().unwrap().field_violations[0].field,
        "isolation_type"
    );

    let a = r
        .isolate_device(app.req(Some("respond"), isolate(pb::IsolationType::Full)))
        .await
        .unwrap()
        .into_inner()
        .action
        .unwrap();
    let e = r
        .isolate_device(app.req(Some("respond"), isolate(pb::IsolationType::Full)))
        .await
        .unwrap_err();
    let d = details(&e, Code::AlreadyExists, reason::ACTION_PENDING);
    assert_eq!(meta(&d, "action_id"), a.id);
    assert_eq!(meta(&d, "device_id"), DEVICE);

    app.twin_clock
        .advance(culprit_model::Duration::from_seconds(60));
    let e = r
        .isolate_device(app.req(Some("respond"), isolate(pb::IsolationType::Full)))
        .await
        .unwrap_err();
    let d = details(&e, Code::FailedPrecondition, reason::ALREADY_ISOLATED);
    let v = &d
        .precondition_failure()
        .expect("PreconditionFailure")
        .violations;
    assert_eq!(
        (v[0].r#type.as_str(), v[0].subject.as_str()),
        ("DEVICE_STATE", DEVICE)
    );
    app.shutdown().await;

    let app = spawn_app(Options {
        twin: true,
        twin_roles: Some(vec![
            "Machine.Read.All".to_owned(),
            "ThreatHunting.Read.All".to_owned(),
        ]),
        ..Options::default()
    })
    .await;
    let e = app
        .resp()
        .isolate_device(app.req(Some("respond"), isolate(pb::IsolationType::Full)))
        .await
        .unwrap_err();
    let d = details(&e, Code::FailedPrecondition, reason::MDE_ROLE_MISSING);
    assert_eq!(meta(&d, "missing_role"), "Machine.Isolate");
    let v = &d.precondition_failure().unwrap().violations;
    assert_eq!(
        (v[0].r#type.as_str(), v[0].subject.as_str()),
        ("MDE_ROLE", "Machine.Isolate")
    );
    app.shutdown().await;
}
