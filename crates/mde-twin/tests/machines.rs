//! Machines, findbyip, isolation and machine actions over HTTP, and the admin endpoints.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use serde_json::json;

#[tokio::test]
async fn machines_are_listed_and_filtered_by_ip_and_name() {
    let env = Env::start(config()).await;
    let token = env.mde_token().await;
    let r = env.get("/api/machines", &token).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        r.body["@odata.context"]
            .as_str()
            .unwrap()
            .ends_with("#Machines")
    );
    let all = r.body["value"].as_array().unwrap();
    assert_eq!(all.len(), 1);
    let m = &all[0];
    assert_eq!(m["id"], DEVICE_ID);
    assert_eq!(m["computerDnsName"], DEVICE_NAME);
    assert_eq!(m["lastIpAddress"], DEVICE_IP);
    assert_eq!(m["osPlatform"], "Windows10");
    assert_eq!(m["osBuild"], 19045);
    assert_eq!(m["healthStatus"], "Active");
    assert_eq!(m["isolationState"], "NotIsolated");
    assert_eq!(m["firstSeen"], "2023-08-16T04:53:47.1780000Z");

    let by_ip = env
        .get(
            &format!("/api/machines?$filter=lastIpAddress eq '{DEVICE_IP}'"),
            &token,
        )
        .await;
    assert_eq!(
        by_ip.body["value"].as_array().unwrap().len(),
        1,
        "{}",
        by_ip.body
    );
    let other_ip = env
        .get("/api/machines?$filter=lastIpAddress eq '10.9.9.9'", &token)
        .await;
    assert_eq!(other_ip.status, 200);
    assert_eq!(other_ip.body["value"].as_array().unwrap().len(), 0);
    let by_name = env
        .get(
            &format!("/api/machines?$filter=computerDnsName+eq+'{DEVICE_NAME}'"),
            &token,
        )
        .await;
    assert_eq!(
        by_name.body["value"][0]["id"], DEVICE_ID,
        "{}",
        by_name.body
    );
    let psmde = env
        .get(
            "/api/machines?$Filter=startswith(computerDnsName,'mkt')&$top=1",
            &token,
        )
        .await;
    assert_eq!(
        psmde.body["value"].as_array().unwrap().len(),
        1,
        "{}",
        psmde.body
    );

    let bad = env
        .get("/api/machines?$filter=LocalIP eq '1.2.3.4'", &token)
        .await;
    assert_eq!((bad.status, bad.code()), (400, "ODataError"));
    assert!(bad.message().contains("LocalIP"));
    let too_many = env.get("/api/machines?$top=10001", &token).await;
    assert_eq!((too_many.status, too_many.code()), (400, "ODataError"));
}

#[tokio::test]
async fn one_machine_by_id_and_a_missing_one() {
    let env = Env::start(config()).await;
    let token = env.mde_token().await;
    let r = env.get(&format!("/api/machines/{DEVICE_ID}"), &token).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["computerDnsName"], DEVICE_NAME);
    let r = env.get("/api/machines/123123123", &token).await;
    assert_eq!((r.status, r.code()), (404, "ResourceNotFound"));
    assert_eq!(r.message(), "Machine 123123123 was not found");
}

#[tokio::test]
async fn findbyip_answers_within_fifteen_minutes_and_the_last_30_days() {
    let env = Env::start(config()).await;
    let token = env.mde_token().await;
    let find = |ip: &str, ts: &str| format!("/api/machines/findbyip(ip='{ip}',timestamp={ts})");
    let r = env
        .get(&find(DEVICE_IP, "2023-08-16T04:55:00Z"), &token)
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["value"][0]["id"], DEVICE_ID);
    // 15 minutes before the first report still finds it; 20 minutes before does not.
    let r = env
        .get(&find(DEVICE_IP, "2023-08-16T04:39:00Z"), &token)
        .await;
    assert_eq!(r.body["value"].as_array().unwrap().len(), 1);
    let r = env
        .get(&find(DEVICE_IP, "2023-08-16T04:33:00Z"), &token)
        .await;
    assert_eq!(r.body["value"].as_array().unwrap().len(), 0);
    // The IPv4-mapped form is the same host.
    let r = env
        .get(
            &find(&format!("::ffff:{DEVICE_IP}"), "2023-08-16T04:55:00Z"),
            &token,
        )
        .await;
    assert_eq!(r.body["value"].as_array().unwrap().len(), 1, "{}", r.body);
    let r = env
        .get(&find("10.0.0.99", "2023-08-16T04:55:00Z"), &token)
        .await;
    assert_eq!(r.body["value"].as_array().unwrap().len(), 0);

    let r = env
        .get(&find(DEVICE_IP, "2023-06-01T00:00:00Z"), &token)
        .await;
    assert_eq!((r.status, r.code()), (400, "InvalidInput"));
    let r = env
        .get(&find("not-an-ip", "2023-08-16T04:55:00Z"), &token)
        .await;
    assert_eq!((r.status, r.code()), (400, "InvalidIpAddress"));
    let r = env
        .get("/api/machines/findbyip(ip='1.2.3.4')", &token)
        .await;
    assert_eq!(r.status, 400);
}

#[tokio::test]
async fn isolation_moves_through_its_lifecycle_and_shows_on_the_machine() {
    let env = Env::start(config()).await;
    let token = env.mde_token().await;
    let isolate = format!("/api/machines/{DEVICE_ID}/isolate");
    let r = env
        .post_json(
            &isolate,
            &token,
            json!({"Comment": "case 42", "IsolationType": "Selective"}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.body["type"], "Isolate");
    assert_eq!(r.body["scope"], "Selective");
    assert_eq!(r.body["status"], "Pending");
    assert_eq!(r.body["requestor"], APP);
    assert_eq!(r.body["requestorComment"], "case 42");
    assert_eq!(r.body["machineId"], DEVICE_ID);
    assert!(
        r.body["@odata.context"]
            .as_str()
            .unwrap()
            .ends_with("MachineActions/$entity")
    );
    let action = r.body["id"].as_str().unwrap().to_owned();

    let again = env
        .post_json(
            &isolate,
            &token,
            json!({"Comment": "again", "IsolationType": "Full"}),
        )
        .await;
    assert_eq!(
        (again.status, again.code()),
        (400, "ActiveRequestAlreadyExists")
    );

    let status = |r: &Reply| r.body["status"].as_str().unwrap().to_owned();
    let path = format!("/api/machineactions/{action}");
    env.advance(5);
    assert_eq!(status(&env.get(&path, &token).await), "InProgress");
    let busy = env
        .post_json(
            &format!("/api/machines/{DEVICE_ID}/unisolate"),
            &token,
            json!({"Comment": "too soon"}),
        )
        .await;
    assert_eq!(busy.code(), "ActiveRequestAlreadyExists");
    env.advance(25);
    let done = env.get(&path, &token).await;
    assert_eq!(status(&done), "Succeeded");
    assert_eq!(
        done.body["lastUpdateDateTimeUtc"],
        "2023-08-16T05:05:46.0000000Z"
    );
    let m = env.get(&format!("/api/machines/{DEVICE_ID}"), &token).await;
    assert_eq!(m.body["isolationState"], "SelectivelyIsolated");

    let r = env
        .post_json(
            &format!("/api/machines/{DEVICE_ID}/unisolate"),
            &token,
            json!({"Comment": "released"}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.body["type"], "Unisolate");
    env.advance(30);
    let m = env.get(&format!("/api/machines/{DEVICE_ID}"), &token).await;
    assert_eq!(m.body["isolationState"], "NotIsolated");

    let listed = env
        .get(
            &format!(
                "/api/machineactions?$filter=machineId eq '{DEVICE_ID}' and type eq 'Isolate'"
            ),
            &token,
        )
        .await;
    assert_eq!(
        listed.body["value"].as_array().unwrap().len(),
        1,
        "{}",
        listed.body
    );

    let admin = env
        .http
        .get(env.url(&format!("/_twin/actions/{TENANT}")))
        .send()
        .await
        .unwrap();
    let admin = Reply::read(admin).await;
    let recorded = admin.body["value"].as_array().unwrap();
    assert_eq!(recorded.len(), 2);
    assert_eq!(recorded[0]["status"], "Succeeded");
}

#[tokio::test]
async fn isolation_requests_are_validated_and_need_machine_isolate() {
    let cfg = with_client(config(), "reader", &["Machine.Read.All"]);
    let env = Env::start(cfg).await;
    let token = env.mde_token().await;
    let isolate = format!("/api/machines/{DEVICE_ID}/isolate");
    let r = env
        .post_json(&isolate, &token, json!({"IsolationType": "Full"}))
        .await;
    assert_eq!((r.status, r.code()), (400, "MissingRequiredParameter"));
    let r = env
        .post_json(
            &isolate,
            &token,
            json!({"Comment": "x", "IsolationType": "Partial"}),
        )
        .await;
    assert_eq!((r.status, r.code()), (400, "InvalidInput"));
    let resp = env
        .http
        .post(env.url(&isolate))
        .bearer_auth(&token)
        .body("not json")
        .send()
        .await
        .unwrap();
    let r = Reply::read(resp).await;
    assert_eq!((r.status, r.code()), (400, "InvalidRequestBody"));
    let r = env
        .post_json(
            "/api/machines/nope/isolate",
            &token,
            json!({"Comment": "x"}),
        )
        .await;
    assert_eq!(r.status, 404);

    let reader = env.token_for("reader", MDE_SCOPE).await;
    let r = env
        .post_json(&isolate, &reader, json!({"Comment": "x"}))
        .await;
    assert_eq!((r.status, r.code()), (403, "Forbidden"));
    assert!(r.message().contains("Machine.Isolate"), "{}", r.message());
    let r = env
        .get(
            "/api/machineactions/00000000-0000-0000-0000-000000000000",
            &reader,
        )
        .await;
    assert_eq!((r.status, r.code()), (404, "ResourceNotFound"));
}

#[tokio::test]
async fn machine_calls_have_their_own_quota_and_counts() {
    let mut cfg = config();
    cfg.limits.machine_calls_per_minute = 3;
    let env = Env::start(cfg).await;
    let token = env.mde_token().await;
    for _ in 0..3 {
        assert_eq!(env.get("/api/machines", &token).await.status, 200);
    }
    let r = env.get("/api/machines", &token).await;
    assert_eq!(r.status, 429);
    assert!(r.message().contains("3 per 00:01:00"));
    let admin = env
        .http
        .get(env.url(&format!("/_twin/calls/{TENANT}")))
        .send()
        .await
        .unwrap();
    let admin = Reply::read(admin).await;
    assert_eq!(admin.body["machines"]["total"], 4);
    assert_eq!(admin.body["machines"]["max_in_60s"], 4);
    assert_eq!(admin.body["machines"]["throttled"], 1);
    assert_eq!(admin.body["hunting"]["total"], 0);
    let unknown = env
        .http
        .get(env.url("/_twin/calls/nobody"))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);
}

#[tokio::test]
async fn several_folders_make_one_tenant_or_several_tenants() {
    let mut cfg = config();
    // The same folder twice exercises the merge (rows appended under one schema).
    let dirs = vec![scenario(), scenario()];
    cfg.tenants[0].data_dirs = dirs.clone();
    cfg.tenants.push(tenant("second.example", vec![scenario()]));
    let env = Env::start(cfg).await;
    let token = env.mde_token().await;
    let r = env.get("/api/machines", &token).await;
    assert!(!r.body["value"].as_array().unwrap().is_empty());

    // The second tenant has its own apps, tokens and counts.
    let resp = env
        .token_response("second.example", APP, SECRET, MDE_SCOPE)
        .await;
    assert_eq!(resp.status(), 200);
    let body: serde_json::Value = resp.json().await.unwrap();
    let second = body["access_token"].as_str().unwrap();
    assert_eq!(env.get("/api/machines", second).await.status, 200);
    assert_eq!(env.twin.call_counts("second.example").machines.total, 1);
    assert_eq!(env.twin.call_counts(TENANT).machines.total, 1);
}

#[tokio::test]
async fn unknown_routes_and_odd_requests_get_json_errors() {
    let env = Env::start(config()).await;
    let token = env.mde_token().await;
    let r = env.get("/api/nothing/here", &token).await;
    assert_eq!((r.status, r.code()), (404, "NotFound"));
    let r = env.get("/v1.0/nothing", &token).await;
    assert_eq!(r.status, 404);
    assert!(r.body["error"]["innerError"].is_object());
    let r = env.get("/api/advancedqueries/run", &token).await;
    assert_eq!((r.status, r.code()), (405, "MethodNotAllowed"));
    let r = env.get("/api/machines/%ff", &token).await;
    assert_eq!(r.status, 400);
    assert!(r.body["error"]["target"].is_string());
    let r = env.get("/api/machines?$skip=-1", &token).await;
    assert_eq!(r.status, 400);
    let r = env
        .get(
            "/api/machines?$filter=computerDnsName eq 'unterminated",
            &token,
        )
        .await;
    assert_eq!(r.status, 400);
}
