//! A generated tenant is a scenario like the recorded ones: `culprit eval` serves it through
//! the twin over HTTP and the engine names the injected attacks' processes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

use culprit_mde_twin::generate::{GenerateOptions, generate_to_dir};

#[test]
fn eval_names_the_injected_truth_of_a_generated_tenant() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("generated");
    // 20 devices over 2 h with 3 attacks: one of each kind (implant C2, injection, lateral).
    let opts = GenerateOptions {
        attacks: 3,
        ..GenerateOptions::new(20, 2, 42)
    };
    let summary = generate_to_dir(&opts, &out).unwrap();
    assert_eq!(summary.detections, 3);
    assert!(summary.rows["DeviceNetworkEvents"] > 20 * 2 * 30);
    let run = Command::new(env!("CARGO_BIN_EXE_culprit"))
        .args([
            "eval",
            "--scorer",
            "culprit",
            "--format",
            "json",
            "--scenarios",
        ])
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();
    let overall = &report["overall"]["culprit"];
    assert_eq!(overall["detections"], 3, "{report}");
    assert_eq!(
        overall["top1"], 3,
        "every injected detection named first: {report}"
    );
    assert_eq!(overall["root_cause_correct"], 3, "{report}");
}
