//! What people read: a panel per correlation and a one-line summary. Colour only on a
//! terminal; plain text otherwise (pipes, files, CI logs). Long lines wrap to the width, except
//! URLs, which stay whole on a line of their own so they can be copied.

use std::fmt::Write as _;

use culprit_model::correlation::{ProcessAnswer, TreeNode};
use culprit_model::{Correlation, Status};

/// Styling switch: ANSI escapes on a terminal, nothing elsewhere; the width to wrap at.
#[derive(Debug, Clone, Copy)]
pub struct Style {
    pub color: bool,
    /// Columns available; long values wrap to it.
    pub width: usize,
}

/// Width used when stdout is not a terminal (files, pipes).
pub const DEFAULT_WIDTH: usize = 100;
/// Narrower than this and the panel would be unreadable anyway: wrap at this.
const MIN_WIDTH: usize = 60;

impl Style {
    /// Colour and the terminal's width on a terminal; plain text at [`DEFAULT_WIDTH`] elsewhere.
    pub fn for_stdout(is_terminal: bool) -> Self {
        let width = if is_terminal {
            terminal_size::terminal_size().map_or(DEFAULT_WIDTH, |(w, _)| usize::from(w.0))
        } else {
            DEFAULT_WIDTH
        };
        Style {
            color: is_terminal,
            width: width.max(MIN_WIDTH),
        }
    }

    fn paint(self, code: &str, s: &str) -> String {
        if self.color {
            format!("\x1b[{code}m{s}\x1b[0m")
        } else {
            s.to_owned()
        }
    }
    fn bold(self, s: &str) -> String {
        self.paint("1", s)
    }
    fn dim(self, s: &str) -> String {
        self.paint("2", s)
    }
    fn unknown(self) -> String {
        self.dim(UNKNOWN)
    }
    fn status(self, st: Status) -> String {
        let code = match st {
            Status::Attributed => "1;32",
            Status::HuntFailed => "1;31",
            _ => "1;33",
        };
        self.paint(code, st.as_str())
    }
}

/// What a missing value reads as: an empty field looks like a bug, "unknown" does not.
const UNKNOWN: &str = "unknown";
/// Column where a field's value starts (`  ` + 14-wide label + ` `).
const VALUE_COLUMN: usize = 17;

/// One line: id, status, process or reason.
pub fn summary_line(c: &Correlation, style: Style) -> String {
    let what = match (&c.probable, c.status) {
        (Some(p), Status::Attributed) => {
            let mut s = format!(
                "{} (PID {}) confidence {:.2}",
                p.file_name, p.process_id, p.confidence
            );
            if let Some(rc) = other_root_cause(c, p) {
                let _ = write!(s, ", root cause {} (PID {})", rc.file_name, rc.process_id);
            }
            s
        }
        _ => first_sentence(&c.explanation),
    };
    format!(
        "{} {:<8} {:<24} {}",
        style.bold(&format!("detection {}", c.detection_id)),
        style.status(c.status),
        c.detection.detection_type,
        what
    )
}

fn first_sentence(s: &str) -> String {
    match s.find(". ") {
        Some(i) => s[..=i].to_owned(),
        None => s.to_owned(),
    }
}

/// The full panel (layout after the analysts' sketch in the design notes).
pub fn panel(c: &Correlation, style: Style) -> String {
    let mut out = String::new();
    let d = &c.detection;
    let or_unknown = |v: &str| {
        if v.is_empty() {
            UNKNOWN.to_owned()
        } else {
            v.to_owned()
        }
    };
    let score = |v: Option<u32>| v.map_or_else(|| UNKNOWN.to_owned(), |x| x.to_string());
    let _ = writeln!(
        out,
        "{}",
        style.bold(&format!(
            "Detection {} · {} · {} · threat {} · certainty {}",
            c.detection_id,
            or_unknown(&d.detection_type),
            or_unknown(&d.category.replace('_', " ")),
            score(d.threat),
            score(d.certainty)
        ))
    );
    let host = match (&d.host_name, &d.host_ip) {
        (Some(n), Some(ip)) => format!("{n} ({ip})"),
        (Some(n), None) => n.clone(),
        (None, Some(ip)) => ip.clone(),
        (None, None) => "unknown host".into(),
    };
    let window = match (d.window_start, d.window_end) {
        (Some(a), Some(b)) => format!("{} → {} UTC", short_time(a), short_time(b)),
        _ => "time window unknown".into(),
    };
    let device = c
        .device
        .as_ref()
        .filter(|dv| !dv.device_name.is_empty())
        .map(|dv| format!(" · device {}", dv.device_name))
        .unwrap_or_default();
    let traffic = if d.traffic.is_empty() {
        "traffic unknown"
    } else {
        d.traffic.as_str()
    };
    let head = format!("Host {host}{device} · {window} · {traffic}");
    for line in wrap(&head, style.width, 0) {
        let _ = writeln!(out, "{line}");
    }
    let _ = writeln!(out);

    match (&c.probable, c.status) {
        (Some(p), Status::Attributed) => probable(&mut out, c, p, style),
        _ => {
            let label = c.status.as_str();
            let why = if c.explanation.is_empty() {
                "no explanation was recorded"
            } else {
                c.explanation.as_str()
            };
            let lines = wrap(why, style.width, label.len() + 2);
            for (i, line) in lines.iter().enumerate() {
                if i == 0 {
                    let _ = writeln!(out, "{}  {line}", style.status(c.status));
                } else {
                    let _ = writeln!(out, "{line}");
                }
            }
        }
    }
    others(&mut out, c, style);
    pivots(&mut out, c, style);
    out
}

fn probable(out: &mut String, c: &Correlation, p: &ProcessAnswer, style: Style) {
    let _ = writeln!(
        out,
        "{}  {}  (PID {})    confidence {:.2}",
        style.bold("PROBABLE PROCESS"),
        style.bold(&p.file_name),
        p.process_id,
        p.confidence
    );
    // Optional lines (reasons) are skipped when empty; the standard facts always show, as
    // "unknown" when MDE did not record them.
    let field = |out: &mut String, k: &str, v: &str| {
        if !v.is_empty() {
            write_field(out, style, k, v);
        }
    };
    let fact = |out: &mut String, k: &str, v: &str| {
        if v.is_empty() {
            let _ = writeln!(out, "  {k:<14} {}", style.unknown());
        } else {
            write_field(out, style, k, v);
        }
    };
    fact(out, "Command line", &p.command_line);
    fact(out, "Path", &p.folder_path);
    fact(out, "SHA256", &p.sha256);
    let account = match (p.account_domain.as_str(), p.account_name.as_str()) {
        ("", "") => String::new(),
        ("", n) => n.to_owned(),
        (dm, n) => format!("{dm}\\{n}"),
    };
    let account = if p.integrity_level.is_empty() || account.is_empty() {
        account
    } else {
        format!("{account} ({} integrity)", p.integrity_level)
    };
    fact(out, "Account", &account);
    fact(
        out,
        "Started",
        &p.process_creation_time
            .map(|t| t.to_millis_string())
            .unwrap_or_default(),
    );
    let parent = p
        .parent
        .as_ref()
        .map(|parent| {
            let pid = parent
                .process_id
                .map(|x| format!(" (PID {x})"))
                .unwrap_or_default();
            let name = if parent.file_name.is_empty() {
                "(name unknown)"
            } else {
                parent.file_name.as_str()
            };
            format!("{name}{pid}")
        })
        .unwrap_or_default();
    fact(out, "Parent", &parent);
    for (i, r) in p.reasons.iter().enumerate() {
        field(out, if i == 0 { "Why" } else { "" }, r);
    }
    if let Some(rc) = other_root_cause(c, p) {
        field(
            out,
            "Root cause",
            &format!("{} (PID {})", rc.file_name, rc.process_id),
        );
        for r in rc.reasons.iter().take(2) {
            field(out, "", r);
        }
    }
    if !p.process_tree.is_empty() {
        let _ = writeln!(out, "\n{}", style.bold("PROCESS TREE"));
        tree(out, &p.process_tree, style);
    }
}

/// A label and a value wrapped under its own column.
fn write_field(out: &mut String, style: Style, k: &str, v: &str) {
    for (i, line) in wrap(v, style.width, VALUE_COLUMN).iter().enumerate() {
        let label = if i == 0 { k } else { "" };
        let _ = writeln!(out, "  {label:<14} {}", line.trim_start());
    }
}

fn process_label(n: &TreeNode) -> String {
    let name = if n.file_name.is_empty() {
        "(name unknown)"
    } else {
        n.file_name.as_str()
    };
    match n.process_id {
        Some(p) => format!("{name} {p}"),
        None => name.to_owned(),
    }
}

/// The lineage as a tree. A process that injected code into the probable one is not its
/// child: it is drawn apart, as an "injected by" edge, after the tree.
fn tree(out: &mut String, nodes: &[TreeNode], style: Style) {
    let (injectors, drawn): (Vec<&TreeNode>, Vec<&TreeNode>) =
        nodes.iter().partition(|n| n.relation == "injector");
    // The depth the tree's nodes are drawn at, by position (depths may skip levels).
    let depth: Vec<usize> = drawn.iter().map(|n| n.depth as usize).collect();
    // Does a later sibling follow node `i` (same depth, before the tree climbs above it)?
    let has_next_sibling = |i: usize| {
        depth[i + 1..]
            .iter()
            .take_while(|d| **d >= depth[i])
            .any(|d| *d == depth[i])
    };
    let mut open: Vec<bool> = Vec::new();
    for (i, n) in drawn.iter().enumerate() {
        let d = depth[i];
        open.truncate(d);
        let mut prefix = String::new();
        for level in 1..d {
            prefix.push_str(if open.get(level).copied().unwrap_or(false) {
                "│  "
            } else {
                "   "
            });
        }
        let next = has_next_sibling(i);
        if d > 0 {
            prefix.push_str(if next { "├─ " } else { "└─ " });
        }
        open.resize(d + 1, false);
        open[d] = next;
        let (arrow, mark) = match n.relation.as_str() {
            "probable" => ("", style.bold("  ← probable")),
            "injected" => ("⇢ ", style.dim("  (code injected into it)")),
            "" | "parent" | "child" | "ancestor" => ("", String::new()),
            other => ("", style.dim(&format!("  ({other})"))),
        };
        let _ = writeln!(out, "  {prefix}{arrow}{}{mark}", process_label(n));
    }
    let target = drawn
        .iter()
        .find(|n| n.relation == "probable")
        .map_or_else(|| "the probable process".to_owned(), |n| process_label(n));
    for inj in injectors {
        let _ = writeln!(
            out,
            "  {} {}  {}",
            style.bold("⇠ injected by"),
            process_label(inj),
            style.dim(&format!("(code injection into {target}, not a child)"))
        );
    }
}

fn others(out: &mut String, c: &Correlation, style: Style) {
    let rest: Vec<&ProcessAnswer> = c
        .candidates
        .iter()
        .filter(|x| c.probable.as_ref().is_none_or(|p| !same_process(p, x)))
        .take(5)
        .collect();
    if rest.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "\n{}",
        style.bold("OTHER PROCESSES ON THE HOST IN THE WINDOW")
    );
    for (i, x) in rest.iter().enumerate() {
        let why = x.reasons.first().map(String::as_str).unwrap_or("");
        let name = if x.file_name.is_empty() {
            "(name unknown)"
        } else {
            x.file_name.as_str()
        };
        let head = format!(
            "  {}  {:<22} {:>6}  {:>2} session{}  ",
            i + 2,
            name,
            x.process_id,
            x.sessions_owned,
            if x.sessions_owned == 1 { " " } else { "s" },
        );
        let column = head.chars().count();
        // The reason wraps under itself, so the numbers stay in their columns.
        for (j, line) in wrap(why, style.width, column).iter().enumerate() {
            let lead = if j == 0 {
                head.clone()
            } else {
                " ".repeat(column)
            };
            let _ = writeln!(out, "{lead}{}", style.dim(line));
        }
    }
}

/// The root cause when it is another process than the probable one.
fn other_root_cause<'a>(c: &'a Correlation, p: &ProcessAnswer) -> Option<&'a ProcessAnswer> {
    c.root_cause.as_ref().filter(|rc| !same_process(rc, p))
}

fn same_process(a: &ProcessAnswer, b: &ProcessAnswer) -> bool {
    a.device_id == b.device_id
        && a.process_id == b.process_id
        && a.process_creation_time == b.process_creation_time
}

fn pivots(out: &mut String, c: &Correlation, style: Style) {
    let mut lines = Vec::new();
    if let Some(l) = &c.links {
        lines.push(("Device timeline", l.device_timeline.as_str()));
    }
    if let Some(q) = &c.hunting_query {
        lines.push(("Hunt (device)", q.device.as_str()));
        lines.push(("Hunt (everywhere)", q.enterprise.as_str()));
    }
    if let Some(l) = &c.links {
        lines.push(("Open in Defender", l.advanced_hunting.as_str()));
    }
    let lines: Vec<_> = lines.into_iter().filter(|(_, v)| !v.is_empty()).collect();
    if lines.is_empty() {
        return;
    }
    let _ = writeln!(out, "\n{}", style.bold("PIVOT"));
    for (k, v) in lines {
        let one_line = v.split_whitespace().collect::<Vec<_>>().join(" ");
        if is_url(&one_line) {
            // Never broken: a URL cut by a newline cannot be copied or clicked.
            if 2 + 18 + 1 + one_line.len() <= style.width {
                let _ = writeln!(out, "  {k:<18} {one_line}");
            } else {
                let _ = writeln!(out, "  {k}");
                let _ = writeln!(out, "    {one_line}");
            }
            continue;
        }
        for (i, line) in wrap(&one_line, style.width, 21).iter().enumerate() {
            let label = if i == 0 { k } else { "" };
            let _ = writeln!(out, "  {label:<18} {}", line.trim_start());
        }
    }
}

fn is_url(s: &str) -> bool {
    (s.starts_with("https://") || s.starts_with("http://")) && !s.contains(' ')
}

/// Splits `text` into lines that fit `width` once indented by `indent` columns (the first
/// line's label fills that indent). Breaks at spaces; a word longer than a line is cut only
/// when it is not a URL, so links stay whole.
pub fn wrap(text: &str, width: usize, indent: usize) -> Vec<String> {
    let room = width.saturating_sub(indent).max(20);
    let mut lines: Vec<String> = Vec::new();
    let mut cur = String::new();
    for word in text.split_whitespace() {
        let words: Vec<String> = if word.chars().count() > room && !is_url(word) {
            chunks(word, room)
        } else {
            vec![word.to_owned()]
        };
        for w in words {
            let len = cur.chars().count();
            if len > 0 && len + 1 + w.chars().count() > room {
                lines.push(std::mem::take(&mut cur));
            }
            if !cur.is_empty() {
                cur.push(' ');
            }
            cur.push_str(&w);
        }
    }
    if !cur.is_empty() || lines.is_empty() {
        lines.push(cur);
    }
    lines
}

fn chunks(word: &str, size: usize) -> Vec<String> {
    let chars: Vec<char> = word.chars().collect();
    chars.chunks(size).map(|c| c.iter().collect()).collect()
}

fn short_time(t: culprit_model::Timestamp) -> String {
    let s = t.to_kusto_string();
    format!("{} {}", &s[..10], &s[11..19])
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use culprit_model::correlation::{DetectionSummary, HuntingQueries, Links};
    use culprit_model::{DetectionKey, SourceKind, Timestamp};

    const PLAIN: Style = Style {
        color: false,
        width: 80,
    };

    fn node(depth: u32, name: &str, pid: u32, relation: &str) -> TreeNode {
        TreeNode {
            depth,
            file_name: name.into(),
            process_id: Some(pid),
            process_creation_time: None,
            command_line: String::new(),
            relation: relation.into(),
        }
    }

    fn answer(probable: ProcessAnswer) -> Correlation {
        Correlation {
            detection_id: "2570".into(),
            detection_key: DetectionKey("vectra:lab:2570:0".into()),
            source: SourceKind::Vectra,
            tenant: "lab".into(),
            status: Status::Attributed,
            error_kind: None,
            explanation: String::new(),
            device: None,
            devices: Vec::new(),
            probable: Some(probable),
            root_cause: None,
            candidates: Vec::new(),
            window_activity: Vec::new(),
            hunting_query: None,
            links: None,
            detection: DetectionSummary::default(),
            scorer: "culprit".into(),
            computed_at: Timestamp::parse("2023-08-16T05:05:00Z").unwrap(),
        }
    }

    fn section<'a>(panel: &'a str, title: &str) -> Vec<&'a str> {
        panel
            .lines()
            .skip_while(|l| !l.starts_with(title))
            .skip(1)
            .take_while(|l| !l.is_empty())
            .collect()
    }

    #[test]
    fn an_injector_is_an_edge_apart_not_a_child() {
        let p = ProcessAnswer {
            file_name: "svchost.exe".into(),
            process_id: 1400,
            process_tree: vec![
                node(0, "services.exe", 640, "parent"),
                node(1, "svchost.exe", 1400, "probable"),
                node(2, "winx64_payload.exe", 1988, "injector"),
                node(2, "cmd.exe", 7588, "child"),
                node(2, "whoami.exe", 7600, "child"),
            ],
            ..ProcessAnswer::default()
        };
        let panel = panel(&answer(p), PLAIN);
        let tree = section(&panel, "PROCESS TREE");
        assert_eq!(
            tree,
            [
                "  services.exe 640",
                "  └─ svchost.exe 1400  ← probable",
                "     ├─ cmd.exe 7588",
                "     └─ whoami.exe 7600",
                "  ⇠ injected by winx64_payload.exe 1988  (code injection into svchost.exe 1400, not a child)",
            ],
            "{panel}"
        );
    }

    #[test]
    fn a_process_it_injected_into_is_drawn_with_an_arrow() {
        let p = ProcessAnswer {
            file_name: "winx64_payload.exe".into(),
            process_id: 1988,
            process_tree: vec![
                node(0, "explorer.exe", 4544, "parent"),
                node(1, "winx64_payload.exe", 1988, "probable"),
                node(2, "cmd.exe", 7588, "child"),
                node(2, "svchost.exe", 1400, "injected"),
            ],
            ..ProcessAnswer::default()
        };
        let panel = panel(&answer(p), PLAIN);
        let tree = section(&panel, "PROCESS TREE");
        assert_eq!(tree[2], "     ├─ cmd.exe 7588");
        assert_eq!(
            tree[3],
            "     └─ ⇢ svchost.exe 1400  (code injected into it)"
        );
    }

    #[test]
    fn missing_facts_read_unknown() {
        let p = ProcessAnswer {
            file_name: "x.exe".into(),
            process_id: 7,
            ..ProcessAnswer::default()
        };
        let panel = panel(&answer(p), PLAIN);
        for label in [
            "Command line",
            "Path",
            "SHA256",
            "Account",
            "Started",
            "Parent",
        ] {
            let line = panel
                .lines()
                .find(|l| l.trim_start().starts_with(label))
                .unwrap_or_else(|| panic!("{label} missing:\n{panel}"));
            assert!(line.ends_with("unknown"), "{line}");
        }
        let head = panel.lines().next().unwrap();
        assert!(
            head.contains("threat unknown · certainty unknown"),
            "{head}"
        );
        assert!(panel.contains("time window unknown"), "{panel}");
    }

    #[test]
    fn long_queries_wrap_and_urls_stay_whole() {
        let url = format!(
            "https://security.microsoft.com/v2/advanced-hunting?query={}&timeRangeId=week",
            "H4sIAAAAAAAEA".repeat(20)
        );
        let query = format!(
            "DeviceNetworkEvents | where DeviceId == \"e28267a8375c8cc082a43a690e5d49796e73a79e\" and RemoteIP == \"10.0.5.13\" {}",
            "| project Timestamp, InitiatingProcessFileName, InitiatingProcessId ".repeat(4)
        );
        let mut c = answer(ProcessAnswer::default());
        c.hunting_query = Some(HuntingQueries {
            device: query.clone(),
            enterprise: String::new(),
        });
        c.links = Some(Links {
            device_page: String::new(),
            device_timeline: "https://security.microsoft.com/machines/e28267a8/timeline".into(),
            advanced_hunting: url.clone(),
        });
        let panel = panel(&c, PLAIN);
        let pivot = section(&panel, "PIVOT");
        for l in &pivot {
            assert!(
                l.chars().count() <= 80 || l.trim_start() == url,
                "overlong line: {l:?}"
            );
        }
        assert!(pivot.iter().any(|l| l.trim_start() == url), "{pivot:#?}");
        // The short URL fits beside its label.
        assert!(
            pivot
                .iter()
                .any(|l| l.starts_with("  Device timeline    https://"))
        );
        // The query is all there, in order, once the lines are joined.
        let hunt: Vec<&str> = pivot
            .iter()
            .skip_while(|l| !l.starts_with("  Hunt (device)"))
            .take_while(|l| !l.starts_with("  Open in"))
            .map(|l| l.get(21..).unwrap_or("").trim())
            .collect();
        assert_eq!(
            hunt.join(" "),
            query.split_whitespace().collect::<Vec<_>>().join(" ")
        );
    }

    #[test]
    fn wrap_fits_the_width_and_cuts_only_non_url_words() {
        let lines = wrap(&format!("a {} b", "x".repeat(50)), 40, 10);
        assert!(lines.iter().all(|l| l.chars().count() <= 30), "{lines:?}");
        assert_eq!(
            lines.concat().replace(' ', ""),
            format!("a{}b", "x".repeat(50))
        );
        let url = format!("https://example.com/{}", "y".repeat(60));
        assert_eq!(wrap(&url, 40, 10), [url]);
        assert_eq!(wrap("", 40, 0), [""]);
    }
}
