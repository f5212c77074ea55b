//! Properties: printing never lets a value change a query's structure, and no input panics.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may unwrap

use culprit_kql::ast::*;
use culprit_kql::{Database, EvalOptions, Timestamp, parse, printer, run};
use culprit_model::Duration;
use proptest::prelude::*;

/// `T | where Col == <lit> | extend ["<name>"] = <lit>` around arbitrary literals and names.
fn query_with(lit: Literal, name: &str) -> Query {
    let tab = TabularExpr {
        source: Source::Expr(Expr::Name("DeviceProcessEvents".into())),
        ops: vec![
            Operator::Where {
                pred: Expr::Binary {
                    op: BinOp::Eq,
                    left: Box::new(Expr::Name("FileName".into())),
                    right: Box::new(Expr::Lit(lit.clone())),
                    pos: Pos::default(),
                },
                pos: Pos::default(),
            },
            Operator::Extend {
                exprs: vec![NamedExpr {
                    name: Some(name.to_owned()),
                    expr: Expr::Lit(lit),
                }],
                pos: Pos::default(),
            },
        ],
    };
    Query {
        statements: vec![Statement::Tabular(tab)],
    }
}

fn assert_round_trip(q: &Query) -> Result<(), TestCaseError> {
    let printed = printer::print(q);
    let back = parse(&printed).map_err(|e| TestCaseError::fail(format!("{e}\n{printed}")))?;
    prop_assert_eq!(&back, q, "{}", printed);
    Ok(())
}

fn name_strategy() -> impl Strategy<Value = String> {
    any::<String>().prop_filter("names are not empty", |s| {
        !s.is_empty() && !s.starts_with('(')
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn string_literals_round_trip(s in any::<String>(), name in name_strategy()) {
        assert_round_trip(&query_with(Literal::String(s), &name))?;
    }

    #[test]
    fn quoted_strings_read_back_as_the_same_value(s in any::<String>()) {
        let q = parse(&format!("print x = {}", printer::quote_string(&s))).unwrap();
        let Statement::Tabular(TabularExpr { source: Source::Print { exprs, .. }, .. }) = &q.statements[0] else { panic!() };
        prop_assert_eq!(&exprs[0].expr, &Expr::Lit(Literal::String(s.clone())));
        if let Some(v) = printer::quote_verbatim(&s) {
            let q = parse(&format!("print x = {v}")).unwrap();
            let Statement::Tabular(TabularExpr { source: Source::Print { exprs, .. }, .. }) = &q.statements[0] else { panic!() };
            prop_assert_eq!(&exprs[0].expr, &Expr::Lit(Literal::String(s)));
        }
    }

    #[test]
    fn datetimes_and_timespans_round_trip(ticks in -60_000_000_000_000_000i64..60_000_000_000_000_000i64, span in -(1i64 << 60)..(1i64 << 60)) {
        assert_round_trip(&query_with(Literal::DateTime(Timestamp(ticks)), "t"))?;
        assert_round_trip(&query_with(Literal::TimeSpan(Duration(span)), "d"))?;
    }

    #[test]
    fn dynamic_literals_round_trip(a in any::<String>(), b in any::<String>(), n in any::<i64>()) {
        let v = serde_json::json!([a.clone(), {b: a}, n, null, true]);
        assert_round_trip(&query_with(Literal::Dynamic(v), "d"))?;
    }

    #[test]
    fn numbers_round_trip(n in any::<i64>(), r in -1e300f64..1e300) {
        prop_assume!(n != i64::MIN);
        assert_round_trip(&query_with(Literal::Int(n), "n"))?;
        assert_round_trip(&query_with(Literal::Real(r), "r"))?;
    }

    /// Arbitrary text never panics the parser, and whatever parses evaluates without panicking.
    #[test]
    fn arbitrary_text_never_panics(s in any::<String>()) {
        if let Ok(q) = parse(&s) {
            let _ = culprit_kql::evaluate(&q, &Database::new(), &EvalOptions { now: Timestamp(0), row_limit: Some(100) });
        }
    }

    /// Token soup from KQL's own vocabulary reaches deeper into the grammar than random text.
    #[test]
    fn kql_token_soup_never_panics(words in proptest::collection::vec(proptest::sample::select(SOUP), 0..40)) {
        let text = words.join(" ");
        if let Ok(q) = parse(&text) {
            let printed = printer::print(&q);
            prop_assert_eq!(parse(&printed).ok(), Some(q.clone()), "{}", printed);
            let _ = run(&text, &Database::new(), &EvalOptions { now: Timestamp(0), row_limit: Some(100) });
        }
    }
}

const SOUP: &[&str] = &[
    "DeviceProcessEvents",
    "DeviceNetworkEvents",
    "|",
    "where",
    "project",
    "extend",
    "summarize",
    "by",
    "count()",
    "dcount(",
    ")",
    "(",
    ",",
    "=",
    "==",
    "!=",
    "=~",
    "has",
    "!has",
    "contains",
    "in",
    "!in",
    "in~",
    "between",
    "..",
    "and",
    "or",
    "not(",
    "x",
    "FileName",
    "Timestamp",
    "ago(1d)",
    "5m",
    "1.5",
    "\"a\"",
    "@'b''c'",
    "dynamic([1,\"x\"])",
    "datetime(2023-01-01)",
    "let",
    ";",
    "union",
    "join",
    "kind=inner",
    "on",
    "$left.x",
    "$right.x",
    "mv-expand",
    "take",
    "10",
    "sort",
    "asc",
    "desc",
    "top",
    "distinct",
    "*",
    "[",
    "]",
    "{",
    "}",
    "-",
    "+",
    "/",
    "%",
    "render",
    "timechart",
    "arg_max(",
    "iff(",
    "case(",
    "toscalar(",
    "materialize(",
    "datatable(x:long)",
    "[1,2]",
    "print",
    "range",
    "from",
    "to",
    "step",
    "project-away",
    "project-rename",
    "lookup",
    "parse",
    "with",
    "evaluate",
    "bag_unpack(",
    "matches",
    "regex",
    "has_any",
    "startswith",
    "endswith",
    "tostring(",
    "todynamic(",
    ".",
    "a.b",
];

#[test]
fn deep_nesting_is_an_error_not_a_crash() {
    let deep = format!("print x = {}1{}", "(".repeat(100_000), ")".repeat(100_000));
    assert!(parse(&deep).is_err());
    let deep_neg = format!("print x = {}1", "-".repeat(100_000));
    assert!(parse(&deep_neg).is_err());
    let chain = format!("print x = 1{}", " + 1".repeat(100_000));
    assert!(parse(&chain).is_err());
    let members = format!("print x = a{}", ".b".repeat(100_000));
    assert!(parse(&members).is_err());
    let ands = format!("print x = true{}", " and true".repeat(100_000));
    assert!(parse(&ands).is_err());
    let ok = format!("print x = 1{}", " + 1".repeat(100));
    assert!(parse(&ok).is_ok(), "ordinary chains still parse");
    let deep_dyn = format!(
        "print x = dynamic({}1{})",
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    assert!(parse(&deep_dyn).is_err());
}

#[test]
fn hostile_values_are_errors_or_nulls_not_crashes() {
    let o = EvalOptions {
        now: Timestamp(0),
        row_limit: None,
    };
    assert!(parse("print x = datetime(2023-01-0é)").is_err());
    assert!(parse("print x = time(99999999999999:00:00)").is_err());
    for expr in [
        "todatetime('2023-01-0é1T00:00:00')",
        "totimespan('99999999999999:00:00')",
        "bin(-9223372036854775807 - 1, 3)",
        "bin(datetime(1600-01-01), 7d)",
        "-9223372036854775807 / -1",
        "(-9223372036854775807 - 1) % -1",
        "datetime_add('year', 9223372036854775807, now())",
        "substring('abc', -5, 99)",
        "split('a', '')",
        "extract('(', 1, 'x')",
    ] {
        let r = run(&format!("print x = {expr}"), &Database::new(), &o);
        assert!(
            r.is_ok() || matches!(r, Err(culprit_kql::KqlError::Semantic { .. })),
            "{expr}: {r:?}"
        );
    }
}

/// Found by the `kql_parse` fuzz target: a keyword or `$` read as a call's name (`and (...)`,
/// `join $(...)`, `join parse-kv(...)`) was printed as `["and"](...)`, which does not read back; a long chain of signs
/// was printed with a bracket per sign, deeper than the parser allows.
#[test]
fn fuzz_findings_print_back_to_the_same_query() {
    for text in [
        "//comment\nand (ProcessCommandLine contains \"rmdir\" or ProcessCommandLine contains \"del\")",
        "print x = toupper(\"a\")",
        "T | join $(U) on K",
        "T | join parse-kv(U) on K",
        "h(x) | take 1",
        "T;in~(\"a\")",
        "print x = 1e555, y = -1e400, z = real(+inf)",
        "print x = - - -5, y = --(5), z = -+-a",
    ] {
        let q = parse(text).unwrap();
        let printed = printer::print(&q);
        assert_eq!(parse(&printed).ok(), Some(q), "{printed}");
    }
    // A chain of signs as long as the parser accepts prints back within its depth limit.
    let chain = format!("print x = {}a", "-".repeat(90));
    let q = parse(&chain).unwrap();
    let printed = printer::print(&q);
    assert_eq!(parse(&printed).ok(), Some(q), "{printed}");
}
