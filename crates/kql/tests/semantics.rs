//! Operators and functions against small tables, with Kusto's documented semantics
//! (https://learn.microsoft.com/en-us/kusto/query/).
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may unwrap

use culprit_kql::{Database, EvalOptions, KqlError, KustoType, Table, Timestamp, Value, run};
use serde_json::json;

const T: &str = r#"let T = datatable(Name:string, Port:long, Dir:string, At:datetime, Extra:dynamic) [
    "svchost.exe", 53, "out", datetime(2023-08-16T04:50:00Z), dynamic({"a": {"b": 1}, "list": [1, 2]}),
    "SVCHOST.EXE", 445, "in", datetime(2023-08-16T04:55:00Z), dynamic(null),
    "lsass.exe", 88, "out", datetime(2023-08-16T05:10:00Z), dynamic({"a": {"b": 2}}),
    "chrome.exe", 443, "out", datetime(2023-08-16T05:20:00Z), dynamic([]),
];
"#;

fn opts() -> EvalOptions {
    EvalOptions {
        now: Timestamp::parse("2023-08-16T06:00:00Z").unwrap(),
        row_limit: None,
    }
}

fn q(body: &str) -> Table {
    run(&format!("{T}{body}"), &Database::new(), &opts()).unwrap_or_else(|e| panic!("{body}: {e}"))
}

fn err(body: &str) -> KqlError {
    run(&format!("{T}{body}"), &Database::new(), &opts()).unwrap_err()
}

fn s(x: &str) -> Value {
    Value::String(x.into())
}

fn i(x: i64) -> Value {
    Value::Int(x)
}

fn b(x: bool) -> Value {
    Value::Bool(x)
}

fn dt(x: &str) -> Value {
    Value::DateTime(Timestamp::parse(x).unwrap())
}

fn names(t: &Table) -> Vec<&str> {
    t.columns.iter().map(|c| c.name.as_str()).collect()
}

/// The single column of a one-column result.
fn col(body: &str) -> Vec<Value> {
    let t = q(body);
    assert_eq!(t.columns.len(), 1, "{body}: {:?}", names(&t));
    t.rows.into_iter().map(|mut r| r.remove(0)).collect()
}

fn scalar(expr: &str) -> Value {
    let t = run(&format!("print x = {expr}"), &Database::new(), &opts())
        .unwrap_or_else(|e| panic!("{expr}: {e}"));
    t.rows[0][0].clone()
}

#[test]
fn where_and_comparisons() {
    // `==` is case-sensitive, `=~` is not
    // (https://learn.microsoft.com/en-us/kusto/query/datatypes-string-operators).
    assert_eq!(
        col("T | where Name == 'svchost.exe' | project Port"),
        vec![i(53)]
    );
    assert_eq!(
        col("T | where Name =~ 'svchost.exe' | project Port"),
        vec![i(53), i(445)]
    );
    assert_eq!(
        col("T | where Name !~ 'svchost.exe' | project Port"),
        vec![i(88), i(443)]
    );
    assert_eq!(
        col("T | where Name != 'svchost.exe' | project Port"),
        vec![i(445), i(88), i(443)]
    );
    assert_eq!(
        col("T | where Port > 88 and Port <= 445 | project Port"),
        vec![i(445), i(443)]
    );
    assert_eq!(
        col("T | where Port < 88 or Port >= 445 | project Port"),
        vec![i(53), i(445)]
    );
    assert_eq!(
        col("T | where not(Dir == 'out') | project Port"),
        vec![i(445)]
    );
    assert_eq!(
        col("T | filter Port == 88 | project Name"),
        vec![s("lsass.exe")]
    );
}

#[test]
fn null_comparisons_are_not_true() {
    // A comparison with null is null, which `where` drops
    // (https://learn.microsoft.com/en-us/kusto/query/scalar-data-types/null-values).
    let t = q("T | extend B = Extra.a.b | where B > 0 or B <= 0 | project Port");
    assert_eq!(t.rows, vec![vec![i(53)], vec![i(88)]]);
    assert_eq!(scalar("isnull(long(null) == 1)"), b(true));
    assert_eq!(scalar("long(null) + 1"), Value::Null);
}

#[test]
fn in_operators() {
    // https://learn.microsoft.com/en-us/kusto/query/in-operator
    assert_eq!(
        col("T | where Port in (53, 88) | project Name"),
        vec![s("svchost.exe"), s("lsass.exe")]
    );
    assert_eq!(
        col("T | where Name in ('svchost.exe') | project Port"),
        vec![i(53)]
    );
    assert_eq!(
        col("T | where Name in~ ('svchost.exe') | project Port"),
        vec![i(53), i(445)]
    );
    assert_eq!(
        col("T | where Name !in ('svchost.exe', 'lsass.exe') | project Port"),
        vec![i(445), i(443)]
    );
    assert_eq!(
        col("T | where Name !in~ ('svchost.exe') | project Port"),
        vec![i(88), i(443)]
    );
    // A dynamic array contributes its elements; a table its first column.
    assert_eq!(
        col("let L = dynamic(['lsass.exe', 'x']); T | where Name in (L) | project Port"),
        vec![i(88)]
    );
    assert_eq!(
        col("let P = T | where Dir == 'in' | project Port; T | where Port in (P) | project Name"),
        vec![s("SVCHOST.EXE")]
    );
    assert_eq!(
        col("T | where Port in ((T | where Port > 400 | project Port)) | count"),
        vec![i(2)]
    );
}

#[test]
fn has_matches_terms_contains_matches_substrings() {
    // `has` looks for whole terms (alphanumeric runs), case-insensitively; `contains` for any
    // substring (https://learn.microsoft.com/en-us/kusto/query/datatypes-string-operators#what-is-a-term).
    assert_eq!(
        scalar("'C:\\\\Windows\\\\svchost.exe -k netsvcs' has 'svchost'"),
        b(true)
    );
    assert_eq!(
        scalar("'C:\\\\Windows\\\\svchost.exe' has 'host'"),
        b(false)
    );
    assert_eq!(
        scalar("'C:\\\\Windows\\\\svchost.exe' contains 'host'"),
        b(true)
    );
    assert_eq!(
        scalar("'C:\\\\Windows\\\\svchost.exe' has 'SVCHOST.EXE'"),
        b(true)
    );
    assert_eq!(scalar("'svchost.exe' has_cs 'SVCHOST'"), b(false));
    assert_eq!(scalar("'svchost.exe' !has 'svc'"), b(true));
    assert_eq!(scalar("'svchost.exe' contains_cs 'Host'"), b(false));
    assert_eq!(scalar("'svchost.exe' !contains 'HOST'"), b(false));
    assert_eq!(
        scalar("'powershell -enc AAA' has_any ('cmd', 'enc')"),
        b(true)
    );
    assert_eq!(
        scalar("'powershell -enc AAA' has_any ('cmd', 'en')"),
        b(false)
    );
    assert_eq!(
        scalar("'powershell -enc AAA' has_all ('powershell', 'enc')"),
        b(true)
    );
    assert_eq!(scalar("'svchost.exe' startswith 'SVC'"), b(true));
    assert_eq!(scalar("'svchost.exe' startswith_cs 'SVC'"), b(false));
    assert_eq!(scalar("'svchost.exe' endswith '.EXE'"), b(true));
    assert_eq!(scalar("'svchost.exe' !endswith '.exe'"), b(false));
    assert_eq!(
        scalar("'svchost.exe' matches regex '^svc.*\\\\.exe$'"),
        b(true)
    );
    assert_eq!(scalar("'a.b.c' hasprefix 'b'"), b(true));
}

#[test]
fn between_ago_now_datetime_and_timespans() {
    // https://learn.microsoft.com/en-us/kusto/query/between-operator (inclusive on both ends)
    assert_eq!(
        col(
            "T | where At between (datetime(2023-08-16T04:55:00Z) .. datetime(2023-08-16T05:10:00Z)) | project Port"
        ),
        vec![i(445), i(88)]
    );
    assert_eq!(
        col("T | where Port !between (80 .. 450) | project Port"),
        vec![i(53)]
    );
    // ago(x) = now() - x (https://learn.microsoft.com/en-us/kusto/query/ago-function).
    assert_eq!(
        col("T | where At > ago(1h) | project Port"),
        vec![i(88), i(443)]
    );
    assert_eq!(scalar("now()"), dt("2023-08-16T06:00:00Z"));
    assert_eq!(
        scalar("datetime(2023-08-16) + 1d + 2h + 30m + 15s + 500ms"),
        dt("2023-08-17T02:30:15.5Z")
    );
    assert_eq!(
        scalar("datetime(2023-08-16T01:00:00Z) - datetime(2023-08-16T00:00:00Z) == 1h"),
        b(true)
    );
    assert_eq!(
        scalar("bin(datetime(2023-08-16T04:53:47Z), 5m)"),
        dt("2023-08-16T04:50:00Z")
    );
    assert_eq!(scalar("bin(17, 5)"), i(15));
    assert_eq!(
        scalar("todatetime('2023-08-16T04:53:47Z')"),
        dt("2023-08-16T04:53:47Z")
    );
}

#[test]
fn conversions_and_strings() {
    assert_eq!(scalar("tostring(5)"), s("5"));
    assert_eq!(scalar("toint('42')"), i(42));
    assert_eq!(scalar("tolong('x')"), Value::Null);
    assert_eq!(scalar("tobool('true')"), b(true));
    assert_eq!(scalar("strcat('a', 1, 'b')"), s("a1b"));
    assert_eq!(
        scalar("split('a,b,c', ',')"),
        Value::Dynamic(json!(["a", "b", "c"]))
    );
    assert_eq!(
        scalar("split('a,b,c', ',', 1)"),
        Value::Dynamic(json!(["b"]))
    );
    assert_eq!(scalar("tolower('AbC')"), s("abc"));
    assert_eq!(scalar("toupper('AbC')"), s("ABC"));
    assert_eq!(
        scalar("extract('pid=([0-9]+)', 1, 'x pid=123 y')"),
        s("123")
    );
    assert_eq!(
        scalar("pack_array(1, 'a')"),
        Value::Dynamic(json!([1, "a"]))
    );
    assert_eq!(scalar("array_length(dynamic([1,2,3]))"), i(3));
    assert_eq!(scalar("array_length('x')"), Value::Null);
}

#[test]
fn conditionals_and_emptiness() {
    assert_eq!(
        col("T | project X = iff(Port > 100, 'hi', 'lo')"),
        vec![s("lo"), s("hi"), s("lo"), s("hi")]
    );
    assert_eq!(
        col("T | project X = iif(Dir == 'in', 1, 0) | summarize sum(X)"),
        vec![i(1)]
    );
    assert_eq!(
        col("T | project X = case(Port < 60, 'a', Port < 100, 'b', 'c')"),
        vec![s("a"), s("c"), s("b"), s("c")]
    );
    // coalesce takes the first non-null (https://learn.microsoft.com/en-us/kusto/query/coalesce-function).
    assert_eq!(scalar("coalesce(long(null), 2, 3)"), i(2));
    // isempty is true for null and "" (https://learn.microsoft.com/en-us/kusto/query/isempty-function).
    assert_eq!(scalar("isempty('')"), b(true));
    assert_eq!(scalar("isempty(long(null))"), b(true));
    assert_eq!(scalar("isnotempty(' ')"), b(true));
    assert_eq!(scalar("isnull(long(null))"), b(true));
    assert_eq!(scalar("isnotnull(1)"), b(true));
    // Strings are never null: isnull('') is false.
    assert_eq!(scalar("isnull('')"), b(false));
}

#[test]
fn dynamic_access_and_parse_json() {
    assert_eq!(
        col("T | project B = Extra.a.b"),
        vec![
            Value::Dynamic(json!(1)),
            Value::Null,
            Value::Dynamic(json!(2)),
            Value::Null
        ]
    );
    assert_eq!(
        col("T | project B = Extra['a']['b'] | where isnotnull(B) | count"),
        vec![i(2)]
    );
    assert_eq!(
        col("T | project B = tolong(Extra.list[1]) | where isnotnull(B)"),
        vec![i(2)]
    );
    assert_eq!(scalar("tostring(parse_json('{\"k\": \"v\"}').k)"), s("v"));
    assert_eq!(scalar("tostring(todynamic('{\"k\": [1]}')['k'])"), s("[1]"));
    let t = q("T | take 1 | project Extra");
    assert_eq!(t.columns[0].ty, KustoType::Object);
}

#[test]
fn project_family() {
    let t = q("T | project Name, P = Port + 1 | take 1");
    assert_eq!(names(&t), vec!["Name", "P"]);
    assert_eq!(t.rows, vec![vec![s("svchost.exe"), i(54)]]);
    assert_eq!(
        names(&q("T | project-away Extra, D*")),
        vec!["Name", "Port", "At"]
    );
    assert_eq!(
        names(&q("T | project-keep Port, Name")),
        vec!["Name", "Port"]
    );
    assert_eq!(
        names(&q("T | project-rename Process = Name")),
        vec!["Process", "Port", "Dir", "At", "Extra"]
    );
    assert_eq!(
        names(&q("T | project-reorder At, Port")),
        vec!["At", "Port", "Name", "Dir", "Extra"]
    );
    let t = q("T | extend Port = Port * 2, Double = Port * 2 | take 1 | project Port, Double");
    // extend sees the columns of its own earlier assignments.
    assert_eq!(t.rows, vec![vec![i(106), i(212)]]);
    assert!(
        err("T | project Nope")
            .to_string()
            .contains("Failed to resolve scalar expression named 'Nope'")
    );
}

#[test]
fn summarize_aggregates() {
    // https://learn.microsoft.com/en-us/kusto/query/summarize-operator
    let t = q(
        "T | summarize count(), dcount(Name), countif(Port > 100), make_set(Dir), make_list(Port), min(Port), max(Port), sum(Port), avg(Port), take_any(Dir) by Dir | order by Dir asc",
    );
    assert_eq!(
        names(&t),
        vec![
            "Dir",
            "count_",
            "dcount_Name",
            "countif_",
            "set_Dir",
            "list_Port",
            "min_Port",
            "max_Port",
            "sum_Port",
            "avg_Port",
            "any_Dir"
        ]
    );
    assert_eq!(
        t.rows[0],
        vec![
            s("in"),
            i(1),
            i(1),
            i(1),
            Value::Dynamic(json!(["in"])),
            Value::Dynamic(json!([445])),
            i(445),
            i(445),
            i(445),
            Value::Real(445.0),
            s("in")
        ]
    );
    assert_eq!(
        t.rows[1][..9],
        [
            s("out"),
            i(3),
            i(3),
            i(1),
            Value::Dynamic(json!(["out"])),
            Value::Dynamic(json!([53, 88, 443])),
            i(53),
            i(443),
            i(584)
        ]
    );
    assert_eq!(t.columns[1].ty, KustoType::Int64);
    // Without `by`, an empty input gives one row.
    assert_eq!(col("T | where Port < 0 | summarize count()"), vec![i(0)]);
    assert!(
        q("T | where Port < 0 | summarize count() by Dir")
            .rows
            .is_empty()
    );
    // Expressions over aggregates, and bin() in by.
    assert_eq!(
        q("T | summarize N = count() * 10 by bin(At, 1h) | order by At asc").rows,
        vec![
            vec![dt("2023-08-16T04:00:00Z"), i(20)],
            vec![dt("2023-08-16T05:00:00Z"), i(20)]
        ]
    );
}

#[test]
fn arg_max_and_arg_min_return_the_row() {
    // https://learn.microsoft.com/en-us/kusto/query/arg-max-aggregation-function
    let t = q("T | summarize arg_max(Port, Name, At) by Dir | order by Dir asc");
    assert_eq!(names(&t), vec!["Dir", "Port", "Name", "At"]);
    assert_eq!(
        t.rows[1],
        vec![
            s("out"),
            i(443),
            s("chrome.exe"),
            dt("2023-08-16T05:20:00Z")
        ]
    );
    let t = q("T | summarize arg_min(Port, *) by Dir | order by Dir asc");
    assert_eq!(names(&t), vec!["Dir", "Port", "Name", "At", "Extra"]);
    assert_eq!(t.rows[1][..3], [s("out"), i(53), s("svchost.exe")]);
    let t = q("T | summarize (Last, Who) = arg_max(At, Name)");
    assert_eq!(names(&t), vec!["Last", "Who"]);
    assert_eq!(
        t.rows,
        vec![vec![dt("2023-08-16T05:20:00Z"), s("chrome.exe")]]
    );
}

#[test]
fn sort_top_take_distinct_count() {
    // sort defaults to descending (https://learn.microsoft.com/en-us/kusto/query/sort-operator).
    assert_eq!(
        col("T | sort by Port | project Port"),
        vec![i(445), i(443), i(88), i(53)]
    );
    assert_eq!(
        col("T | order by Dir asc, Port desc | project Port"),
        vec![i(445), i(443), i(88), i(53)]
    );
    assert_eq!(
        col("T | top 2 by Port asc | project Port"),
        vec![i(53), i(88)]
    );
    assert_eq!(col("T | take 1 | project Port"), vec![i(53)]);
    assert_eq!(col("T | limit 2 | count"), vec![i(2)]);
    assert_eq!(col("T | distinct Dir"), vec![s("out"), s("in")]);
    assert_eq!(
        q("T | extend L = tolower(Name) | distinct Dir, L | count").rows,
        vec![vec![i(4)]]
    );
    assert_eq!(
        q("T | extend L = tolower(Name) | distinct L | count").rows,
        vec![vec![i(3)]]
    );
    assert_eq!(col("T | count"), vec![i(4)]);
    // Nulls sort last descending, first ascending.
    assert_eq!(
        col("T | project B = tolong(Extra.a.b) | sort by B asc"),
        vec![Value::Null, Value::Null, i(1), i(2)]
    );
    assert_eq!(
        col("T | project B = tolong(Extra.a.b) | sort by B desc"),
        vec![i(2), i(1), Value::Null, Value::Null]
    );
}

const J: &str = r#"let L = datatable(K:string, V:long) ["a", 1, "a", 2, "b", 3, "c", 4];
let R = datatable(K:string, W:long) ["a", 10, "a", 20, "b", 30, "d", 40];
"#;

fn joined(kind: &str) -> Vec<Vec<Value>> {
    let text = format!("{J}L | join {kind} R on K");
    let mut t = run(&text, &Database::new(), &opts()).unwrap();
    t.rows.sort_by_key(|r| format!("{r:?}"));
    t.rows
}

#[test]
fn join_kinds() {
    // https://learn.microsoft.com/en-us/kusto/query/join-operator: the default, innerunique,
    // keeps the first left row of each key.
    let default = joined("");
    assert_eq!(default, joined("kind=innerunique"));
    assert_eq!(
        default,
        vec![
            vec![s("a"), i(1), s("a"), i(10)],
            vec![s("a"), i(1), s("a"), i(20)],
            vec![s("b"), i(3), s("b"), i(30)]
        ]
    );
    assert_eq!(joined("kind=inner").len(), 5);
    let lo = joined("kind=leftouter");
    assert_eq!(lo.len(), 6);
    assert!(lo.contains(&vec![s("c"), i(4), s(""), Value::Null]));
    let t = run(
        &format!("{J}L | join kind=inner R on K | take 1"),
        &Database::new(),
        &opts(),
    )
    .unwrap();
    assert_eq!(names(&t), vec!["K", "V", "K1", "W"]);
    assert_eq!(joined("kind=leftanti"), vec![vec![s("c"), i(4)]]);
    assert_eq!(joined("kind=leftsemi").len(), 3);
    let rs = joined("kind=rightsemi");
    assert_eq!(rs.len(), 3);
    assert!(rs.iter().all(|r| r.len() == 2 && r[0] != s("d")));
    let t = run(
        &format!("{J}L | join kind=inner (R | project K2 = K, W) on $left.K == $right.K2 | count"),
        &Database::new(),
        &opts(),
    )
    .unwrap();
    assert_eq!(t.rows, vec![vec![i(5)]]);
}

#[test]
fn union_is_outer_by_name() {
    // https://learn.microsoft.com/en-us/kusto/query/union-operator
    let t = run(
        &format!("{J}union withsource=Src L, R | order by Src asc, K asc"),
        &Database::new(),
        &opts(),
    )
    .unwrap();
    assert_eq!(names(&t), vec!["Src", "K", "V", "W"]);
    assert_eq!(t.rows[0], vec![s("L"), s("a"), i(1), Value::Null]);
    assert_eq!(t.rows.len(), 8);
    let t = run(
        &format!("{J}union kind=inner L, R | count"),
        &Database::new(),
        &opts(),
    )
    .unwrap();
    assert_eq!(t.rows, vec![vec![i(8)]]);
    let t = run(
        &format!("{J}L | union (R | where W > 30) | project K"),
        &Database::new(),
        &opts(),
    )
    .unwrap();
    assert_eq!(t.rows.len(), 5);
}

#[test]
fn mv_expand_expands_arrays_and_bags() {
    // A null expands to one row, an empty array to none
    // (https://learn.microsoft.com/en-us/kusto/query/mv-expand-operator).
    assert_eq!(q("T | mv-expand Extra | count").rows, vec![vec![i(4)]]);
    assert_eq!(
        col("T | where Port == 53 | mv-expand L = Extra.list to typeof(long) | project L"),
        vec![i(1), i(2)]
    );
    let t = q("T | where Port == 53 | mv-expand with_itemindex=Ix X = Extra.list | project Ix, X");
    assert_eq!(
        t.rows,
        vec![
            vec![i(0), Value::Dynamic(json!(1))],
            vec![i(1), Value::Dynamic(json!(2))]
        ]
    );
    assert_eq!(
        q("print d = dynamic({'k': 1, 'j': 2}) | mvexpand d | count").rows,
        vec![vec![i(2)]]
    );
}

#[test]
fn let_scalars_tabulars_and_functions() {
    assert_eq!(
        col("let lim = 100; T | where Port < lim | project Port"),
        vec![i(53), i(88)]
    );
    assert_eq!(
        col("let f = (p:long) { p * 2 }; T | take 1 | project X = f(21)"),
        vec![i(42)]
    );
    assert_eq!(
        col("let g = (t:(*)) { t | where Port > 400 }; g(T) | count"),
        vec![i(2)]
    );
    assert_eq!(
        col("let N = toscalar(T | summarize max(Port)); T | where Port == N | project Name"),
        vec![s("SVCHOST.EXE")]
    );
    assert_eq!(col("T | take 1 | project Port | render table"), vec![i(53)]);
}

#[test]
fn errors_name_the_position() {
    let e = run(
        "DeviceProcessEvents\n| where FileName == 'x'\n| make-series count() on Timestamp step 1h",
        &Database::new(),
        &opts(),
    )
    .unwrap_err();
    assert_eq!(e.to_string(), "unsupported operator make-series at 3:3");
    let e = run(
        "DeviceProcessEvents | where x ==",
        &Database::new(),
        &opts(),
    )
    .unwrap_err();
    assert!(
        matches!(
            e,
            KqlError::Syntax {
                line: 1,
                column: 33,
                ..
            }
        ),
        "{e:?}"
    );
    let e = run(
        "DeviceProcessEvents | frobnicate",
        &Database::new(),
        &opts(),
    )
    .unwrap_err();
    assert!(
        e.to_string().contains("unknown operator 'frobnicate'"),
        "{e}"
    );
    let e = run("print x = percentile_tdigest(1)", &Database::new(), &opts()).unwrap_err();
    assert!(matches!(e, KqlError::Unsupported { .. }), "{e:?}");
}

#[test]
fn row_limit_truncates_the_output() {
    let o = EvalOptions {
        row_limit: Some(2),
        ..opts()
    };
    let t = run(&format!("{T}T"), &Database::new(), &o).unwrap();
    assert_eq!(t.rows.len(), 2);
}
