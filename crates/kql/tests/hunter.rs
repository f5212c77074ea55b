//! The queries Culprit's hunter sends, on small tables and on the lsass_01 scenario.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may unwrap

use culprit_kql::{
    Column, Database, EvalOptions, KustoType, Table, Timestamp, Value, parse, printer, run,
};

const HUNT: &str = r#"let ip = dynamic(["192.168.1.41", "::ffff:192.168.1.41"]);
let start = datetime(2023-08-16T04:49:03.0000000Z);
let end = datetime(2023-08-16T05:04:23.0000000Z);
let devices = union
    (DeviceNetworkInfo | where Timestamp between ((start - 1d) .. end) | mv-expand a = todynamic(IPAddresses) | where tostring(a.IPAddress) in (ip) | distinct DeviceId),
    (DeviceNetworkEvents | where Timestamp between (start .. end) | where LocalIP in (ip) or (ActionType == "InboundConnectionAccepted" and RemoteIP in (ip)) | distinct DeviceId);
union withsource=TableName DeviceNetworkEvents, DeviceProcessEvents, DeviceEvents
| where Timestamp between ((start - 1h) .. (end + 10m))
| where DeviceId in (devices)
| union (DeviceInfo | where Timestamp between ((start - 1d) .. end) | where DeviceId in (devices) | extend TableName = "DeviceInfo")
| union (DeviceNetworkInfo | where Timestamp between ((start - 1d) .. end) | where DeviceId in (devices) | extend TableName = "DeviceNetworkInfo")"#;

fn opts() -> EvalOptions {
    EvalOptions {
        now: Timestamp::parse("2023-08-16T06:00:00Z").unwrap(),
        row_limit: None,
    }
}

fn ts(s: &str) -> Value {
    Value::DateTime(Timestamp::parse(s).unwrap())
}

fn s(x: &str) -> Value {
    Value::String(x.to_owned())
}

/// A Device* table under its full schema, with the given cells set by column name.
fn device_rows(table: &str, rows: &[&[(&str, Value)]]) -> Table {
    let cols = culprit_kql::schema::columns(table).unwrap();
    let mut t = Table::new(cols.clone());
    for r in rows {
        let mut row = vec![Value::Null; cols.len()];
        for (name, v) in r.iter() {
            let i = cols.iter().position(|c| c.name == *name).unwrap();
            row[i] = v.clone();
        }
        t.rows.push(row);
    }
    t
}

fn small_db() -> Database {
    let mut db = Database::new();
    let ips = |a: &str| Value::Dynamic(serde_json::json!([{"IPAddress": a, "SubnetPrefix": 24}]));
    db.insert(
        "DeviceNetworkInfo",
        device_rows(
            "DeviceNetworkInfo",
            &[
                &[
                    ("Timestamp", ts("2023-08-16T01:00:00Z")),
                    ("DeviceId", s("dev-a")),
                    ("IPAddresses", ips("192.168.1.41")),
                ],
                &[
                    ("Timestamp", ts("2023-08-16T01:00:00Z")),
                    ("DeviceId", s("dev-b")),
                    ("IPAddresses", ips("192.168.1.99")),
                ],
                // Too old: outside (start - 1d).
                &[
                    ("Timestamp", ts("2023-08-10T01:00:00Z")),
                    ("DeviceId", s("dev-old")),
                    ("IPAddresses", ips("192.168.1.41")),
                ],
            ],
        ),
    );
    db.insert(
        "DeviceNetworkEvents",
        device_rows(
            "DeviceNetworkEvents",
            &[
                // dev-c accepted a connection addressed to the IP: it is the host too.
                &[
                    ("Timestamp", ts("2023-08-16T04:55:00Z")),
                    ("DeviceId", s("dev-c")),
                    ("ActionType", s("InboundConnectionAccepted")),
                    ("RemoteIP", s("192.168.1.41")),
                    ("LocalIP", s("10.0.0.1")),
                ],
                // dev-d only talked to the IP: not the host.
                &[
                    ("Timestamp", ts("2023-08-16T04:56:00Z")),
                    ("DeviceId", s("dev-d")),
                    ("ActionType", s("ConnectionSuccess")),
                    ("RemoteIP", s("192.168.1.41")),
                    ("LocalIP", s("10.0.0.2")),
                ],
                &[
                    ("Timestamp", ts("2023-08-16T04:57:00Z")),
                    ("DeviceId", s("dev-a")),
                    ("ActionType", s("ConnectionSuccess")),
                    ("RemoteIP", s("8.8.8.8")),
                    ("LocalIP", s("192.168.1.41")),
                ],
                // In the device set but outside the hour before start.
                &[
                    ("Timestamp", ts("2023-08-16T03:00:00Z")),
                    ("DeviceId", s("dev-a")),
                    ("ActionType", s("ConnectionSuccess")),
                ],
            ],
        ),
    );
    db.insert(
        "DeviceProcessEvents",
        device_rows(
            "DeviceProcessEvents",
            &[
                &[
                    ("Timestamp", ts("2023-08-16T04:50:00Z")),
                    ("DeviceId", s("dev-a")),
                    ("FileName", s("evil.exe")),
                ],
                &[
                    ("Timestamp", ts("2023-08-16T04:50:00Z")),
                    ("DeviceId", s("dev-b")),
                    ("FileName", s("benign.exe")),
                ],
            ],
        ),
    );
    db.insert(
        "DeviceInfo",
        device_rows(
            "DeviceInfo",
            &[&[
                ("Timestamp", ts("2023-08-16T00:00:00Z")),
                ("DeviceId", s("dev-a")),
                ("DeviceName", s("a.example")),
            ]],
        ),
    );
    db
}

fn column<'t>(t: &'t Table, name: &str) -> Vec<&'t Value> {
    let i = t.column_index(name).unwrap();
    t.rows.iter().map(|r| &r[i]).collect()
}

#[test]
fn hunter_query_finds_the_devices_and_their_telemetry() {
    let t = run(HUNT, &small_db(), &opts()).unwrap();
    // withsource column first, then the union of schemas in first-seen order.
    assert_eq!(t.columns[0], Column::new("TableName", KustoType::String));
    assert_eq!(t.columns[1].name, "Timestamp");
    assert!(t.column_index("FileName").is_some());
    assert!(
        t.column_index("NetworkAdapterName").is_some(),
        "DeviceNetworkInfo columns joined the outer union"
    );
    let mut got: Vec<(String, String)> = t
        .rows
        .iter()
        .map(|r| {
            (
                r[0].as_str().unwrap().to_owned(),
                r[t.column_index("DeviceId").unwrap()]
                    .as_str()
                    .unwrap()
                    .to_owned(),
            )
        })
        .collect();
    got.sort();
    assert_eq!(
        got,
        vec![
            ("DeviceInfo".into(), "dev-a".into()),
            ("DeviceNetworkEvents".into(), "dev-a".into()),
            ("DeviceNetworkEvents".into(), "dev-c".into()),
            ("DeviceNetworkInfo".into(), "dev-a".into()),
            ("DeviceProcessEvents".into(), "dev-a".into()),
        ]
    );
    // Missing cells of other tables' columns are null (strings: empty).
    let fi = t.column_index("FileName").unwrap();
    let ni = t.column_index("NetworkAdapterName").unwrap();
    for r in &t.rows {
        if r[0] == s("DeviceInfo") {
            assert_eq!(r[fi], s(""));
            assert_eq!(r[ni], s(""));
        }
    }
}

#[test]
fn hunter_query_round_trips_through_the_printer() {
    let q = parse(HUNT).unwrap();
    let printed = printer::print(&q);
    assert_eq!(parse(&printed).unwrap(), q, "{printed}");
    let db = small_db();
    assert_eq!(
        culprit_kql::evaluate(&parse(&printed).unwrap(), &db, &opts()).unwrap(),
        run(HUNT, &db, &opts()).unwrap()
    );
}

#[test]
fn missing_device_tables_evaluate_empty_with_their_schema() {
    let t = run(
        "DeviceRegistryEvents | where ActionType == 'x'",
        &Database::new(),
        &opts(),
    )
    .unwrap();
    assert!(t.rows.is_empty());
    assert_eq!(
        t.columns,
        culprit_kql::schema::columns("DeviceRegistryEvents").unwrap()
    );
    let t = run(HUNT, &Database::new(), &opts()).unwrap();
    assert!(t.rows.is_empty());
    assert_eq!(t.columns[0].name, "TableName");
}

#[test]
fn unknown_table_is_a_semantic_error_naming_it() {
    let e = run("Foo | take 1", &Database::new(), &opts()).unwrap_err();
    assert!(
        e.to_string()
            .contains("Failed to resolve table or column expression named 'Foo'"),
        "{e}"
    );
    assert!(
        matches!(
            e,
            culprit_kql::KqlError::Semantic {
                line: 1,
                column: 1,
                ..
            }
        ),
        "{e:?}"
    );
}

fn scenario_db(name: &str) -> Database {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/scenarios")
        .join(name)
        .join("mde");
    Database::from_dir(&dir).unwrap()
}

#[test]
fn hunter_query_on_the_lsass_01_scenario() {
    let db = scenario_db("lsass_01");
    let t = run(HUNT, &db, &opts()).unwrap();
    let ids: std::collections::BTreeSet<&str> = column(&t, "DeviceId")
        .into_iter()
        .filter_map(|v| v.as_str())
        .collect();
    let info = db.get("DeviceNetworkInfo").unwrap();
    let expected_id = info.rows[0][info.column_index("DeviceId").unwrap()]
        .as_str()
        .unwrap();
    assert_eq!(ids.into_iter().collect::<Vec<_>>(), vec![expected_id]);
    // Every network and process event of that device in the window is returned.
    let window = |tbl: &str| {
        let q = format!(
            "{tbl} | where Timestamp between (datetime(2023-08-16T03:49:03Z) .. datetime(2023-08-16T05:14:23Z)) | where DeviceId == '{expected_id}' | count"
        );
        run(&q, &db, &opts()).unwrap().rows[0][0].as_i64().unwrap()
    };
    let per_table = |name: &str| {
        column(&t, "TableName")
            .into_iter()
            .filter(|v| v.as_str() == Some(name))
            .count() as i64
    };
    assert_eq!(
        per_table("DeviceNetworkEvents"),
        window("DeviceNetworkEvents")
    );
    assert_eq!(
        per_table("DeviceProcessEvents"),
        window("DeviceProcessEvents")
    );
    assert_eq!(per_table("DeviceEvents"), window("DeviceEvents"));
    assert!(per_table("DeviceNetworkEvents") > 0);
    assert_eq!(per_table("DeviceNetworkInfo"), 1);
}
