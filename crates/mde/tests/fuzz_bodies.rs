//! The parsers see whatever the server sends: no byte sequence may panic them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use culprit_mde::{Call, HuntingApi, classify, hunt, links, machines, token};
use culprit_model::Timestamp;
use proptest::prelude::*;
use serde_json::{Value, json};

fn every_parser(body: &[u8], status: u16) {
    let now = Timestamp(0);
    for api in [HuntingApi::Graph, HuntingApi::Mde] {
        if let Ok(r) = hunt::parse_result(body, api) {
            assert!(
                r.table
                    .rows
                    .iter()
                    .all(|row| row.len() == r.table.columns.len())
            );
        }
    }
    let _ = machines::parse_machine(body);
    let _ = machines::parse_machines(body);
    let _ = machines::parse_action(body);
    let _ = machines::parse_actions(body);
    let _ = token::parse_token(body, now);
    for call in [
        Call::Token { tenant: "t".into() },
        Call::Hunt(HuntingApi::Graph),
        Call::Isolate {
            machine_id: "m".into(),
        },
    ] {
        let e = classify(status, std::str::from_utf8(body).ok(), body, &call, now);
        let _ = (e.to_string(), e.kind(), e.is_retryable());
    }
    if let Ok(s) = std::str::from_utf8(body) {
        let _ = links::decode(s);
    }
}

fn type_name() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("Int64".to_owned()),
        Just("Int32".to_owned()),
        Just("Double".to_owned()),
        Just("Boolean".to_owned()),
        Just("Guid".to_owned()),
        Just("TimeSpan".to_owned()),
        Just("Object".to_owned()),
        Just("DateTime".to_owned()),
        Just("String".to_owned()),
        "\\PC{0,8}",
    ]
}

fn cell() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| json!(f)),
        "\\PC{0,40}".prop_map(Value::from),
        "[0-9:.\\-]{0,40}".prop_map(Value::from),
        "20[0-9]{2}-[0-9]{2}-[0-9]{2}[T ][0-9:.]{0,16}[Zz+\\-0-9é]{0,6}".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::hash_map("\\PC{0,6}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn hunting_body() -> impl Strategy<Value = Vec<u8>> {
    (
        prop::collection::vec(("[A-Za-z]{1,6}", type_name()), 0..6),
        prop::collection::vec(prop::collection::vec(cell(), 0..6), 0..6),
        any::<bool>(),
    )
        .prop_map(|(schema, rows, upper)| {
            let (s, r, n, t) = if upper {
                ("Schema", "Results", "Name", "Type")
            } else {
                ("schema", "results", "name", "type")
            };
            let names: Vec<String> = schema.iter().map(|(name, _)| name.clone()).collect();
            let schema: Vec<Value> = schema
                .iter()
                .map(|(name, ty)| json!({n: name, t: ty}))
                .collect();
            let rows: Vec<Value> = rows
                .into_iter()
                .map(|cells| Value::Object(names.iter().cloned().zip(cells).collect()))
                .collect();
            serde_json::to_vec(&json!({s: schema, r: rows})).unwrap()
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn random_bytes_never_panic(body in prop::collection::vec(any::<u8>(), 0..512), status in 100u16..600) {
        every_parser(&body, status);
    }

    #[test]
    fn random_text_never_panics(body in "\\PC{0,300}", status in 100u16..600) {
        every_parser(body.as_bytes(), status);
    }

    #[test]
    fn random_hunting_results_never_panic(body in hunting_body(), cut in any::<prop::sample::Index>()) {
        every_parser(&body, 400);
        let r = hunt::parse_result(&body, HuntingApi::Graph);
        prop_assert!(r.is_ok(), "well-formed shapes parse: {:?}", r.err());
        // A body cut anywhere is a Decode error or, if the cut leaves valid JSON, a result.
        let at = cut.index(body.len().max(1));
        every_parser(&body[..at.min(body.len())], 200);
    }

    #[test]
    fn random_error_objects_never_panic(code in cell(), message in cell(), status in 400u16..600) {
        let body = serde_json::to_vec(&json!({"error": {"code": code, "message": message}})).unwrap();
        every_parser(&body, status);
        let body = serde_json::to_vec(&json!({"error": code, "error_description": message, "error_codes": [90002]})).unwrap();
        every_parser(&body, status);
    }

    #[test]
    fn links_round_trip(q in "\\PC{0,200}") {
        let enc = links::encode(&q).unwrap();
        prop_assert_eq!(links::decode(&enc).unwrap(), q);
    }
}

#[test]
fn deeply_nested_bodies_are_errors_not_stack_overflows() {
    let deep = "[".repeat(100_000);
    every_parser(deep.as_bytes(), 200);
    let deep_obj = format!("{{\"schema\":{}", "{\"a\":".repeat(50_000));
    every_parser(deep_obj.as_bytes(), 500);
}
