//! Advanced Hunting on both APIs over HTTP: result shapes and value formats, query errors,
//! permissions, quotas with Retry-After, the CPU budget, the row cap, the result-size limit,
//! Graph's Timespan and the 30-day window on the twin clock.
//!
//! The tests marked "needs culprit-kql" evaluate real KQL and so depend on the evaluator.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use serde_json::{Value, json};

const PORT_8080: &str = "DeviceNetworkEvents | where RemotePort == 8080 | take 5";

/// Rows with RemotePort 8080 in the scenario file, counted independently of the engine.
fn rows_with_port_8080() -> usize {
    let text = std::fs::read_to_string(scenario().join("mde/DeviceNetworkEvents.jsonl")).unwrap();
    text.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["RemotePort"] == 8080)
        .count()
}

fn is_kusto_datetime(s: &str) -> bool {
    // 2023-08-16T04:54:30.9870000Z
    s.len() == 28 && s.as_bytes()[10] == b'T' && s.ends_with('Z') && s.as_bytes()[19] == b'.'
}

/// needs culprit-kql
#[tokio::test]
async fn graph_returns_lowercase_schema_and_results_in_api_formats() {
    let env = Env::start(config()).await;
    let token = env.graph_token().await;
    let r = env.graph_hunt(&token, PORT_8080).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        r.header("content-type")
            .unwrap()
            .starts_with("application/json")
    );
    assert!(
        r.body["@odata.context"]
            .as_str()
            .unwrap()
            .ends_with("huntingQueryResults")
    );
    let schema = r.body["schema"].as_array().unwrap();
    let ty = |name: &str| {
        schema
            .iter()
            .find(|c| c["name"] == name)
            .map(|c| c["type"].as_str().unwrap().to_owned())
    };
    assert_eq!(ty("Timestamp").as_deref(), Some("DateTime"));
    assert_eq!(ty("RemotePort").as_deref(), Some("Int32"));
    assert_eq!(ty("InitiatingProcessId").as_deref(), Some("Int64"));
    let results = r.body["results"].as_array().unwrap();
    assert_eq!(results.len(), rows_with_port_8080().min(5));
    assert!(!results.is_empty());
    for row in results {
        assert_eq!(row["RemotePort"], 8080);
        assert!(
            is_kusto_datetime(row["Timestamp"].as_str().unwrap()),
            "{row}"
        );
        // Dynamic columns travel as JSON text in a string.
        let extra = row["AdditionalFields"].as_str().unwrap();
        assert!(serde_json::from_str::<Value>(extra).unwrap().is_object());
    }
    assert_eq!(env.twin.call_counts(TENANT).hunting.total, 1);
}

/// needs culprit-kql
#[tokio::test]
async fn mde_returns_stats_schema_and_results() {
    let env = Env::start(config()).await;
    let token = env.mde_token().await;
    let r = env.mde_hunt(&token, PORT_8080).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let schema = r.body["Schema"].as_array().unwrap();
    assert!(
        schema
            .iter()
            .any(|c| c["Name"] == "Timestamp" && c["Type"] == "DateTime")
    );
    let results = r.body["Results"].as_array().unwrap();
    assert_eq!(results.len(), rows_with_port_8080().min(5));
    let stats = &r.body["Stats"];
    assert!(stats["ExecutionTime"].is_number());
    assert_eq!(
        stats["dataset_statistics"][0]["table_row_count"],
        results.len()
    );
    // The PSMDE alias path answers too.
    let alias = env
        .post_json(
            "/api/advancedhunting/run",
            &token,
            json!({"Query": PORT_8080}),
        )
        .await;
    assert_eq!(alias.status, 200);
}

/// needs culprit-kql (its parser's error positions)
#[tokio::test]
async fn malformed_kql_is_a_400_naming_line_and_column() {
    let env = Env::start(config()).await;
    let token = env.mde_token().await;
    let r = env
        .mde_hunt(&token, "DeviceNetworkEvents\n| where RemotePort == ")
        .await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(r.code(), "BadRequest");
    assert!(r.message().contains("line 2"), "{}", r.message());
    assert!(r.body["error"]["target"].is_string());

    let graph = env.graph_token().await;
    let r = env
        .graph_hunt(&graph, "DeviceNetworkEvents | where (")
        .await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(r.code(), "BadRequest");
    assert!(r.message().contains("line 1"), "{}", r.message());
    assert!(r.body["error"]["innerError"]["date"].is_string());
}

/// needs culprit-kql
#[tokio::test]
async fn an_unknown_table_is_a_400() {
    let env = Env::start(config()).await;
    let token = env.mde_token().await;
    let r = env.mde_hunt(&token, "NoSuchTable | take 1").await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(r.code(), "BadRequest");
}

#[tokio::test]
async fn bad_bodies_and_content_types_get_the_services_error_shapes() {
    let env = Env::start(config()).await;
    let mde = env.mde_token().await;
    let graph = env.graph_token().await;
    // Invalid JSON (a raw newline inside a string), as in MicrosoftDocs/microsoft-365-docs#10581.
    let resp = env
        .http
        .post(env.url("/api/advancedqueries/run"))
        .bearer_auth(&mde)
        .header("content-type", "application/json")
        .body("{\"Query\": \"DeviceInfo\n| take 1\"}")
        .send()
        .await
        .unwrap();
    let r = Reply::read(resp).await;
    assert_eq!((r.status, r.code()), (400, "InvalidRequestBody"));
    assert_eq!(r.message(), "Missing query.");

    // Wrong case of the parameter name on the MDE API.
    let r = env
        .post_json(
            "/api/advancedqueries/run",
            &mde,
            json!({"query": "DeviceInfo"}),
        )
        .await;
    assert_eq!((r.status, r.code()), (400, "MissingRequiredParameter"));

    // Wrong content type on Graph.
    let resp = env
        .http
        .post(env.url("/v1.0/security/runHuntingQuery"))
        .bearer_auth(&graph)
        .header("content-type", "text/plain")
        .body("{\"Query\": \"DeviceInfo\"}")
        .send()
        .await
        .unwrap();
    let r = Reply::read(resp).await;
    assert_eq!((r.status, r.code()), (400, "BadRequest"));
    assert!(r.message().contains("Content-Type"));

    let r = env
        .post_json(
            "/v1.0/security/runHuntingQuery",
            &graph,
            json!({"Query": 5}),
        )
        .await;
    assert_eq!(r.status, 400);
    let r = env
        .post_json(
            "/v1.0/security/runHuntingQuery",
            &graph,
            json!({"Query": "DeviceInfo", "Timespan": "P3X"}),
        )
        .await;
    assert_eq!(r.status, 400);
    assert!(r.message().contains("Timespan"));
}

#[tokio::test]
async fn a_missing_role_is_a_403_naming_it() {
    let cfg = with_client(config(), "machines-only", &["Machine.Read.All"]);
    let env = Env::start(cfg).await;
    let mde = env.token_for("machines-only", MDE_SCOPE).await;
    let r = env.mde_hunt(&mde, "DeviceInfo").await;
    assert_eq!((r.status, r.code()), (403, "Forbidden"));
    assert!(
        r.message().contains("AdvancedQuery.Read.All"),
        "{}",
        r.message()
    );

    let graph = env.token_for("machines-only", GRAPH_SCOPE).await;
    let r = env.graph_hunt(&graph, "DeviceInfo").await;
    assert_eq!((r.status, r.code()), (403, "Forbidden"));
    assert!(
        r.message().contains("ThreatHunting.Read.All"),
        "{}",
        r.message()
    );
    // Refused calls never reach the quota.
    assert_eq!(env.twin.call_counts(TENANT).hunting.total, 0);
}

#[tokio::test]
async fn the_46th_call_in_a_minute_is_throttled_with_retry_after() {
    let env = Env::start(config()).await;
    let mde = env.mde_token().await;
    let graph = env.graph_token().await;
    // Both APIs draw on the tenant's one quota; the clock stands still, so all 45 are in one
    // minute.
    for i in 0..45 {
        let r = if i % 2 == 0 {
            env.mde_hunt(&mde, "DeviceInfo | take 1").await
        } else {
            env.graph_hunt(&graph, "DeviceInfo | take 1").await
        };
        assert_ne!(r.status, 429, "call {i}: {}", r.body);
    }
    let r = env.mde_hunt(&mde, "DeviceInfo | take 1").await;
    assert_eq!(r.status, 429, "{}", r.body);
    assert_eq!(r.code(), "429");
    assert_eq!(
        r.message(),
        "API calls quota exceeded! maximum allowed 45 per 00:01:00"
    );
    assert_eq!(r.header("retry-after"), Some("60"));
    let r = env.graph_hunt(&graph, "DeviceInfo | take 1").await;
    assert_eq!((r.status, r.code()), (429, "TooManyRequests"));
    assert!(r.message().contains("45 per 00:01:00"));

    let counts = env.twin.call_counts(TENANT);
    assert_eq!(counts.hunting.total, 47);
    assert_eq!(counts.hunting.throttled, 2);
    assert_eq!(counts.hunting.max_in_60s, 47);

    // Once the minute has passed, calls go through again.
    env.advance(60);
    let r = env.mde_hunt(&mde, "DeviceInfo | take 1").await;
    assert_ne!(r.status, 429, "{}", r.body);
}

#[tokio::test]
async fn retry_after_is_in_real_seconds_under_a_scaled_clock() {
    // A twin second lasts 1,000 real seconds, so the whole test runs inside one twin minute
    // and a 60 s wait on the twin clock is about 60,000 real seconds.
    let mut cfg = config();
    cfg.clock.start = Some(start_time());
    cfg.clock.scale = 0.001;
    cfg.limits.calls_per_minute = 3;
    let env = Env::start_scaled(cfg).await;
    let token = env.mde_token().await;
    let mut last = None;
    for _ in 0..4 {
        last = Some(env.mde_hunt(&token, "DeviceInfo | take 1").await);
    }
    let last = last.unwrap();
    assert_eq!(last.status, 429, "{}", last.body);
    let secs: u64 = last.header("retry-after").unwrap().parse().unwrap();
    assert!((59_000..=60_000).contains(&secs), "{secs}");
    let clock = Reply::read(env.http.get(env.url("/_twin/clock")).send().await.unwrap()).await;
    assert_eq!(clock.body["scale"], 0.001);
    let now = clock.body["now"].as_str().unwrap();
    assert!(now.starts_with("2023-08-16T05:05:16"), "{now}");
}

#[tokio::test]
async fn the_hourly_quota_is_enforced_and_counted() {
    let mut cfg = config();
    cfg.limits.calls_per_hour = 5;
    let env = Env::start(cfg).await;
    let mde = env.mde_token().await;
    for _ in 0..5 {
        let r = env.mde_hunt(&mde, "DeviceInfo | take 1").await;
        assert_ne!(r.status, 429);
        env.advance(61);
    }
    let r = env.mde_hunt(&mde, "DeviceInfo | take 1").await;
    assert_eq!(r.status, 429);
    assert_eq!(
        r.message(),
        "API calls quota exceeded! maximum allowed 5 per 01:00:00"
    );
    // Six calls are logged (this one too); the next fits once two have left the hour: the
    // one at +61 leaves at +3661, and this one is at +305.
    assert_eq!(r.header("retry-after"), Some("3356"));
    let counts = env.twin.call_counts(TENANT);
    assert_eq!(counts.hunting.max_in_60s, 1);
    assert_eq!(counts.hunting.max_in_3600s, 6);
}

#[tokio::test]
async fn the_cpu_budget_throttles_once_spent() {
    let mut cfg = config();
    cfg.limits.cpu_seconds_per_hour = 0.0005;
    let env = Env::start(cfg).await;
    let mde = env.mde_token().await;
    let first = env.mde_hunt(&mde, "DeviceInfo | take 1").await;
    assert_ne!(first.status, 429);
    let r = env.mde_hunt(&mde, "DeviceInfo | take 1").await;
    assert_eq!(r.status, 429);
    assert!(r.message().contains("CPU quota"), "{}", r.message());
    assert!(r.header("retry-after").is_some());
    env.advance(3600);
    assert_ne!(env.mde_hunt(&mde, "DeviceInfo | take 1").await.status, 429);
}

/// needs culprit-kql
#[tokio::test]
async fn results_are_cut_at_the_row_cap() {
    let mut cfg = config();
    cfg.limits.row_cap = 10;
    let env = Env::start(cfg).await;
    let token = env.graph_token().await;
    let r = env.graph_hunt(&token, "DeviceNetworkEvents").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["results"].as_array().unwrap().len(), 10);
    assert_eq!(r.header("x-twin-result-truncated"), Some("true"));
    let r = env
        .graph_hunt(&token, "DeviceNetworkEvents | take 10")
        .await;
    assert_eq!(r.body["results"].as_array().unwrap().len(), 10);
    assert_eq!(r.header("x-twin-result-truncated"), None);
}

/// needs culprit-kql
#[tokio::test]
async fn an_oversized_result_is_refused() {
    let mut cfg = config();
    cfg.limits.max_result_bytes = 2_000;
    let env = Env::start(cfg).await;
    let token = env.mde_token().await;
    let r = env.mde_hunt(&token, "DeviceNetworkEvents").await;
    assert_eq!((r.status, r.code()), (400, "BadRequest"), "{}", r.body);
    assert!(
        r.message()
            .starts_with("Query execution has exceeded the allowed result size")
    );
    let small = env.mde_hunt(&token, "DeviceInfo | project DeviceId").await;
    assert_eq!(small.status, 200, "{}", small.body);
}

/// needs culprit-kql
#[tokio::test]
async fn only_the_last_30_days_of_the_twin_clock_are_visible() {
    let env = Env::start(config()).await;
    let token = env.mde_token().await;
    let count = |r: &Reply| r.body["Results"].as_array().map(Vec::len);
    let r = env
        .mde_hunt(&token, "DeviceNetworkEvents | project Timestamp")
        .await;
    assert_eq!(count(&r), Some(140), "{}", r.body);
    env.advance(31 * 86_400);
    let token = env.mde_token().await;
    let r = env
        .mde_hunt(&token, "DeviceNetworkEvents | project Timestamp")
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(count(&r), Some(0));
}

/// needs culprit-kql
#[tokio::test]
async fn graph_timespan_narrows_the_window() {
    let env = Env::start(config()).await;
    let token = env.graph_token().await;
    let rows = |r: &Reply| r.body["results"].as_array().map(Vec::len);
    let q = "DeviceNetworkEvents | project Timestamp";
    // Nothing happened in the last minute before the clock.
    let r = env
        .post_json(
            "/v1.0/security/runHuntingQuery",
            &token,
            json!({"Query": q, "Timespan": "PT1M"}),
        )
        .await;
    assert_eq!(rows(&r), Some(0), "{}", r.body);
    // Lowercase keys are accepted by Graph.
    let r = env
        .post_json(
            "/v1.0/security/runHuntingQuery",
            &token,
            json!({"query": q, "timespan": "2023-08-16T04:00:00Z/2023-08-16T05:00:00Z"}),
        )
        .await;
    let inside = rows(&r).unwrap();
    assert!(inside > 0 && inside < 140, "{inside}");
    let r = env
        .post_json(
            "/v1.0/security/runHuntingQuery",
            &token,
            json!({"Query": q}),
        )
        .await;
    assert_eq!(rows(&r), Some(140));
}

/// needs culprit-kql: `ago()` is relative to the twin clock.
#[tokio::test]
async fn ago_is_relative_to_the_twin_clock() {
    let env = Env::start(config()).await;
    let token = env.graph_token().await;
    let r = env
        .graph_hunt(
            &token,
            "DeviceNetworkEvents | where Timestamp > ago(1h) | count",
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["results"][0]["Count"], 140);
}

/// A query that makes 19,600 rows (140 × 140): slow enough to outlast a millisecond under any
/// build, quick enough not to hold a core for long after the twin gives up on it.
const SLOW: &str =
    "DeviceNetworkEvents | join kind=inner (DeviceNetworkEvents) on DeviceId | count";

/// needs culprit-kql
#[tokio::test]
async fn a_query_past_the_timeout_is_refused_and_charged() {
    let mut cfg = config();
    cfg.limits.timeout_secs = 0.001;
    // The timed-out query is charged its full time limit, which spends this budget.
    cfg.limits.cpu_seconds_per_hour = 0.001;
    let env = Env::start(cfg).await;
    let token = env.mde_token().await;
    let r = env.mde_hunt(&token, SLOW).await;
    assert_eq!((r.status, r.code()), (400, "BadRequest"), "{}", r.body);
    assert!(r.message().contains("time limit"), "{}", r.message());
    let next = env.mde_hunt(&token, "DeviceInfo | take 1").await;
    assert_eq!(next.status, 429, "{}", next.body);
    assert!(next.message().contains("CPU quota"), "{}", next.message());
}

#[tokio::test]
async fn concurrent_calls_admit_exactly_the_quota() {
    let env = Env::start(config()).await;
    let token = env.mde_token().await;
    let calls = (0..60).map(|_| env.mde_hunt(&token, "DeviceInfo | take 1"));
    let replies = futures::future::join_all(calls).await;
    let throttled = replies.iter().filter(|r| r.status == 429).count();
    assert_eq!(throttled, 15);
    let counts = env.twin.call_counts(TENANT);
    assert_eq!((counts.hunting.total, counts.hunting.throttled), (60, 15));
}
