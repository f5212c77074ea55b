//! The operators that run on a stored table's columns must give exactly what the row
//! evaluator gives. `let T = Table; T | ...` is evaluated by rows (a `let` holds built rows),
//! `Table | ...` by columns; both are compared cell by cell, types included.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use culprit_kql::columnar::ColumnarTable;
use culprit_kql::{Column, Database, EvalOptions, KustoType, Table, Timestamp, Value, run};

fn scenario_db() -> Database {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/scenarios/lsass_01/mde");
    Database::from_dir(&dir).unwrap()
}

fn opts() -> EvalOptions {
    EvalOptions {
        now: Timestamp::parse("2023-08-16T06:00:00Z").unwrap(),
        row_limit: None,
    }
}

/// Runs `tail` over `table` both ways and asserts the same result.
fn same(db: &Database, table: &str, tail: &str) -> Table {
    let by_columns =
        run(&format!("{table}\n{tail}"), db, &opts()).unwrap_or_else(|e| panic!("{tail}: {e}"));
    let by_rows = run(&format!("let T = {table};\nT\n{tail}"), db, &opts())
        .unwrap_or_else(|e| panic!("{tail}: {e}"));
    assert_eq!(by_columns.columns, by_rows.columns, "columns of {tail}");
    assert_eq!(by_columns.rows.len(), by_rows.rows.len(), "rows of {tail}");
    for (a, b) in by_columns.rows.iter().zip(&by_rows.rows) {
        assert_eq!(format!("{a:?}"), format!("{b:?}"), "a row of {tail}");
    }
    by_columns
}

#[test]
fn leading_operators_agree_with_the_row_evaluator() {
    let db = scenario_db();
    let tails = [
        "| where ActionType == 'ConnectionSuccess'",
        "| where RemotePort == 53 and InitiatingProcessFileName =~ 'SVCHOST.EXE'",
        "| where RemotePort > 1000 or RemoteIP startswith '192.'",
        "| where not(RemoteIP has '168') | take 7",
        "| where Timestamp between (datetime(2023-08-16T04:00:00Z) .. datetime(2023-08-16T05:00:00Z))",
        "| where Timestamp > ago(2h) and isnotempty(RemoteUrl)",
        "| where RemoteIP in ('192.168.1.4', '10.0.0.1') | count",
        "| where InitiatingProcessId > 0 and LocalPort < RemotePort",
        "| where AdditionalFields has 'ProcessGuid'",
        "| where tostring(AdditionalFields.ProcessGuid) != ''",
        "| where InitiatingProcessFileSize == 0",
        "| where InitiatingProcessFileSize != 0 | count",
        "| where RemotePort != 53 and LocalPort >= 50000",
        "| where Timestamp <= datetime(2023-08-16T04:55:00Z) and Timestamp > datetime(2023-08-16T04:53:50Z)",
        "| where RemotePort < 100.5",
        "| where InitiatingProcessId == '1048'",
        "| extend Port = RemotePort * 2, Proc = tolower(InitiatingProcessFileName) | where Port > 100 | project Proc, Port, RemoteIP",
        "| extend RemotePort = tostring(RemotePort) | where RemotePort == '53' | take 3",
        "| project Timestamp, RemoteIP, RemoteIP, Ip2 = RemoteIP, N = 1",
        "| project-away Initiating* | project-rename Addr = RemoteIP | project-reorder Addr, LocalPort | take 5",
        "| project-keep Device*, Remote* | take 4",
        "| take 10 | where RemotePort == 53",
        "| summarize count() by InitiatingProcessFileName | sort by InitiatingProcessFileName asc",
        "| where ActionType == 'ConnectionSuccess' | summarize Destinations = dcount(RemoteIP), Ports = make_set(RemotePort) by DeviceId, InitiatingProcessId | sort by InitiatingProcessId asc",
        "| summarize arg_max(Timestamp, *) by InitiatingProcessFileName | sort by InitiatingProcessFileName asc",
        "| summarize n = countif(RemotePort == 53), first = min(Timestamp), last = max(Timestamp), s = sum(LocalPort) by bin(Timestamp, 10m) | sort by Timestamp asc",
        "| summarize count()",
        "| where RemoteIP == 'no such address' | summarize count(), dcount(RemoteIP)",
        "| count",
        "| extend H = hash(RemoteIP) | summarize by H | count",
    ];
    for tail in tails {
        same(&db, "DeviceNetworkEvents", tail);
    }
    let t = same(
        &db,
        "DeviceProcessEvents",
        "| where FileName =~ 'powershell.exe' | project ProcessId, ProcessCommandLine | sort by ProcessId asc",
    );
    assert!(!t.rows.is_empty(), "the scenario has PowerShell processes");
    same(
        &db,
        "DeviceEvents",
        "| where ActionType == 'CreateRemoteThreadApiCall' | project Timestamp, InitiatingProcessId, ProcessId",
    );
}

#[test]
fn a_stored_table_converts_back_to_the_rows_it_was_built_from() {
    let db = scenario_db();
    let rows = db.get("DeviceNetworkEvents").unwrap();
    let again = ColumnarTable::from_table(rows.clone()).to_table();
    assert_eq!(again, rows);
    // Strings are stored once per distinct value: far less than a `Value` per cell.
    let stored = db.table("DeviceNetworkEvents").unwrap();
    let cells = stored.len() * stored.columns().len();
    assert!(
        stored.heap_bytes() < cells * size_of::<Value>(),
        "{} bytes for {cells} cells",
        stored.heap_bytes()
    );
}

#[test]
fn cells_of_the_wrong_type_are_kept_and_compared_as_the_rows_are() {
    let mut t = Table::new(vec![
        Column::new("Name", KustoType::String),
        Column::new("N", KustoType::Int64),
    ]);
    t.rows.push(vec![Value::String("a".into()), Value::Int(1)]);
    t.rows.push(vec![Value::Null, Value::String("2".into())]);
    t.rows.push(vec![Value::String("b".into()), Value::Null]);
    let mut db = Database::new();
    db.insert("T0", t);
    let out = same(
        &db,
        "T0",
        "| where N > 0 or isempty(Name) | project Name, N",
    );
    assert_eq!(out.rows.len(), 2);
    // A null string is the empty string (Kusto strings are never null).
    assert_eq!(out.rows[1][0], Value::String(String::new()));
}
