#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{Mock, Reply, with_tokens};
use culprit_mde::{HuntSpan, HuntingApi, MdeError, Quota};
use culprit_model::{KustoType, Timestamp, Value};
use serde_json::json;

const TYPES: [(&str, &str); 9] = [
    ("Timestamp", "DateTime"),
    ("DeviceId", "String"),
    ("RemotePort", "Int32"),
    ("ReportId", "Int64"),
    ("Score", "Double"),
    ("IsRemote", "Boolean"),
    ("Tenant", "Guid"),
    ("Elapsed", "TimeSpan"),
    ("AdditionalFields", "Object"),
];

fn rows() -> serde_json::Value {
    json!([
        {"Timestamp": "2020-02-05T01:10:26.2648757Z", "DeviceId": "1e5bc9d7e413ddd7902c2932e418702b84d0cc07",
         "RemotePort": 443, "ReportId": 9007199254740993_i64, "Score": 0.25, "IsRemote": true,
         "Tenant": "5f2c7a9e-0000-4000-8000-000000000001", "Elapsed": "1.02:03:04.5000000",
         "AdditionalFields": "{\"uniqueEventsAggregated\":3,\"x\":[1,2]}"},
        {"Timestamp": null, "DeviceId": null, "RemotePort": null, "ReportId": null, "Score": null,
         "IsRemote": null, "Tenant": null, "Elapsed": null, "AdditionalFields": null},
        {"DeviceId": "only-one-field"}
    ])
}

fn graph_body() -> serde_json::Value {
    let schema: Vec<_> = TYPES
        .iter()
        .map(|(n, t)| json!({"name": n, "type": t}))
        .collect();
    json!({"@odata.context": "https://graph.microsoft.com/v1.0/$metadata#microsoft.graph.security.huntingQueryResults",
           "schema": schema, "results": rows()})
}

fn mde_body() -> serde_json::Value {
    let schema: Vec<_> = TYPES
        .iter()
        .map(|(n, t)| json!({"Name": n, "Type": t}))
        .collect();
    json!({"Stats": {"ExecutionTime": 4.62, "dataset_statistics": [{"table_row_count": 3}]},
           "Schema": schema, "Results": rows()})
}

fn check_table(t: &culprit_model::Table) {
    let types: Vec<KustoType> = t.columns.iter().map(|c| c.ty).collect();
    assert_eq!(
        types,
        [
            KustoType::DateTime,
            KustoType::String,
            KustoType::Int32,
            KustoType::Int64,
            KustoType::Double,
            KustoType::Boolean,
            KustoType::Guid,
            KustoType::TimeSpan,
            KustoType::Object
        ]
    );
    assert_eq!(t.rows.len(), 3);
    let r = &t.rows[0];
    let ts = Timestamp::parse("2020-02-05T01:10:26Z").unwrap().0 + 2_648_757;
    assert_eq!(
        r[0],
        Value::DateTime(Timestamp(ts)),
        "all 7 fractional digits kept"
    );
    assert_eq!(
        r[1].as_str(),
        Some("1e5bc9d7e413ddd7902c2932e418702b84d0cc07")
    );
    assert_eq!(r[2], Value::Int(443));
    assert_eq!(
        r[3],
        Value::Int(9_007_199_254_740_993),
        "int64 beyond f64 precision"
    );
    assert_eq!(r[4], Value::Real(0.25));
    assert_eq!(r[5], Value::Bool(true));
    assert_eq!(r[6].as_str(), Some("5f2c7a9e-0000-4000-8000-000000000001"));
    let elapsed = ((24 + 2) * 3600 + 3 * 60 + 4) * 10_000_000 + 5_000_000;
    assert_eq!(r[7], Value::TimeSpan(culprit_model::Duration(elapsed)));
    assert_eq!(
        r[8],
        Value::Dynamic(json!({"uniqueEventsAggregated": 3, "x": [1, 2]}))
    );
    assert!(t.rows[1].iter().all(Value::is_null), "explicit nulls");
    assert_eq!(t.rows[2][1].as_str(), Some("only-one-field"));
    assert!(t.rows[2][0].is_null(), "missing keys are null");
}

#[tokio::test]
async fn graph_hunt_sends_serialized_body_and_parses_every_type() {
    let mock = Mock::start(with_tokens(|_| Reply::json(200, graph_body()))).await;
    let query = "DeviceNetworkEvents\r\n| where RemoteUrl == \"a\\\"b\" and X == 'ü €'\n| take 3";
    let res = mock
        .client()
        .hunt(
            query,
            Some(HuntSpan::Last(culprit_model::Duration::from_hours(26))),
        )
        .await
        .unwrap();
    check_table(&res.table);
    assert_eq!(res.api, HuntingApi::Graph);
    assert!(!res.truncated);
    assert!(res.stats.is_none());

    let reqs = mock.api_requests();
    assert_eq!(reqs.len(), 1);
    let r = &reqs[0];
    assert_eq!(
        (r.method.as_str(), r.path()),
        ("POST", "/v1.0/security/runHuntingQuery")
    );
    assert_eq!(r.json(), json!({"Query": query, "Timespan": "P1DT2H"}));
    assert_eq!(
        r.header("content-type"),
        Some("application/json; charset=utf-8")
    );
    assert_eq!(r.header("authorization"), Some("Bearer tok-1"));
    assert_eq!(
        r.header("user-agent"),
        Some(concat!("Culprit/", env!("CARGO_PKG_VERSION")))
    );
}

#[tokio::test]
async fn mde_hunt_parses_capitalised_shape_into_the_same_table() {
    let mock = Mock::start(with_tokens(|_| Reply::json(200, mde_body()))).await;
    let mut cfg = mock.config();
    cfg.hunting_api = HuntingApi::Mde;
    cfg.user_agent_suffix = Some("hunter/3".into());
    let client = culprit_mde::MdeClient::new(cfg).unwrap();
    let ts = Timestamp::parse("2026-01-01T00:00:00Z").unwrap();
    let res = client
        .hunt("DeviceInfo | take 1", Some(HuntSpan::Between(ts, ts)))
        .await
        .unwrap();
    check_table(&res.table);
    assert_eq!(res.api, HuntingApi::Mde);
    assert_eq!(res.stats.unwrap()["ExecutionTime"], json!(4.62));

    let r = &mock.api_requests()[0];
    assert_eq!(r.path(), "/api/advancedqueries/run");
    assert_eq!(
        r.json(),
        json!({"Query": "DeviceInfo | take 1"}),
        "no Timespan on MDE"
    );
    assert_eq!(
        r.header("user-agent"),
        Some(concat!("Culprit/", env!("CARGO_PKG_VERSION"), " hunter/3"))
    );

    // The same rows through Graph give the identical table.
    let graph = culprit_mde::hunt::parse_result(
        &serde_json::to_vec(&graph_body()).unwrap(),
        HuntingApi::Graph,
    )
    .unwrap();
    assert_eq!(graph.table, res.table);
}

#[test]
fn timespan_parameter_forms() {
    let a = Timestamp::parse("2024-02-01T08:00:00Z").unwrap();
    let b = Timestamp::parse("2024-02-15T08:00:00.5Z").unwrap();
    assert_eq!(
        HuntSpan::Between(a, b).to_iso8601(),
        "2024-02-01T08:00:00Z/2024-02-15T08:00:00.5000000Z"
    );
    let d = culprit_model::Duration::from_days(30);
    assert_eq!(HuntSpan::Last(d).to_iso8601(), "P30D");
    assert_eq!(
        HuntSpan::Last(culprit_model::Duration::from_seconds(3725)).to_iso8601(),
        "PT1H2M5S"
    );
}

fn result_with_rows(n: usize) -> Vec<u8> {
    let mut s = String::from(r#"{"schema":[{"name":"N","type":"Int64"}],"results":["#);
    for i in 0..n {
        if i > 0 {
            s.push(',');
        }
        s.push_str(&format!(r#"{{"N":{i}}}"#));
    }
    s.push_str("]}");
    s.into_bytes()
}

#[tokio::test]
async fn exactly_100000_rows_is_flagged_truncated() {
    for (n, truncated) in [(100_000, true), (99_999, false)] {
        let body = result_with_rows(n);
        let mock = Mock::start(with_tokens(move |_| {
            Reply::raw(200, "application/json", &body)
        }))
        .await;
        let res = mock.client().hunt("T", None).await.unwrap();
        assert_eq!(res.table.len(), n);
        assert_eq!(res.truncated, truncated, "{n} rows");
        assert_eq!(res.table.rows[n - 1][0], Value::Int(n as i64 - 1));
    }
}

async fn hunt_error(api: HuntingApi, reply: fn() -> Reply) -> MdeError {
    let mock = Mock::start(with_tokens(move |_| reply())).await;
    let mut cfg = mock.config();
    cfg.hunting_api = api;
    let client = culprit_mde::MdeClient::new(cfg).unwrap();
    client.hunt("DeviceInfo", None).await.unwrap_err()
}

fn mde_error(status: u16, code: &str, message: &str) -> Reply {
    Reply::json(
        status,
        json!({"error": {"code": code, "message": message, "target": "|8b7d5947-428b0a9cb9bb1600."}}),
    )
}

#[tokio::test]
async fn throttling_names_the_quota_and_retry_after() {
    type Case = (fn() -> Reply, Quota, Option<u64>);
    let cases: [Case; 6] = [
        (
            || {
                mde_error(
                    429,
                    "429",
                    "API calls quota exceeded! maximum allowed 45 per 00:01:00",
                )
                .with_header("Retry-After", "17")
            },
            Quota::PerMinute,
            Some(17),
        ),
        (
            || {
                mde_error(
                    429,
                    "429",
                    "API calls quota exceeded! maximum allowed 1500 per 01:00:00",
                )
            },
            Quota::PerHour,
            None,
        ),
        (
            || {
                mde_error(
                    429,
                    "TooManyRequests",
                    "Tenant exceeded its CPU resources allocation",
                )
            },
            Quota::Cpu,
            None,
        ),
        (
            || {
                Reply::raw(429, "text/html", b"<html><head><title>429 Too Many Requests</title></head><body>slow down</body></html>")
                .with_header("Retry-After", "120")
            },
            Quota::Unknown,
            Some(120),
        ),
        (|| Reply::raw(429, "text/plain", b""), Quota::Unknown, None),
        (
            || {
                Reply::json(
                    429,
                    json!({"error": {"code": "TooManyRequests", "message": "Too many requests.",
                "innerError": {"date": "2026-01-01T00:00:00", "request-id": "x"}}}),
                )
            },
            Quota::Unknown,
            None,
        ),
    ];
    for (i, (reply, quota, after)) in cases.into_iter().enumerate() {
        let err = hunt_error(HuntingApi::Graph, reply).await;
        match &err {
            MdeError::Throttled {
                quota: q,
                retry_after,
            } => {
                assert_eq!(*q, quota, "case {i}");
                assert_eq!(*retry_after, after.map(Duration::from_secs), "case {i}");
            }
            other => panic!("case {i}: {other:?}"),
        }
        assert!(err.is_retryable());
        assert_eq!(err.kind(), "throttled");
    }
}

#[tokio::test]
async fn query_errors_are_classified() {
    let err = hunt_error(HuntingApi::Mde, || {
        mde_error(
            400,
            "BadRequest",
            "Query execution has exceeded the allowed limits. The query used too many resources.",
        )
    })
    .await;
    assert!(matches!(err, MdeError::TooExpensive { .. }), "{err:?}");
    assert!(!err.is_retryable());

    let err = hunt_error(HuntingApi::Mde, || {
        mde_error(400, "BadRequest", "Query execution has exceeded the allowed result size. Optimize your query by limiting the number of results and try again")
    })
    .await;
    assert!(matches!(err, MdeError::ResultTooLarge { .. }), "{err:?}");

    let err = hunt_error(HuntingApi::Graph, || {
        mde_error(
            400,
            "BadRequest",
            "Query could not be parsed at 'whre' on line [1,10]",
        )
    })
    .await;
    match &err {
        MdeError::BadQuery { message, .. } => assert!(message.contains("'whre'")),
        other => panic!("{other:?}"),
    }
    assert_eq!(err.kind(), "bad_query");
}

#[tokio::test]
async fn forbidden_names_the_missing_role() {
    let err = hunt_error(HuntingApi::Graph, || {
        mde_error(
            403,
            "Forbidden",
            "Missing application roles. API required roles: ThreatHunting.Read.All",
        )
    })
    .await;
    assert!(
        matches!(&err, MdeError::Forbidden { missing_role: Some(r), .. } if r == "ThreatHunting.Read.All"),
        "{err:?}"
    );
    assert!(err.to_string().contains("ThreatHunting.Read.All"));

    // No role in the message: the call's own role.
    let err = hunt_error(HuntingApi::Mde, || {
        mde_error(403, "Forbidden", "Access denied")
    })
    .await;
    assert!(
        matches!(&err, MdeError::Forbidden { missing_role: Some(r), .. } if r == "AdvancedQuery.Read.All"),
        "{err:?}"
    );
    let err = hunt_error(HuntingApi::Graph, || Reply::raw(403, "text/plain", b"")).await;
    assert!(
        matches!(&err, MdeError::Forbidden { missing_role: Some(r), .. } if r == "ThreatHunting.Read.All"),
        "{err:?}"
    );
}

#[tokio::test]
async fn other_statuses_are_classified() {
    let err = hunt_error(HuntingApi::Graph, || {
        mde_error(404, "NotFound", "no such thing")
    })
    .await;
    assert_eq!(err.kind(), "not_found");
    for reply in [
        (|| Reply::raw(500, "text/plain", b"")) as fn() -> Reply,
        || mde_error(503, "ServiceUnavailable", "try later"),
        || Reply::raw(502, "text/html", b"<html><title>Bad Gateway</title></html>"),
    ] {
        let err = hunt_error(HuntingApi::Graph, reply).await;
        assert!(matches!(err, MdeError::Service { .. }), "{err:?}");
        assert!(err.is_retryable());
    }
    const PAGE: &[u8] =
        b"<html><head><title>Bad Gateway</title></head><body>nginx internals</body></html>";
    let err = hunt_error(HuntingApi::Graph, || Reply::raw(502, "text/html", PAGE)).await;
    // The page's title, not its markup.
    assert_eq!(
        err.to_string(),
        format!(
            "Microsoft service error (HTTP 502): HTML page ({} bytes): Bad Gateway",
            PAGE.len()
        )
    );
}

#[tokio::test]
async fn unauthorized_retries_with_a_fresh_token_once() {
    let mock = Mock::start(with_tokens(|_| {
        mde_error(401, "Unauthorized", "token expired")
    }))
    .await;
    let err = mock.client().hunt("T", None).await.unwrap_err();
    assert!(matches!(err, MdeError::Unauthorized { .. }), "{err:?}");
    assert!(!err.is_retryable());
    assert_eq!(mock.token_requests().len(), 2);
    let auth: Vec<_> = mock
        .api_requests()
        .iter()
        .map(|r| r.header("authorization").unwrap().to_owned())
        .collect();
    assert_eq!(auth, ["Bearer tok-1", "Bearer tok-2"]);
}

#[tokio::test]
async fn a_401_then_success_succeeds() {
    let calls = std::sync::Arc::new(common::Counter::default());
    let c = calls.clone();
    let mock = Mock::start(with_tokens(move |_| {
        if c.next() == 1 {
            Reply::raw(401, "text/plain", b"")
        } else {
            Reply::json(200, graph_body())
        }
    }))
    .await;
    let res = mock.client().hunt("T", None).await.unwrap();
    assert_eq!(res.table.len(), 3);
    assert_eq!(calls.get(), 2);
}

#[tokio::test]
async fn broken_bodies_are_decode_or_transport_errors() {
    // Complete HTTP framing, incomplete JSON: the server's fault, not retryable.
    let err = hunt_error(HuntingApi::Graph, || {
        Reply::raw(
            200,
            "application/json",
            br#"{"schema":[{"name":"A","type":"String"}],"results":[{"A":"x"#,
        )
    })
    .await;
    assert!(matches!(err, MdeError::Decode { .. }), "{err:?}");
    assert!(!err.is_retryable());

    // The connection dies mid-body: transport, retryable.
    let err = hunt_error(HuntingApi::Graph, || Reply::Cut {
        declared: 5000,
        body: br#"{"schema":[{"name":"A","type":"Str"#.to_vec(),
    })
    .await;
    assert!(matches!(err, MdeError::Transport { .. }), "{err:?}");
    assert!(err.is_retryable());

    // Closed without a word.
    let err = hunt_error(HuntingApi::Graph, || Reply::Close).await;
    assert!(matches!(err, MdeError::Transport { .. }), "{err:?}");

    // 200 with HTML.
    let err = hunt_error(HuntingApi::Graph, || {
        Reply::raw(200, "text/html", b"<html>login</html>")
    })
    .await;
    assert!(matches!(err, MdeError::Decode { .. }), "{err:?}");
}

#[tokio::test]
async fn a_hunt_that_outlives_its_timeout_is_a_timeout() {
    let mock = Mock::start(with_tokens(|_| Reply::Hang)).await;
    let mut cfg = mock.config();
    cfg.hunt_timeout = Duration::from_millis(300);
    let err = culprit_mde::MdeClient::new(cfg)
        .unwrap()
        .hunt("T", None)
        .await
        .unwrap_err();
    assert!(matches!(err, MdeError::Timeout), "{err:?}");
    assert!(err.is_retryable());
}

#[tokio::test]
async fn unknown_types_and_case_differences_are_tolerated() {
    let body = json!({"SCHEMA": [{"NAME": "a", "TYPE": "SByte"}, {"name": "B", "type": "Whatever"}],
                      "RESULTS": [{"A": "{\"k\":1}", "b": 5}]});
    let res =
        culprit_mde::hunt::parse_result(&serde_json::to_vec(&body).unwrap(), HuntingApi::Graph)
            .unwrap();
    assert_eq!(res.table.columns[0].ty, KustoType::Object);
    assert_eq!(res.table.columns[1].ty, KustoType::String);
    assert_eq!(
        res.table.rows[0],
        vec![Value::Dynamic(json!({"k": 1})), Value::String("5".into())]
    );
}

#[test]
fn hostile_cells_become_null_instead_of_panicking() {
    // Non-ASCII near byte 10 once made the model's datetime parser slice inside a character;
    // a huge timespan overflowed.
    let body = json!({"schema": [{"name": "T", "type": "DateTime"}, {"name": "S", "type": "TimeSpan"}],
                      "results": [{"T": "2020-01-0é1T00:00:00Z", "S": "99999999999999.00:00:00"},
                                  {"T": "2020-01-01T00:00:00.1234567Z", "S": "-00:00:01"}]});
    let res =
        culprit_mde::hunt::parse_result(&serde_json::to_vec(&body).unwrap(), HuntingApi::Graph)
            .unwrap();
    assert_eq!(res.table.rows[0], vec![Value::Null, Value::Null]);
    assert!(matches!(res.table.rows[1][0], Value::DateTime(_)));
    assert_eq!(
        res.table.rows[1][1],
        Value::TimeSpan(culprit_model::Duration(-10_000_000))
    );
}

#[test]
fn retry_after_takes_seconds_or_an_http_date() {
    let now = Timestamp::parse("2015-10-21T07:28:00Z").unwrap();
    let parse = |v| culprit_mde::parse_retry_after(Some(v), now);
    assert_eq!(parse("30"), Some(Duration::from_secs(30)));
    assert_eq!(
        parse("Wed, 21 Oct 2015 07:28:45 GMT"),
        Some(Duration::from_secs(45))
    );
    assert_eq!(
        parse("Wed, 21 Oct 2015 07:00:00 GMT"),
        Some(Duration::ZERO),
        "in the past"
    );
    assert_eq!(
        parse("99999999"),
        Some(Duration::from_secs(86_400)),
        "capped at a day"
    );
    assert_eq!(parse("soon"), None);
    assert_eq!(culprit_mde::parse_retry_after(None, now), None);
}

#[tokio::test]
async fn redirects_are_not_followed() {
    let elsewhere = Mock::start(|_: &common::Req| Reply::json(200, graph_body())).await;
    let target = elsewhere.url.join("steal").unwrap().to_string();
    let mock = Mock::start(with_tokens(move |_| {
        Reply::raw(302, "text/plain", b"").with_header("Location", &target)
    }))
    .await;
    let err = mock.client().hunt("T", None).await.unwrap_err();
    assert!(
        matches!(err, MdeError::BadRequest { status: 302, .. }),
        "{err:?}"
    );
    assert!(
        elsewhere.requests().is_empty(),
        "the token never left for another host"
    );
}
