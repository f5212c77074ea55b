//! What people read: a panel per correlation and a one-line summary. Colour only on a
//! terminal; plain text otherwise (pipes, files, CI logs).

use std::fmt::Write as _;

use culprit_model::correlation::{ProcessAnswer, TreeNode};
use culprit_model::{Correlation, Status};

/// Styling switch: ANSI escapes on a terminal, nothing elsewhere.
#[derive(Debug, Clone, Copy)]
pub struct Style {
    pub color: bool,
}

impl Style {
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
    fn status(self, st: Status) -> String {
        let code = match st {
            Status::Attributed => "1;32",
            Status::HuntFailed => "1;31",
            _ => "1;33",
        };
        self.paint(code, st.as_str())
    }
}

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
    let score = match (d.threat, d.certainty) {
        (Some(t), Some(ce)) => format!(" · threat {t} · certainty {ce}"),
        _ => String::new(),
    };
    let _ = writeln!(
        out,
        "{}",
        style.bold(&format!(
            "Detection {} · {} · {}{}",
            c.detection_id,
            d.detection_type,
            d.category.replace('_', " "),
            score
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
        _ => String::new(),
    };
    let device = c
        .device
        .as_ref()
        .map(|dv| format!(" · device {}", dv.device_name))
        .unwrap_or_default();
    let _ = writeln!(out, "Host {host}{device} · {window} · {}", d.traffic);
    let _ = writeln!(out);

    match (&c.probable, c.status) {
        (Some(p), Status::Attributed) => probable(&mut out, c, p, style),
        _ => {
            let _ = writeln!(out, "{}  {}", style.status(c.status), c.explanation);
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
    let field = |out: &mut String, k: &str, v: &str| {
        if !v.is_empty() {
            let _ = writeln!(out, "  {:<14} {v}", k);
        }
    };
    field(out, "Command line", &p.command_line);
    field(out, "Path", &p.folder_path);
    field(out, "SHA256", &p.sha256);
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
    field(out, "Account", &account);
    field(
        out,
        "Started",
        &p.process_creation_time
            .map(|t| t.to_millis_string())
            .unwrap_or_default(),
    );
    if let Some(parent) = &p.parent {
        let pid = parent
            .process_id
            .map(|x| format!(" (PID {x})"))
            .unwrap_or_default();
        field(out, "Parent", &format!("{}{pid}", parent.file_name));
    }
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

fn tree(out: &mut String, nodes: &[TreeNode], style: Style) {
    for n in nodes {
        let indent = "   ".repeat(n.depth as usize);
        let branch = if n.depth == 0 { "" } else { "└─ " };
        let pid = n.process_id.map(|p| format!(" {p}")).unwrap_or_default();
        let mark = match n.relation.as_str() {
            "probable" => style.bold("  ← probable"),
            "" | "parent" | "child" | "ancestor" => String::new(),
            other => style.dim(&format!("  ({other})")),
        };
        let _ = writeln!(out, "  {indent}{branch}{}{pid}{mark}", n.file_name);
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
        let _ = writeln!(
            out,
            "  {}  {:<22} {:>6}  {:>2} session{}  {}",
            i + 2,
            name,
            x.process_id,
            x.sessions_owned,
            if x.sessions_owned == 1 { " " } else { "s" },
            style.dim(why)
        );
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
        let _ = writeln!(out, "  {k:<18} {one_line}");
    }
}

fn short_time(t: culprit_model::Timestamp) -> String {
    let s = t.to_kusto_string();
    format!("{} {}", &s[..10], &s[11..19])
}
