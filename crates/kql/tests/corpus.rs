//! Coverage of the practitioners' corpus (bundled in tests/data; see PROVENANCE.md there).
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may unwrap

use culprit_kql::{Database, EvalOptions, Timestamp, corpus};

/// Files bundled in the repository (see tests/data/PROVENANCE.md).
fn bundled(path: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

#[test]
fn corpus_parses_and_device_queries_evaluate() {
    let text = std::fs::read_to_string(bundled("tests/data/m365d-hunting-queries.jsonl")).unwrap();
    let db = Database::from_dir(&bundled("../../examples/scenarios/lsass_01/mde")).unwrap();
    let opts = EvalOptions {
        now: Timestamp::parse("2023-08-16T06:00:00Z").unwrap(),
        row_limit: Some(10_000),
    };
    let r = corpus::check(&text, Some(&db), &opts);
    for f in &r.failing {
        eprintln!(
            "{} {} [{}] {}",
            if f.device_only { "DEV" } else { "other" },
            f.id,
            f.kind,
            f.error
        );
    }
    eprintln!("{}", r.summary_json());
    assert_eq!(r.total, 352);
    assert!(
        r.parsed * 100 >= r.total * 90,
        "parsed {} of {}",
        r.parsed,
        r.total
    );
    let (dev, ok) = (r.device_only, r.device_only_evaluated.unwrap());
    assert!(
        ok * 100 >= dev * 80,
        "evaluated {ok} of {dev} Device*-only queries"
    );
}

/// Every corpus query that parses prints to text that parses back to the same tree.
#[test]
fn corpus_queries_round_trip_through_the_printer() {
    let text = std::fs::read_to_string(bundled("tests/data/m365d-hunting-queries.jsonl")).unwrap();
    let mut checked = 0;
    for line in text.lines() {
        let entry: serde_json::Value = serde_json::from_str(line).unwrap();
        let query = entry["query"].as_str().unwrap();
        let Ok(q) = culprit_kql::parse(query) else {
            continue;
        };
        let printed = culprit_kql::printer::print(&q);
        let again = culprit_kql::parse(&printed)
            .unwrap_or_else(|e| panic!("{}: {e}\n{printed}", entry["id"]));
        assert_eq!(again, q, "{}\n{printed}", entry["id"]);
        checked += 1;
    }
    assert!(checked > 300);
}
