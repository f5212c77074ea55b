//! Every scenario of the shared corpus scored against its truth.json, with both scorers.
//! Needs ../shared beside the clone: `cargo test -p culprit-correlator -- --ignored --nocapture`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use culprit_correlator::Scorer;
use culprit_correlator::eval::{Report, score};

fn scenario_dirs() -> Vec<std::path::PathBuf> {
    let root = support::manifest_path("../../../shared/scenarios");
    let mut dirs: Vec<_> = std::fs::read_dir(&root)
        .unwrap_or_else(|e| panic!("{}: {e}", root.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("truth.json").exists())
        .collect();
    dirs.sort();
    assert!(!dirs.is_empty(), "no scenarios under {}", root.display());
    dirs
}

#[test]
#[ignore = "needs ../shared/scenarios beside the clone; .ci/run runs it with --ignored"]
fn every_scenario_top1_and_root_cause() {
    let mut scores = Vec::new();
    for dir in scenario_dirs() {
        let s = support::load(&dir);
        for scorer in [Scorer::Culprit, Scorer::Baseline] {
            let results = support::run(&s, scorer);
            if scorer == Scorer::Culprit {
                for r in &results {
                    println!(
                        "{} {} {} conf={:?} rc={:?} :: {}",
                        s.name,
                        r.detection_id,
                        r.status,
                        r.probable.as_ref().map(|p| p.confidence),
                        r.root_cause
                            .as_ref()
                            .map(|p| format!("{} {}", p.file_name, p.process_id)),
                        r.explanation
                    );
                }
            }
            scores.push(score(&s.name, &results, &s.truth));
        }
    }
    let report = Report::new(scores);
    println!("{}", report.render());
    println!("{}", serde_json::to_string(&report.overall).unwrap());
    let culprit_misses: Vec<String> = report
        .misses()
        .into_iter()
        .filter(|m| m.contains("[culprit]"))
        .collect();
    for m in report.misses() {
        println!("miss: {m}");
    }
    assert!(culprit_misses.is_empty(), "{culprit_misses:#?}");
    let overall = &report.overall["culprit"];
    assert_eq!(overall.top1, overall.detections);
    assert_eq!(overall.root_cause_correct, overall.root_cause_total);
}
