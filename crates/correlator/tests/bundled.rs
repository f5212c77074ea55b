//! The bundled lsass_01 recording: every detection attributed to the right process, and the
//! post-migration session's root cause traced back through the code injection.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use culprit_correlator::Scorer;
use culprit_correlator::eval::{Report, score};
use culprit_model::Status;

#[test]
fn lsass_01_every_detection_and_root_cause() {
    let s = support::load(&support::manifest_path("../../examples/scenarios/lsass_01"));
    assert_eq!(s.detections.len(), 3);
    let results = support::run(&s, Scorer::Culprit);
    let sc = score(&s.name, &results, &s.truth);
    let report = Report::new(vec![sc.clone()]);
    println!("{}", report.render());
    assert!(report.misses().is_empty(), "{:#?}", report.misses());
    for d in &sc.detections {
        assert!(d.top1, "{d:?}");
    }
    let post = results.iter().find(|r| r.detection_id == "2570").unwrap();
    assert_eq!(post.status, Status::Attributed);
    let p = post.probable.as_ref().unwrap();
    assert_eq!((p.file_name.as_str(), p.process_id), ("svchost.exe", 1400));
    let root = post.root_cause.as_ref().unwrap();
    assert_eq!(
        (root.file_name.as_str(), root.process_id),
        ("winx64_payload.exe", 1988)
    );
    assert!(
        p.reasons.iter().any(|r| r.contains("injected")),
        "{:?}",
        p.reasons
    );

    let c2 = results.iter().find(|r| r.detection_id == "2569").unwrap();
    let p = c2.probable.as_ref().unwrap();
    assert!(p.confidence >= 0.9, "{}", p.confidence);
    assert!(
        p.reasons[0].starts_with("owns 4 of 5 sessions"),
        "{:?}",
        p.reasons
    );
    assert!(!p.process_tree.is_empty());
    assert!(
        p.process_tree
            .iter()
            .any(|n| n.relation == "injected" && n.process_id == Some(1400))
    );
    assert!(!c2.window_activity.is_empty());
    assert!(
        c2.window_activity
            .windows(2)
            .all(|w| w[0].timestamp <= w[1].timestamp)
    );
    let q = c2.hunting_query.as_ref().unwrap();
    assert!(
        q.device
            .contains("\"e28267a8375c8cc082a43a690e5d49796e73a79e\"")
    );
    assert!(
        q.enterprise
            .contains("e9196b871670af6307902fc4ca09f7cf3c309ae54b28e10d052ed8741090f928")
    );
    assert!(!q.enterprise.contains("DeviceId =="));
}

#[test]
fn lsass_01_output_follows_the_contract() {
    let s = support::load(&support::manifest_path("../../examples/scenarios/lsass_01"));
    let results = support::run(&s, Scorer::Culprit);
    let v = serde_json::to_value(&results[1]).unwrap();
    assert_eq!(v["detection_id"], "2569");
    assert_eq!(v["status"], "attributed");
    assert_eq!(v["device"]["DeviceName"], "mkt01.pandalab.com");
    let p = &v["probable"];
    assert_eq!(p["ProcessId"], 1988);
    assert_eq!(p["ProcessCreationTime"], "2023-08-16T04:54:30.9870000Z");
    assert_eq!(p["parent"]["FileName"], "explorer.exe");
    for k in [
        "SHA256",
        "SHA1",
        "FolderPath",
        "AccountDomain",
        "AccountName",
        "ProcessIntegrityLevel",
        "ProcessCommandLine",
    ] {
        assert!(p.get(k).is_some(), "{k} missing");
    }
    let c = p["confidence"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&c));
    assert!(v["candidates"].as_array().unwrap().len() >= 2);
}

#[test]
fn baseline_scorer_ranks_by_unique_destinations() {
    let s = support::load(&support::manifest_path("../../examples/scenarios/lsass_01"));
    let results = support::run(&s, Scorer::Baseline);
    for r in &results {
        assert_eq!(r.scorer, "baseline");
        let scores: Vec<f64> = r.candidates.iter().map(|c| c.score).collect();
        assert!(scores.windows(2).all(|w| w[0] >= w[1]), "{scores:?}");
    }
}
