#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use common::{Counter, ManualClock, Mock, Reply, with_tokens};
use culprit_mde::{
    ActionStatus, IsolationState, IsolationType, MachineSelector, MdeClient, MdeError,
};
use culprit_model::Timestamp;
use serde_json::{Value, json};

fn machine(id: &str, ip: &str) -> Value {
    json!({"id": id, "computerDnsName": "mymachine1.contoso.com",
           "firstSeen": "2018-08-02T14:55:03.7791856Z", "lastSeen": "2018-08-02T14:55:03.7791856Z",
           "osPlatform": "Windows10", "version": "1709", "osProcessor": "x64", "osBuild": 18209,
           "lastIpAddress": ip, "lastExternalIpAddress": "167.220.196.71",
           "healthStatus": "Active", "onboardingStatus": "onboarded", "rbacGroupId": 140,
           "rbacGroupName": "The-A-Team", "riskScore": "Low", "exposureLevel": "Medium",
           "isAadJoined": true, "aadDeviceId": "80fe8ff8-2624-418e-9591-41f0491218f9",
           "machineTags": ["test tag 1", "test tag 2"], "deviceValue": "Normal",
           "ipAddresses": [{"ipAddress": ip, "macAddress": "00155D000000", "operationalStatus": "Up"}]})
}

fn action(id: &str, ty: &str, status: &str, created: &str) -> Value {
    json!({"id": id, "type": ty, "scope": "Selective", "requestor": "culprit-app",
           "requestorComment": "c", "status": status,
           "machineId": "1e5bc9d7e413ddd7902c2932e418702b84d0cc07",
           "computerDnsName": "desktop-test", "creationDateTimeUtc": created,
           "lastUpdateDateTimeUtc": created, "relatedFileInfo": null})
}

const ID: &str = "1e5bc9d7e413ddd7902c2932e418702b84d0cc07";

#[tokio::test]
async fn machine_by_id_parses_the_facts() {
    let mock = Mock::start(with_tokens(|r| match r.path() {
        "/api/machines/1e5bc9d7e413ddd7902c2932e418702b84d0cc07" => Reply::json(200, machine(ID, "172.17.230.209")),
        _ => Reply::json(404, json!({"error": {"code": "ResourceNotFound", "message": "Machine x was not found", "target": "t"}})),
    }))
    .await;
    let client = mock.client();
    let m = client.machine(ID).await.unwrap();
    assert_eq!(m.id, ID);
    assert_eq!(
        m.computer_dns_name.as_deref(),
        Some("mymachine1.contoso.com")
    );
    assert_eq!(m.os_platform.as_deref(), Some("Windows10"));
    assert_eq!(m.os_build, Some(18209));
    assert_eq!(m.os_architecture.as_deref(), Some("x64"));
    assert_eq!(m.health_status.as_deref(), Some("Active"));
    assert_eq!(m.onboarding_status.as_deref(), Some("onboarded"));
    assert_eq!(m.exposure_level.as_deref(), Some("Medium"));
    assert_eq!(m.rbac_group_id.as_deref(), Some("140"));
    assert_eq!(m.is_aad_joined, Some(true));
    assert_eq!(m.machine_tags, ["test tag 1", "test tag 2"]);
    assert_eq!(
        m.last_seen,
        Some(Timestamp::parse("2018-08-02T14:55:03.7791856Z").unwrap())
    );
    assert_eq!(
        mock.token_requests()[0].form()["scope"],
        "https://api.securitycenter.microsoft.com/.default"
    );

    let err = client
        .machine("0000000000000000000000000000000000000000")
        .await
        .unwrap_err();
    match &err {
        MdeError::NotFound { what, message } => {
            assert!(what.contains("0000000000"));
            assert_eq!(message, "Machine x was not found");
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        client.machine("../x").await.unwrap_err(),
        MdeError::InvalidInput { .. }
    ));
}

#[tokio::test]
async fn lookups_by_ip_and_name_build_odata_filters() {
    let mock = Mock::start(with_tokens(|r| {
        if r.target.contains("findbyip") {
            Reply::json(200, json!({"value": [machine("a1", "10.1.2.3")]}))
        } else if r.query().unwrap_or("").contains("nobody") {
            // The API answers "no machines" with 404.
            Reply::json(404, json!({"error": {"code": "NotFound", "message": "No machines"}}))
        } else {
            Reply::json(200, json!({"@odata.context": "x", "value": [machine("a1", "10.1.2.3"), machine("b2", "10.1.2.3")]}))
        }
    }))
    .await;
    let client = mock.client();
    let ip: IpAddr = "10.1.2.3".parse().unwrap();
    assert_eq!(client.machines_by_ip(ip).await.unwrap().len(), 2);
    assert_eq!(
        client
            .machines_by_dns_name("o'brien.contoso.com")
            .await
            .unwrap()
            .len(),
        2
    );
    assert!(
        client
            .machines_by_dns_name("nobody")
            .await
            .unwrap()
            .is_empty()
    );
    let at = Timestamp::parse("2019-09-22T08:44:05.1234567Z").unwrap();
    assert_eq!(client.find_by_ip(ip, at).await.unwrap()[0].id, "a1");

    let targets: Vec<String> = mock
        .api_requests()
        .iter()
        .map(|r| r.target.clone())
        .collect();
    // The url crate always escapes `'` in a query (WHATWG special-query set); OData servers
    // decode it before parsing the filter.
    assert_eq!(
        targets[0],
        "/api/machines?$filter=lastIpAddress%20eq%20%2710.1.2.3%27"
    );
    assert_eq!(
        targets[1],
        "/api/machines?$filter=computerDnsName%20eq%20%27o%27%27brien.contoso.com%27"
    );
    assert_eq!(
        targets[3],
        "/api/machines/findbyip(ip='10.1.2.3',timestamp=2019-09-22T08:44:05Z)"
    );

    // Exactly one, or an error.
    let err = client
        .resolve(&MachineSelector::LastIp(ip))
        .await
        .unwrap_err();
    match err {
        MdeError::Ambiguous { count, ids, .. } => {
            assert_eq!((count, ids), (2, vec!["a1".into(), "b2".into()]))
        }
        other => panic!("{other:?}"),
    }
    let err = client
        .resolve(&MachineSelector::DnsName("nobody".into()))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), "not_found");
    let m = client
        .resolve(&MachineSelector::IpAt(ip, at))
        .await
        .unwrap();
    assert_eq!(m.id, "a1");
}

#[tokio::test]
async fn ipv6_findbyip_path() {
    let mock = Mock::start(with_tokens(|_| Reply::json(200, json!({"value": []})))).await;
    let ip: IpAddr = "fe80::1".parse().unwrap();
    let at = Timestamp::parse("2026-01-01T00:00:00Z").unwrap();
    assert!(mock.client().find_by_ip(ip, at).await.unwrap().is_empty());
    assert_eq!(
        mock.api_requests()[0].target,
        "/api/machines/findbyip(ip='fe80::1',timestamp=2026-01-01T00:00:00Z)"
    );
}

#[tokio::test]
async fn isolate_and_release_send_the_documented_bodies() {
    let mock = Mock::start(with_tokens(|r| {
        let ty = if r.path().ends_with("/isolate") {
            "Isolate"
        } else {
            "Unisolate"
        };
        Reply::json(
            201,
            action("a-1", ty, "Pending", "2026-01-01T00:00:00.1234567Z"),
        )
    }))
    .await;
    let client = mock.client();
    let a = client
        .isolate(ID, IsolationType::Selective, "Culprit: \"C2\" beacon")
        .await
        .unwrap();
    assert_eq!(
        (a.id.as_str(), a.action_type.as_str(), &a.status),
        ("a-1", "Isolate", &ActionStatus::Pending)
    );
    let r = client.release(ID, "false positive").await.unwrap();
    assert_eq!(r.action_type, "Unisolate");
    let reqs = mock.api_requests();
    assert_eq!(reqs[0].method, "POST");
    assert_eq!(reqs[0].path(), format!("/api/machines/{ID}/isolate"));
    assert_eq!(
        reqs[0].json(),
        json!({"Comment": "Culprit: \"C2\" beacon", "IsolationType": "Selective"})
    );
    assert_eq!(reqs[1].path(), format!("/api/machines/{ID}/unisolate"));
    assert_eq!(reqs[1].json(), json!({"Comment": "false positive"}));
    assert!(matches!(
        client
            .isolate(ID, IsolationType::Full, "  ")
            .await
            .unwrap_err(),
        MdeError::InvalidInput {
            field: "comment",
            ..
        }
    ));
}

#[tokio::test]
async fn isolate_refusals_are_told_truthfully() {
    type Case = (fn() -> Reply, &'static str);
    let cases: [Case; 4] = [
        (
            || {
                Reply::json(
                    400,
                    json!({"error": {"code": "ActiveRequestAlreadyExists", "message": "Action is already in progress", "target": "t"}}),
                )
            },
            "active_request_already_exists",
        ),
        (
            || {
                Reply::json(
                    400,
                    json!({"error": {"code": "BadRequest", "message": "Machine is already isolated", "target": "t"}}),
                )
            },
            "already_isolated",
        ),
        (
            || {
                Reply::json(
                    403,
                    json!({"error": {"code": "Forbidden", "message": "The application does not have the required permission", "target": "t"}}),
                )
            },
            "forbidden",
        ),
        (
            || {
                Reply::json(
                    400,
                    json!({"error": {"code": "OsPlatformNotSupported", "message": "not supported", "target": "t"}}),
                )
            },
            "bad_request",
        ),
    ];
    for (reply, kind) in cases {
        let mock = Mock::start(with_tokens(move |_| reply())).await;
        let err = mock
            .client()
            .isolate(ID, IsolationType::Full, "c")
            .await
            .unwrap_err();
        assert_eq!(err.kind(), kind, "{err:?}");
        if let MdeError::Forbidden { missing_role, .. } = &err {
            assert_eq!(missing_role.as_deref(), Some("Machine.Isolate"));
        }
        if let MdeError::ActiveRequestAlreadyExists { machine_id, .. } = &err {
            assert_eq!(machine_id, ID);
        }
    }
}

#[tokio::test]
async fn wait_for_action_polls_to_a_final_state() {
    let n = Arc::new(Counter::default());
    let n2 = n.clone();
    let mock = Mock::start(with_tokens(move |_| {
        let status = match n2.next() {
            1 => "Pending",
            2 => return Reply::raw(503, "text/plain", b"blip"),
            3 => "InProgress",
            _ => "Succeeded",
        };
        Reply::json(
            200,
            action("a-9", "Isolate", status, "2026-01-01T00:00:00Z"),
        )
    }))
    .await;
    let a = mock
        .client()
        .wait_for_action("a-9", Duration::from_millis(1), Duration::from_secs(600))
        .await
        .unwrap();
    assert_eq!(a.status, ActionStatus::Succeeded);
    assert_eq!(n.get(), 4, "polled through a transient 503");
    assert!(
        mock.api_requests()
            .iter()
            .all(|r| r.path() == "/api/machineactions/a-9")
    );
}

#[tokio::test]
async fn wait_for_action_stops_at_the_deadline() {
    let clock = ManualClock::new();
    let c = clock.clone();
    let mock = Mock::start(with_tokens(move |_| {
        c.advance_secs(10); // each poll takes ten seconds of the client's time
        Reply::json(
            200,
            action("a-7", "Isolate", "InProgress", "2026-01-01T00:00:00Z"),
        )
    }))
    .await;
    let client = MdeClient::with_clock(mock.config(), clock).unwrap();
    let err = client
        .wait_for_action("a-7", Duration::from_millis(1), Duration::from_secs(25))
        .await
        .unwrap_err();
    match err {
        MdeError::ActionDeadline { action_id, status } => {
            assert_eq!((action_id.as_str(), status.as_str()), ("a-7", "InProgress"))
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(mock.api_requests().len(), 3);

    // A permanent error ends the wait at once.
    let mock = Mock::start(with_tokens(|_| {
        Reply::json(404, json!({"error": {"code": "NotFound", "message": "no"}}))
    }))
    .await;
    let err = mock
        .client()
        .wait_for_action("a-8", Duration::from_millis(1), Duration::from_secs(60))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), "not_found");
}

#[tokio::test]
async fn isolation_state_from_the_newest_action() {
    let mock = Mock::start(with_tokens(|r| {
        let q = r.query().unwrap_or("");
        let v = if q.contains("aaaa") {
            json!([
                action("1", "Isolate", "Succeeded", "2026-01-01T00:00:00Z"),
                action("2", "Unisolate", "Succeeded", "2026-01-02T00:00:00Z"),
                action("3", "Isolate", "Succeeded", "2026-01-03T00:00:00Z"),
                action("4", "RunAntiVirusScan", "Pending", "2026-01-04T00:00:00Z")
            ])
        } else if q.contains("bbbb") {
            json!([
                action("5", "Isolate", "Succeeded", "2026-01-01T00:00:00Z"),
                action("6", "Unisolate", "Pending", "2026-01-02T00:00:00Z")
            ])
        } else {
            json!([action("7", "Isolate", "Failed", "2026-01-01T00:00:00Z")])
        };
        Reply::json(200, json!({"value": v}))
    }))
    .await;
    let c = mock.client();
    assert!(
        matches!(c.isolation_state("aaaa").await.unwrap(), IsolationState::Isolated(a) if a.id == "3")
    );
    assert!(
        matches!(c.isolation_state("bbbb").await.unwrap(), IsolationState::Pending(a) if a.id == "6")
    );
    assert!(matches!(
        c.isolation_state("cccc").await.unwrap(),
        IsolationState::NotIsolated(None)
    ));
    assert_eq!(
        mock.api_requests()[0].target,
        "/api/machineactions?$filter=machineId%20eq%20%27aaaa%27"
    );
}

#[tokio::test]
async fn active_request_already_exists_names_the_pending_action() {
    let mock = Mock::start(with_tokens(|r| {
        if r.method == "POST" {
            Reply::json(400, json!({"error": {"code": "ActiveRequestAlreadyExists", "message": "Action is already in progress", "target": "t"}}))
        } else {
            Reply::json(200, json!({"value": [
                action("old", "Isolate", "Succeeded", "2026-01-01T00:00:00Z"),
                action("scan", "RunAntiVirusScan", "Pending", "2026-01-03T00:00:00Z"),
                action("live", "Isolate", "InProgress", "2026-01-02T00:00:00Z")]}))
        }
    }))
    .await;
    let err = mock
        .client()
        .isolate(ID, IsolationType::Full, "c")
        .await
        .unwrap_err();
    match &err {
        MdeError::ActiveRequestAlreadyExists {
            machine_id,
            pending_action_id,
            ..
        } => {
            assert_eq!(machine_id, ID);
            assert_eq!(pending_action_id.as_deref(), Some("live"));
        }
        other => panic!("{other:?}"),
    }
    assert!(err.to_string().contains("(live)"));
    assert!(!err.is_retryable());
}

#[tokio::test]
async fn ids_cannot_walk_the_path() {
    let mock = Mock::start(with_tokens(|_| Reply::json(200, json!({})))).await;
    let c = mock.client();
    for id in ["..", ".", "a/b", "a?b", ""] {
        assert!(
            matches!(
                c.action(id).await.unwrap_err(),
                MdeError::InvalidInput { .. }
            ),
            "{id}"
        );
        assert!(
            matches!(
                c.isolate(id, IsolationType::Full, "c").await.unwrap_err(),
                MdeError::InvalidInput { .. }
            ),
            "{id}"
        );
    }
    assert!(mock.requests().is_empty());
}

#[tokio::test]
async fn machines_top_asks_for_a_page() {
    let mock = Mock::start(with_tokens(|_| {
        Reply::json(200, json!({"value": [machine(ID, "10.0.0.1")]}))
    }))
    .await;
    let ms = mock.client().machines_top(0).await.unwrap();
    assert_eq!(ms.len(), 1);
    assert_eq!(mock.api_requests()[0].target, "/api/machines?$top=1");
}
