//! Scoring answers against a scenario's `truth.json`: top-1 (status included), top-3, MRR,
//! root-cause accuracy and honest abstentions, per scenario and overall.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use culprit_model::{Correlation, ProcessAnswer, Status, Timestamp};

/// A process as truth names it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TruthProcess {
    #[serde(rename = "DeviceName")]
    pub device_name: String,
    #[serde(rename = "ProcessId")]
    pub process_id: u32,
    #[serde(rename = "FileName")]
    pub file_name: String,
    #[serde(rename = "ProcessCreationTime", default)]
    pub process_creation_time: Option<Timestamp>,
}

impl TruthProcess {
    /// Same process: DeviceName, ProcessId and FileName agree, and where both sides know the
    /// creation time it agrees to the second (a reused PID is a different process).
    pub fn matches(&self, p: &ProcessAnswer) -> bool {
        let same_time = match (self.process_creation_time, p.process_creation_time) {
            (Some(a), Some(b)) => a.unix_seconds() == b.unix_seconds(),
            _ => true,
        };
        self.device_name.eq_ignore_ascii_case(&p.device_name)
            && self.process_id == p.process_id
            && self.file_name.eq_ignore_ascii_case(&p.file_name)
            && same_time
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TruthDetection {
    #[serde(default)]
    pub class: String,
    #[serde(default)]
    pub expected_status: Option<Status>,
    #[serde(default)]
    pub expected: Option<TruthProcess>,
    #[serde(default)]
    pub root_cause: Option<TruthProcess>,
    #[serde(default)]
    pub also_correct: Vec<TruthProcess>,
    #[serde(default)]
    pub why: String,
}

impl TruthDetection {
    pub fn status(&self) -> Status {
        self.expected_status.unwrap_or(Status::Attributed)
    }
}

/// A scenario's `truth.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Truth {
    pub scenario: String,
    #[serde(default)]
    pub base: Option<String>,
    #[serde(default)]
    pub variant: Option<String>,
    pub detections: BTreeMap<String, TruthDetection>,
}

impl Truth {
    pub fn from_json(text: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(text)
    }
}

/// One detection's outcome.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DetectionScore {
    pub detection_id: String,
    pub expected_status: Status,
    pub status: Option<Status>,
    /// 1-based rank of the expected process (probable first, then the other candidates).
    pub rank: Option<usize>,
    pub top1: bool,
    /// `None` when truth names no root cause.
    pub root_cause_correct: Option<bool>,
    pub answered: String,
    pub expected: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScenarioScore {
    pub scenario: String,
    pub scorer: String,
    pub detections: Vec<DetectionScore>,
}

fn label(p: &ProcessAnswer) -> String {
    format!("{} {}", p.file_name, p.process_id)
}

fn ranked(c: &Correlation) -> Vec<&ProcessAnswer> {
    let mut v: Vec<&ProcessAnswer> = c.probable.iter().collect();
    v.extend(c.candidates.iter().filter(|x| {
        c.probable.as_ref().is_none_or(|p| {
            !(p.process_id == x.process_id && p.process_creation_time == x.process_creation_time)
        })
    }));
    v
}

fn score_one(id: &str, result: Option<&Correlation>, t: &TruthDetection) -> DetectionScore {
    let expected_status = t.status();
    let status = result.map(|r| r.status);
    let expected = match (&t.expected, expected_status) {
        (Some(e), Status::Attributed) => format!("{} {}", e.file_name, e.process_id),
        _ => expected_status.to_string(),
    };
    let answered = match result {
        Some(r) => r.probable.as_ref().map_or(r.status.to_string(), label),
        None => "missing".to_owned(),
    };
    let mut s = DetectionScore {
        detection_id: id.to_owned(),
        expected_status,
        status,
        rank: None,
        top1: false,
        root_cause_correct: None,
        answered,
        expected,
    };
    let Some(r) = result else {
        return s;
    };
    if expected_status != Status::Attributed {
        s.top1 = r.status == expected_status;
        s.rank = s.top1.then_some(1);
        return s;
    }
    if let Some(e) = &t.expected {
        s.rank = ranked(r).iter().position(|p| e.matches(p)).map(|i| i + 1);
        s.top1 =
            r.status == Status::Attributed && r.probable.as_ref().is_some_and(|p| e.matches(p));
    }
    if let Some(rc) = &t.root_cause {
        s.root_cause_correct = Some(
            r.status == Status::Attributed && r.root_cause.as_ref().is_some_and(|p| rc.matches(p)),
        );
    }
    s
}

/// Scores a scenario's answers (one per detection; extra answers are ignored).
pub fn score(scenario: &str, results: &[Correlation], truth: &Truth) -> ScenarioScore {
    let scorer = results
        .first()
        .map(|r| r.scorer.clone())
        .unwrap_or_default();
    let detections = truth
        .detections
        .iter()
        .map(|(id, t)| score_one(id, results.iter().find(|r| &r.detection_id == id), t))
        .collect();
    ScenarioScore {
        scenario: scenario.to_owned(),
        scorer,
        detections,
    }
}

/// Aggregates over a set of detections.
#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize)]
pub struct Summary {
    pub detections: usize,
    pub top1: usize,
    pub top3: usize,
    pub mrr: f64,
    pub root_cause_correct: usize,
    pub root_cause_total: usize,
    /// Detections whose truth is an abstention status, answered with that status.
    pub honest_abstentions: usize,
    pub abstentions_expected: usize,
}

impl Summary {
    pub fn of<'a>(items: impl IntoIterator<Item = &'a DetectionScore>) -> Self {
        let mut s = Summary::default();
        let mut rr = 0.0;
        for d in items {
            s.detections += 1;
            s.top1 += usize::from(d.top1);
            s.top3 += usize::from(d.rank.is_some_and(|r| r <= 3));
            rr += d.rank.map_or(0.0, |r| 1.0 / r as f64);
            if let Some(ok) = d.root_cause_correct {
                s.root_cause_total += 1;
                s.root_cause_correct += usize::from(ok);
            }
            if d.expected_status != Status::Attributed {
                s.abstentions_expected += 1;
                s.honest_abstentions += usize::from(d.top1);
            }
        }
        s.mrr = if s.detections == 0 {
            0.0
        } else {
            rr / s.detections as f64
        };
        s
    }
}

/// Scores of every scenario under one or more scorers.
#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize)]
pub struct Report {
    pub scenarios: Vec<ScenarioScore>,
    /// Per scorer, over all scenarios.
    pub overall: BTreeMap<String, Summary>,
}

impl Report {
    pub fn new(scenarios: Vec<ScenarioScore>) -> Self {
        let mut overall = BTreeMap::new();
        let scorers: Vec<String> = {
            let mut v: Vec<String> = scenarios.iter().map(|s| s.scorer.clone()).collect();
            v.sort();
            v.dedup();
            v
        };
        for sc in scorers {
            let all = scenarios
                .iter()
                .filter(|s| s.scorer == sc)
                .flat_map(|s| s.detections.iter());
            let summary = Summary::of(all);
            overall.insert(sc, summary);
        }
        Report { scenarios, overall }
    }

    /// A plain-text table: one line per scenario and scorer, then the totals.
    pub fn render(&self) -> String {
        let mut out = format!(
            "{:<34} {:<9} {:>4} {:>6} {:>6} {:>6} {:>10} {:>11}\n",
            "scenario", "scorer", "det", "top1", "top3", "MRR", "root-cause", "abstentions"
        );
        let line = |name: &str, scorer: &str, s: &Summary| {
            format!(
                "{:<34} {:<9} {:>4} {:>6} {:>6} {:>6.3} {:>10} {:>11}\n",
                name,
                scorer,
                s.detections,
                format!("{}/{}", s.top1, s.detections),
                format!("{}/{}", s.top3, s.detections),
                s.mrr,
                format!("{}/{}", s.root_cause_correct, s.root_cause_total),
                format!("{}/{}", s.honest_abstentions, s.abstentions_expected),
            )
        };
        for sc in &self.scenarios {
            out.push_str(&line(
                &sc.scenario,
                &sc.scorer,
                &Summary::of(&sc.detections),
            ));
        }
        for (scorer, s) in &self.overall {
            out.push_str(&line("OVERALL", scorer, s));
        }
        out
    }

    /// Every detection that was not top-1, for reading why.
    pub fn misses(&self) -> Vec<String> {
        let mut v = Vec::new();
        for sc in &self.scenarios {
            for d in sc
                .detections
                .iter()
                .filter(|d| !d.top1 || d.root_cause_correct == Some(false))
            {
                v.push(format!(
                    "{} [{}] {}: expected {}, answered {} (status {:?}, rank {:?}, root cause ok {:?})",
                    sc.scenario, sc.scorer, d.detection_id, d.expected, d.answered, d.status, d.rank, d.root_cause_correct
                ));
            }
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use culprit_model::correlation::DetectionSummary;
    use culprit_model::detection::{DetectionKey, SourceKind};

    const TRUTH: &str = r#"{"scenario": "s1", "detections": {
        "1": {"class": "c2",
              "expected": {"DeviceName": "h.lab", "ProcessId": 10, "FileName": "a.exe",
                           "ProcessCreationTime": "2023-08-16T04:54:30.9870000Z"},
              "root_cause": {"DeviceName": "h.lab", "ProcessId": 5, "FileName": "d.exe",
                             "ProcessCreationTime": null},
              "also_correct": [], "why": "x"},
        "2": {"class": "c2", "expected_status": "insufficient_telemetry", "why": "y"},
        "3": {"class": "c2",
              "expected": {"DeviceName": "h.lab", "ProcessId": 20, "FileName": "b.exe",
                           "ProcessCreationTime": null},
              "why": "z"}}}"#;

    fn proc(pid: u32, name: &str, created: Option<&str>) -> ProcessAnswer {
        ProcessAnswer {
            device_name: "H.LAB".into(),
            process_id: pid,
            file_name: name.into(),
            process_creation_time: created.map(|c| Timestamp::parse(c).unwrap()),
            ..ProcessAnswer::default()
        }
    }

    fn answer(
        id: &str,
        status: Status,
        ranked: Vec<ProcessAnswer>,
        root: Option<ProcessAnswer>,
    ) -> Correlation {
        Correlation {
            detection_id: id.into(),
            detection_key: DetectionKey::new(SourceKind::Vectra, "t", id, "0"),
            source: SourceKind::Vectra,
            tenant: "t".into(),
            status,
            error_kind: None,
            explanation: String::new(),
            device: None,
            devices: Vec::new(),
            probable: if status == Status::Attributed {
                ranked.first().cloned()
            } else {
                None
            },
            root_cause: root,
            candidates: ranked,
            window_activity: Vec::new(),
            hunting_query: None,
            links: None,
            detection: DetectionSummary::default(),
            scorer: "culprit".into(),
            computed_at: Timestamp::default(),
        }
    }

    #[test]
    fn scores_rank_status_and_root_cause() {
        let truth = Truth::from_json(TRUTH).unwrap();
        assert_eq!(
            truth.detections["2"].status(),
            Status::InsufficientTelemetry
        );
        let right = proc(10, "a.exe", Some("2023-08-16T04:54:30.1Z"));
        // Same PID and name, created at another second: a reused PID, not the process.
        let reused = proc(10, "a.exe", Some("2023-08-16T04:50:00Z"));
        let results = vec![
            answer(
                "1",
                Status::Attributed,
                vec![reused, right],
                Some(proc(5, "d.exe", None)),
            ),
            answer("2", Status::InsufficientTelemetry, vec![], None),
            answer(
                "3",
                Status::InsufficientTelemetry,
                vec![proc(20, "b.exe", None)],
                None,
            ),
        ];
        let sc = score("s1", &results, &truth);
        let d: Vec<(bool, Option<usize>, Option<bool>)> = sc
            .detections
            .iter()
            .map(|d| (d.top1, d.rank, d.root_cause_correct))
            .collect();
        assert_eq!(
            d,
            [
                (false, Some(2), Some(true)),
                (true, Some(1), None),
                (false, Some(1), None)
            ]
        );
        let s = Summary::of(&sc.detections);
        assert_eq!(
            (s.top1, s.top3, s.honest_abstentions, s.abstentions_expected),
            (1, 3, 1, 1)
        );
        assert!((s.mrr - (0.5 + 1.0 + 1.0) / 3.0).abs() < 1e-9);
        let report = Report::new(vec![sc]);
        let table = report.render();
        assert!(
            table.contains("OVERALL") && table.contains("1/3"),
            "{table}"
        );
        assert_eq!(report.misses().len(), 2);
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["overall"]["culprit"]["top1"], 1);
    }

    #[test]
    fn a_missing_answer_scores_nothing() {
        let truth = Truth::from_json(TRUTH).unwrap();
        let sc = score("s1", &[], &truth);
        assert!(sc.detections.iter().all(|d| !d.top1 && d.rank.is_none()));
    }
}
