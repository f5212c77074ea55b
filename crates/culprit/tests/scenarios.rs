//! The binary end to end: `culprit demo` and `culprit correlate --scenario … --format json`,
//! scored against the scenarios' known answers.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a panic is the test failure report

use std::path::{Path, PathBuf};
use std::process::Command;

use culprit_correlator::eval::{Truth, score};
use culprit_model::{Correlation, Status};

fn bundled() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/scenarios/lsass_01")
}

fn culprit(args: &[&str]) -> (String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_culprit"))
        .args(args)
        .output()
        .expect("run culprit");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "culprit {args:?} failed: {}\n{stderr}",
        out.status
    );
    (stdout, stderr)
}

fn correlate(dir: &Path) -> Vec<Correlation> {
    let dir = dir.to_string_lossy();
    let (stdout, _) = culprit(&["correlate", "--scenario", &dir, "--format", "json"]);
    stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l}: {e}")))
        .collect()
}

fn truth(dir: &Path) -> Truth {
    Truth::from_json(&std::fs::read_to_string(dir.join("truth.json")).unwrap()).unwrap()
}

#[test]
fn demo_prints_plain_panels_and_names_the_implant() {
    let (stdout, _) = culprit(&["demo"]);
    assert!(
        !stdout.contains('\x1b'),
        "no colour when stdout is not a terminal"
    );
    for id in ["2568", "2569", "2570"] {
        assert!(
            stdout
                .lines()
                .any(|l| l.starts_with(&format!("detection {id} "))),
            "a summary line for {id}:\n{stdout}"
        );
    }
    let c2 = stdout
        .lines()
        .find(|l| l.starts_with("detection 2569 "))
        .unwrap();
    assert!(
        c2.contains("attributed") && c2.contains("winx64_payload.exe"),
        "{c2}"
    );
    assert!(stdout.contains("PROBABLE PROCESS"));
}

#[test]
fn bundled_scenario_matches_its_truth() {
    let dir = bundled();
    let answers = correlate(&dir);
    let t = truth(&dir);
    assert_eq!(answers.len(), t.detections.len());
    for a in &answers {
        assert_eq!(
            a.status,
            Status::Attributed,
            "{}: {}",
            a.detection_id,
            a.explanation
        );
        assert!(a.links.is_some(), "portal links for {}", a.detection_id);
        assert!(a.hunting_query.is_some());
    }
    let s = score("lsass_01", &answers, &t);
    for d in &s.detections {
        assert!(
            d.top1,
            "{}: expected {} got {}",
            d.detection_id, d.expected, d.answered
        );
        assert_ne!(
            d.root_cause_correct,
            Some(false),
            "root cause of {}",
            d.detection_id
        );
    }
}

#[test]
#[ignore = "needs ../shared/scenarios beside the clone; .ci/run runs it with --ignored"]
fn every_shared_scenario_matches_its_truth() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/scenarios");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap_or_else(|e| panic!("{}: {e} (the corpus tests need ../shared)", root.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("truth.json").is_file())
        .collect();
    dirs.sort();
    assert!(
        dirs.len() >= 9,
        "expected the whole corpus, found {}",
        dirs.len()
    );
    let mut wrong = Vec::new();
    let mut total = 0;
    for dir in &dirs {
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        let s = score(&name, &correlate(dir), &truth(dir));
        for d in &s.detections {
            total += 1;
            if !d.top1 || d.root_cause_correct == Some(false) {
                wrong.push(format!(
                    "{name}/{}: expected {} got {}",
                    d.detection_id, d.expected, d.answered
                ));
            }
        }
    }
    assert!(total >= 22, "{total} detections scored");
    assert!(
        wrong.is_empty(),
        "{} of {total} wrong:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
}

/// Suricata alerts carry each flow's own ports, so each alert names its flow's owner: the
/// scenario's README lists them (4 × msedge.exe on :80, 4 × the implant on :8080, and the
/// migrated svchost.exe for source port 51146).
#[test]
fn suricata_alerts_attribute_each_flow_to_its_owner() {
    let dir = bundled();
    let dir = dir.to_string_lossy();
    let (stdout, _) = culprit(&[
        "correlate",
        "--scenario",
        &dir,
        "--source",
        "suricata",
        "--format",
        "json",
    ]);
    let answers: Vec<Correlation> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let mut owners = std::collections::BTreeMap::new();
    for a in &answers {
        assert_eq!(
            a.status,
            Status::Attributed,
            "{}: {}",
            a.detection_id,
            a.explanation
        );
        let p = a.probable.as_ref().unwrap();
        *owners
            .entry((p.file_name.clone(), p.process_id))
            .or_insert(0) += 1;
        if p.file_name == "svchost.exe" {
            let rc = a.root_cause.as_ref().unwrap();
            assert_eq!(
                (rc.file_name.as_str(), rc.process_id),
                ("winx64_payload.exe", 1988)
            );
        }
    }
    let expected: std::collections::BTreeMap<(String, u32), i32> = [
        (("msedge.exe".to_owned(), 7476), 4),
        (("winx64_payload.exe".to_owned(), 1988), 4),
        (("svchost.exe".to_owned(), 1400), 1),
    ]
    .into();
    assert_eq!(owners, expected);
}
