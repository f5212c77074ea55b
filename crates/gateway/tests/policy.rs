//! The automatic response policy against the twin's recorded machine actions: it isolates when
//! every threshold is met, and never in any of the "never" cases.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use common::{ACME, DEVICE, GLOBEX, Options, correlation, spawn_app};
use culprit_cache::ManualClock;
use culprit_gateway::Decision;
use culprit_gateway::stores::Outcome;
use culprit_model::{Duration, Timestamp};
use culprit_proto::v1 as pb;
use culprit_settings::{PolicyTenantSettings, ResponsePolicySettings};

fn policy(mode: &str) -> ResponsePolicySettings {
    ResponsePolicySettings {
        mode: mode.into(),
        tenants: BTreeMap::from([(ACME.to_owned(), PolicyTenantSettings::default())]),
        ..ResponsePolicySettings::default()
    }
}

async fn app_with(p: ResponsePolicySettings) -> common::App {
    spawn_app(Options {
        twin: true,
        policy: p,
        ..Options::default()
    })
    .await
}

#[tokio::test]
async fn isolates_once_when_every_threshold_is_met() {
    let app = app_with(policy("enforce")).await;
    let c = correlation(ACME, "2569");
    // Two replicas deciding at once on the same answer: exactly one acts.
    let replica = app.policy.clone();
    let (a, b) = tokio::join!(app.policy.decide(&c), replica.decide(&c));
    let isolated: Vec<_> = [&a, &b]
        .into_iter()
        .filter(|d| matches!(d, Decision::Isolated(_)))
        .collect();
    assert_eq!(isolated.len(), 1, "{a:?} {b:?}");
    // A redelivery later changes nothing.
    assert!(matches!(app.policy.decide(&c).await, Decision::Skipped(_)));
    let twin = app.twin_actions().await;
    assert_eq!(twin.len(), 1);
    assert_eq!(twin[0]["type"], "Isolate");
    assert_eq!(twin[0]["machineId"], DEVICE);
    let comment = twin[0]["requestorComment"].as_str().unwrap();
    assert!(
        comment.contains("winx64_payload.exe") && comment.contains(&c.detection_key),
        "{comment}"
    );
    let audit = app.audit().await;
    assert_eq!(audit.len(), 1);
    assert_eq!(
        (audit[0].actor.as_str(), audit[0].outcome),
        ("policy", Outcome::Allowed)
    );
    app.shutdown().await;
}

#[tokio::test]
async fn never_acts_outside_its_rules() {
    let mut p = policy("enforce");
    p.tenants.insert(
        "initech".into(),
        PolicyTenantSettings {
            min_confidence: 0.99,
            ..PolicyTenantSettings::default()
        },
    );
    let app = app_with(p).await;
    let base = correlation(ACME, "1");
    let mut cases: Vec<(&str, pb::Correlation)> = Vec::new();
    let mut c = base.clone();
    c.status = pb::Status::InsufficientTelemetry as i32;
    cases.push(("status", c));
    let mut c = base.clone();
    c.status = pb::Status::DeviceAmbiguous as i32;
    c.devices = vec![
        pb::DeviceRef {
            device_id: DEVICE.into(),
            ..Default::default()
        },
        pb::DeviceRef {
            device_id: "b".into(),
            ..Default::default()
        },
    ];
    cases.push(("ambiguous status", c));
    let mut c = base.clone();
    c.devices = vec![
        pb::DeviceRef {
            device_id: DEVICE.into(),
            ..Default::default()
        },
        pb::DeviceRef {
            device_id: "b".into(),
            ..Default::default()
        },
    ];
    cases.push(("several devices", c));
    let mut c = base.clone();
    c.detection.as_mut().unwrap().threat = Some(79);
    cases.push(("threat", c));
    let mut c = base.clone();
    c.detection.as_mut().unwrap().certainty = None;
    cases.push(("certainty", c));
    let mut c = base.clone();
    c.probable.as_mut().unwrap().confidence = 0.89;
    cases.push(("confidence", c));
    for (i, (name, mut c)) in cases.into_iter().enumerate() {
        c.detection_key = format!("vectra:acme:never{i}:0");
        let d = app.policy.decide(&c).await;
        assert!(matches!(d, Decision::Denied(_)), "{name}: {d:?}");
    }
    // Not configured for the tenant (and a tenant with stricter thresholds).
    assert!(matches!(
        app.policy.decide(&correlation(GLOBEX, "g")).await,
        Decision::Skipped(_)
    ));
    let mut strict = correlation("initech", "i");
    strict.tenant = "initech".into();
    assert!(matches!(
        app.policy.decide(&strict).await,
        Decision::Denied(_)
    ));
    assert!(
        app.twin_actions().await.is_empty(),
        "the twin saw no machine action"
    );
    let audit = app.audit().await;
    assert_eq!(audit.len(), 7, "every refusal is audited, skips are not");
    assert!(
        audit
            .iter()
            .all(|r| r.outcome == Outcome::Denied && r.actor == "policy")
    );
    app.shutdown().await;
}

#[tokio::test]
async fn exclusions_by_name_pattern_and_by_tag() {
    let mut p = policy("enforce");
    p.exclude_name_patterns = vec!["MKT*".into()];
    let app = app_with(p).await;
    let d = app.policy.decide(&correlation(ACME, "1")).await;
    let Decision::Denied(why) = d else {
        panic!("{d:?}")
    };
    assert!(why.contains("MKT*".to_lowercase().as_str()), "{why}");
    app.shutdown().await;

    // The same device, tagged in MDE.
    let dir = tempfile::tempdir().unwrap();
    let mde = dir.path().join("mde");
    std::fs::create_dir_all(&mde).unwrap();
    for e in std::fs::read_dir(common::scenario_dir().join("mde")).unwrap() {
        let e = e.unwrap();
        let mut text = std::fs::read_to_string(e.path()).unwrap();
        if e.file_name() == "DeviceInfo.jsonl" {
            let tagged = "\"DeviceManualTags\":\"[\\\"DomainController\\\"]\"";
            assert!(text.contains("\"DeviceManualTags\":\"\""));
            text = text.replace("\"DeviceManualTags\":\"\"", tagged);
        }
        std::fs::write(mde.join(e.file_name()), text).unwrap();
    }
    let mut p = policy("enforce");
    p.exclude_tags = vec!["domaincontroller".into()];
    let app = spawn_app(Options {
        twin: true,
        policy: p,
        twin_data: Some(dir.path().to_owned()),
        ..Options::default()
    })
    .await;
    let d = app.policy.decide(&correlation(ACME, "1")).await;
    let Decision::Denied(why) = d else {
        panic!("{d:?}")
    };
    assert!(why.contains("DomainController"), "{why}");
    assert!(app.twin_actions().await.is_empty());
    app.shutdown().await;
}

#[tokio::test]
async fn hourly_cap_per_tenant() {
    let mut p = policy("enforce");
    p.max_isolations_per_hour = 1;
    let app = app_with(p).await;
    assert!(matches!(
        app.policy.decide(&correlation(ACME, "1")).await,
        Decision::Isolated(_)
    ));
    let d = app.policy.decide(&correlation(ACME, "2")).await;
    let Decision::Denied(why) = d else {
        panic!("{d:?}")
    };
    assert!(why.contains("hourly cap"), "{why}");
    assert_eq!(app.twin_actions().await.len(), 1);
    app.shutdown().await;
}

#[tokio::test]
async fn dry_run_records_what_it_would_do_and_acts_never() {
    let app = app_with(policy("dry_run")).await;
    assert_eq!(
        app.policy.decide(&correlation(ACME, "1")).await,
        Decision::DryRun
    );
    assert!(app.twin_actions().await.is_empty());
    let audit = app.audit().await;
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0].outcome, Outcome::DryRun);
    assert!(audit[0].detail.contains(DEVICE));
    app.shutdown().await;
}

#[tokio::test]
async fn mode_off_does_nothing() {
    use culprit_bus::{BusInspector, Message, Publisher, QueueName, Topic};
    use prost::Message as _;
    let app = app_with(policy("off")).await;
    assert!(matches!(
        app.policy.decide(&correlation(ACME, "1")).await,
        Decision::Skipped(_)
    ));
    // The queue is still drained, so it never fills up and blocks the correlator.
    let c = correlation(ACME, "2");
    let event = pb::CorrelationEvent {
        kind: Some(pb::correlation_event::Kind::NewResult(pb::NewResult {
            correlation: Some(c.clone()),
        })),
        ..Default::default()
    };
    let msg = Message::new(c.detection_key.clone(), event.encode_to_vec());
    app.bus.publish(Topic::Correlations, msg).await.unwrap();
    until(|| async { app.bus.queue_depth(QueueName::Policy).await.unwrap() == 0 }).await;
    assert!(app.twin_actions().await.is_empty());
    assert!(app.audit().await.is_empty());
    app.shutdown().await;
}

#[tokio::test]
async fn automatic_release_after_the_set_time() {
    let clock = Arc::new(ManualClock::new(
        Timestamp::parse("2026-01-01T00:00:00Z").unwrap(),
    ));
    let mut p = policy("enforce");
    p.auto_release_after_secs = 600;
    let app = spawn_app(Options {
        twin: true,
        policy: p,
        clock: Some(clock.clone()),
        ..Options::default()
    })
    .await;
    assert!(matches!(
        app.policy.decide(&correlation(ACME, "1")).await,
        Decision::Isolated(_)
    ));
    assert_eq!(app.policy.release_due().await, 0, "not due yet");
    app.twin_clock.advance(Duration::from_seconds(60)); // the isolation completes
    clock.advance(Duration::from_seconds(600));
    assert_eq!(app.policy.release_due().await, 1);
    assert_eq!(app.policy.release_due().await, 0, "claimed once");
    let twin = app.twin_actions().await;
    let kinds: Vec<_> = twin
        .iter()
        .map(|a| a["type"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(kinds, ["Isolate", "Unisolate"]);
    let audit = app.audit().await;
    assert_eq!(
        audit.iter().map(|r| r.action.as_str()).collect::<Vec<_>>(),
        ["isolate", "release"]
    );
    assert!(audit.iter().all(|r| r.outcome == Outcome::Allowed));
    app.shutdown().await;
}

/// Polls (yielding, never sleeping) until `done` holds, for work done by the server's tasks.
async fn until<F, Fut>(mut done: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    tokio::time::timeout(std::time::Duration::from_secs(10), async {
        while !done().await {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("condition not reached within 10 s");
}

#[tokio::test]
async fn the_server_consumes_the_policy_queue_once_per_detection() {
    use culprit_bus::{BusInspector, Message, Publisher, QueueName, Topic};
    use prost::Message as _;
    let app = app_with(policy("enforce")).await;
    let c = correlation(ACME, "2569");
    let event = pb::CorrelationEvent {
        kind: Some(pb::correlation_event::Kind::NewResult(pb::NewResult {
            correlation: Some(c.clone()),
        })),
        ..Default::default()
    }
    .encode_to_vec();
    for _ in 0..2 {
        // A redelivery from the correlator: same message twice.
        app.bus
            .publish(
                Topic::Correlations,
                Message::new(c.detection_key.clone(), event.clone()),
            )
            .await
            .unwrap();
    }
    app.bus
        .publish(
            Topic::Correlations,
            Message::new("vectra:acme:junk:0", b"\xff\xff".to_vec()),
        )
        .await
        .unwrap();
    until(|| async {
        !app.bus
            .dead_letters(QueueName::Policy, 10)
            .await
            .unwrap()
            .is_empty()
    })
    .await;
    until(|| async { app.bus.queue_depth(QueueName::Policy).await.unwrap() == 0 }).await;
    until(|| async { !app.audit().await.is_empty() }).await;
    let twin = app.twin_actions().await;
    assert_eq!(twin.len(), 1, "isolated exactly once");
    let audit = app.audit().await;
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0].outcome, Outcome::Allowed);
    let dead = app.bus.dead_letters(QueueName::Policy, 10).await.unwrap();
    assert_eq!(dead.len(), 1);
    app.shutdown().await;
}
