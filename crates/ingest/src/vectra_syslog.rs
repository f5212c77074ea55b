//! Vectra syslog output: CEF and JSON (`vectra_json_v2`), one message at a time, with or
//! without an RFC 5424 / RFC 3164 header, plus the framing helpers a TCP listener needs
//! (octet counting, RFC 6587, or newline-delimited).
//!
//! Normalisation (CEF keys; JSON keys in brackets):
//! - `source_id` = `externalId` (`detection_id`); revision = `end` epoch ms (`vectra_timestamp`
//!   epoch seconds) as RFC 3339, which is the detection's `last_timestamp`, so a syslog
//!   announcement and the API object of the same update share a key.
//! - `detection_type` = the CEF Name (`d_type_vname`); `category` = `cat` (`category`)
//!   normalised like the API's; threat/certainty from `flexNumber1/2` by their labels
//!   (`threat`, `certainty`); CEF severity 0–10 → `severity` 0–100.
//! - Host from `src`/`shost` (`host_ip`/`host_name`); `account=` (`account_uid`) without a host
//!   makes an account detection.
//! - The one destination `dst`/`dpt`/`proto`/`dhost`/`out`/`in` (`dd_*`) becomes one flow with one
//!   session over the window. `dst=0.0.0.0` means "several destinations": `needs_target_list`
//!   is set and no flow is made up.
//! - Score changes, campaigns, lockdown, audit and health messages are [`IngestError::Skipped`].

use culprit_model::detection::{Direction, HostRef, Protocol, SourceKind, Subject};
use culprit_model::{Detection, Session, Timestamp, Window};
use serde_json::{Map, Value};

use crate::flows::FlowSet;
use crate::json::{self, Path, Warnings, field, invalid, required, text};
use crate::time::{parse_epoch_millis, revision_string};
use crate::vectra::normalise_category;
use crate::{IngestError, Parsed, lines};

/// Largest syslog message accepted in an octet-counted frame.
pub const MAX_FRAME: usize = 256 * 1024;

/// Event classes on the Vectra feed that are not detections.
const NOT_DETECTIONS: &[&str] = &["hsc", "asc", "campaigns", "lockdown", "audit", "health"];

/// The next message in a TCP syslog byte stream: `Ok(Some((consumed, message)))`, or
/// `Ok(None)` when more bytes are needed. A frame that starts with a digit is octet-counted
/// (`LEN SP MSG`, RFC 6587 §3.4.1); anything else ends at LF (§3.4.2, trailing CR dropped).
pub fn next_frame(buf: &[u8]) -> Result<Option<(usize, &[u8])>, IngestError> {
    let bad = |reason: String| IngestError::Malformed {
        path: "frame".to_owned(),
        reason,
    };
    match buf.first() {
        None => Ok(None),
        Some(b) if b.is_ascii_digit() => {
            let Some(sp) = buf.iter().take(8).position(|&b| b == b' ') else {
                return if buf.len() >= 8 || !buf.iter().all(u8::is_ascii_digit) {
                    Err(bad(
                        "octet count is not digits followed by a space".to_owned()
                    ))
                } else {
                    Ok(None)
                };
            };
            let digits = &buf[..sp];
            let len: usize = std::str::from_utf8(digits)
                .ok()
                .filter(|d| d.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|d| d.parse().ok())
                .ok_or_else(|| bad("octet count is not a number".to_owned()))?;
            if len > MAX_FRAME {
                return Err(bad(format!("frame of {len} bytes exceeds {MAX_FRAME}")));
            }
            let end = sp + 1 + len;
            Ok(buf.get(sp + 1..end).map(|m| (end, m)))
        }
        Some(_) => match buf.iter().position(|&b| b == b'\n') {
            Some(nl) => {
                let line = &buf[..nl];
                Ok(Some((nl + 1, line.strip_suffix(b"\r").unwrap_or(line))))
            }
            None if buf.len() > MAX_FRAME => {
                Err(bad(format!("line longer than {MAX_FRAME} bytes")))
            }
            None => Ok(None),
        },
    }
}

/// The parts of a syslog header we keep; all optional, since Vectra can also send bare CEF.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SyslogHeader {
    pub pri: Option<u16>,
    /// RFC 5424 version (1); `None` for RFC 3164 or no header.
    pub version: Option<u16>,
    pub timestamp: Option<String>,
    pub hostname: Option<String>,
    pub app_name: Option<String>,
}

/// Splits a syslog message into its header and body (the CEF or JSON text).
pub fn split_header(msg: &[u8]) -> (SyslogHeader, &[u8]) {
    let mut h = SyslogHeader::default();
    let mut rest = msg;
    if rest.first() == Some(&b'<')
        && let Some(end) = rest.iter().take(5).position(|&b| b == b'>')
        && let Some(pri) = std::str::from_utf8(&rest[1..end])
            .ok()
            .and_then(|p| p.parse().ok())
    {
        h.pri = Some(pri);
        rest = &rest[end + 1..];
    }
    // A body that starts right away (bare CEF or JSON after the PRI).
    if body_start(rest) == Some(0) {
        return (h, rest);
    }
    let mut tokens = Tokens(rest);
    tokens.skip_spaces();
    let first = tokens.peek().unwrap_or_default();
    if !first.is_empty() && first.len() <= 3 && first.bytes().all(|b| b.is_ascii_digit()) {
        // RFC 5424: VERSION TIMESTAMP HOSTNAME APP-NAME PROCID MSGID SD [MSG]
        h.version = first.parse().ok();
        tokens.next();
        h.timestamp = tokens.next_value();
        h.hostname = tokens.next_value();
        h.app_name = tokens.next_value();
        tokens.next();
        tokens.next();
        tokens.skip_structured_data();
        let body = tokens.0;
        return (h, body.strip_prefix("\u{feff}".as_bytes()).unwrap_or(body));
    }
    // RFC 3164: "Mmm dd hh:mm:ss HOST TAG: MSG"; the body is found by its own marker.
    if first.len() == 3 && first.bytes().all(|b| b.is_ascii_alphabetic()) {
        let parts: Vec<String> = (0..4)
            .filter_map(|_| tokens.next())
            .map(str::to_owned)
            .collect();
        if parts.len() == 4 {
            h.timestamp = Some(parts[..3].join(" "));
            h.hostname = Some(parts[3].clone());
        }
    }
    match body_start(rest) {
        Some(i) => {
            if h.version.is_none()
                && let Some(tag) = std::str::from_utf8(&rest[..i])
                    .ok()
                    .and_then(|s| s.split_whitespace().nth(4))
            {
                h.app_name = Some(tag.trim_end_matches(':').to_owned());
            }
            (h, &rest[i..])
        }
        None => (h, rest),
    }
}

/// Where the payload starts: `CEF:` or the first `{`.
fn body_start(b: &[u8]) -> Option<usize> {
    let cef = b.windows(4).position(|w| w == b"CEF:");
    let json = b.iter().position(|&c| c == b'{');
    match (cef, json) {
        (Some(c), Some(j)) => Some(c.min(j)),
        (c, j) => c.or(j),
    }
}

/// Space-separated header tokens over bytes.
struct Tokens<'a>(&'a [u8]);

impl<'a> Tokens<'a> {
    /// RFC 3164 pads single-digit days with a second space (`Jan  6`).
    fn skip_spaces(&mut self) {
        while self.0.first() == Some(&b' ') {
            self.0 = &self.0[1..];
        }
    }
    fn peek(&self) -> Option<&'a str> {
        let end = self
            .0
            .iter()
            .position(|&b| b == b' ')
            .unwrap_or(self.0.len());
        std::str::from_utf8(&self.0[..end]).ok()
    }
    fn next(&mut self) -> Option<&'a str> {
        self.skip_spaces();
        let tok = self.peek();
        let end = self
            .0
            .iter()
            .position(|&b| b == b' ')
            .map_or(self.0.len(), |e| e + 1);
        self.0 = &self.0[end..];
        tok
    }
    /// A header field; RFC 5424 writes `-` for "none".
    fn next_value(&mut self) -> Option<String> {
        self.next()
            .filter(|t| *t != "-" && !t.is_empty())
            .map(str::to_owned)
    }
    /// `-` or `[id k="v" ...]...`, with `\]` and `\"` escapes inside quoted values.
    fn skip_structured_data(&mut self) {
        if self.0.first() == Some(&b'-') {
            self.next();
            return;
        }
        let mut i = 0;
        let (mut in_quotes, mut depth) = (false, 0usize);
        while let Some(&b) = self.0.get(i) {
            match b {
                b'\\' if in_quotes => i += 1,
                b'"' if depth > 0 => in_quotes = !in_quotes,
                b'[' if !in_quotes => depth += 1,
                b']' if !in_quotes => depth = depth.saturating_sub(1),
                b' ' if depth == 0 && !in_quotes => break,
                _ => {}
            }
            i += 1;
        }
        let end = (i + 1).min(self.0.len());
        self.0 = &self.0[end..];
    }
}

/// One syslog message (header optional), CEF or JSON body.
pub fn parse_message(msg: &[u8], tenant: &str) -> Result<Detection, IngestError> {
    parse_message_at(msg, tenant, "")
}

/// A file or UDP batch of newline-delimited messages; `raw_index` = line index.
pub fn parse_lines(bytes: &[u8], tenant: &str) -> Vec<Parsed> {
    lines(bytes)
        .map(|(i, line)| Parsed {
            raw_index: i,
            detection: parse_message_at(line, tenant, &format!("line {}:", i + 1)),
        })
        .collect()
}

fn parse_message_at(msg: &[u8], tenant: &str, label: &str) -> Result<Detection, IngestError> {
    let (_, body) = split_header(msg);
    let root = Path::Root(label);
    if body.first() == Some(&b'{') {
        let v = crate::json_line(body, if label.is_empty() { "$" } else { label })?;
        return json_at(&v, tenant, &root);
    }
    let text = std::str::from_utf8(body).map_err(|e| IngestError::Malformed {
        path: root.render(),
        reason: format!("not UTF-8: {e}"),
    })?;
    if !text.starts_with("CEF:") {
        return Err(IngestError::Malformed {
            path: root.render(),
            reason: "neither a CEF message nor JSON".to_owned(),
        });
    }
    cef_at(text, tenant, &root)
}

/// A CEF message (`CEF:0|Vectra Networks|X Series|...`) without syslog header.
pub fn parse_cef(cef: &str, tenant: &str) -> Result<Detection, IngestError> {
    cef_at(cef, tenant, &Path::Root(""))
}

/// Splits `CEF:0|vendor|product|version|signature|name|severity|extension` on unescaped
/// pipes (`\|` and `\\` are escapes in the header).
fn cef_header(cef: &str) -> Option<(Vec<String>, &str)> {
    let body = cef.strip_prefix("CEF:")?;
    let mut fields = Vec::with_capacity(7);
    let mut cur = String::new();
    let mut chars = body.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => {
                if let Some((_, n)) = chars.next() {
                    cur.push(n);
                }
            }
            '|' => {
                fields.push(std::mem::take(&mut cur));
                if fields.len() == 7 {
                    return Some((fields, &body[i + 1..]));
                }
            }
            _ => cur.push(c),
        }
    }
    None
}

/// CEF extension `k=v k2=v with spaces` into a JSON object of strings. A key is the word
/// before an unescaped `=`; the value runs to the space before the next key. Values unescape
/// `\=`, `\\`, `\n`, `\r`.
pub fn cef_extension(ext: &str) -> Map<String, Value> {
    let b = ext.as_bytes();
    // (key start, '=' position) of every key.
    let mut keys: Vec<(usize, usize)> = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'\\' => i += 1,
            b'=' => {
                let start = ext[..i].rfind(' ').map_or(0, |s| s + 1);
                let after_prev = keys.last().is_none_or(|&(_, eq)| start > eq);
                let key = &ext[start..i];
                let valid = !key.is_empty()
                    && key
                        .bytes()
                        .all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'.');
                if after_prev && valid {
                    keys.push((start, i));
                }
            }
            _ => {}
        }
        i += 1;
    }
    let mut map = Map::with_capacity(keys.len());
    for (n, &(start, eq)) in keys.iter().enumerate() {
        let end = keys.get(n + 1).map_or(ext.len(), |&(next, _)| next);
        let raw = ext.get(eq + 1..end).unwrap_or("").trim_end();
        map.insert(ext[start..eq].to_owned(), Value::String(cef_unescape(raw)));
    }
    map
}

fn cef_unescape(s: &str) -> String {
    if !s.contains('\\') {
        return s.to_owned();
    }
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some(other) => out.push(other),
            None => out.push('\\'),
        }
    }
    out
}

/// What the two syslog formats share once their keys are mapped.
struct Common {
    type_name: String,
    class: String,
    severity: Option<u32>,
    window: Window,
    /// The detection's last update: its revision.
    last: Timestamp,
}

fn cef_at(cef: &str, tenant: &str, root: &Path<'_>) -> Result<Detection, IngestError> {
    let (header, ext) = cef_header(cef).ok_or_else(|| IngestError::Malformed {
        path: root.render(),
        reason: "CEF header needs 7 pipe-separated fields".to_owned(),
    })?;
    let hp = root.key("header");
    let class = header[4].clone();
    if NOT_DETECTIONS.contains(&class.to_ascii_lowercase().as_str()) {
        return Err(IngestError::Skipped {
            path: hp.key("signature_id").render(),
            reason: format!("event class {:?} is not a detection", json::clip(&class)),
        });
    }
    let x = Value::Object(cef_extension(ext));
    let mut w = Warnings::default();
    let severity = w.keep(json::score(
        &Value::String(header[6].clone()),
        &hp.key("severity"),
    ));
    // flexNumberN carries what its label says; Vectra labels 1 = threat, 2 = certainty.
    let labelled = |label: &str, default: &'static str| -> &'static str {
        ["flexNumber1", "flexNumber2"]
            .into_iter()
            .find(|k| field(&x, &format!("{k}Label")).and_then(Value::as_str) == Some(label))
            .unwrap_or(default)
    };
    let threat_key = labelled("threat", "flexNumber1");
    let certainty_key = labelled("certainty", "flexNumber2");
    let keys = Keys {
        id: "externalId",
        category: "cat",
        host_ip: "src",
        host_name: "shost",
        account: "account",
        threat: threat_key,
        certainty: certainty_key,
        dst_ip: "dst",
        dst_port: "dpt",
        dst_name: "dhost",
        proto: "proto",
        bytes_sent: "out",
        bytes_received: "in",
    };
    let start = w.opt(&x, "start", root, epoch_ms);
    let end = match field(&x, "end") {
        Some(v) => Some(epoch_ms(v, &root.key("end"))?),
        None => None,
    };
    let last = end.or(start).ok_or_else(|| IngestError::Missing {
        path: format!("{} (or start)", root.key("end").render()),
    })?;
    let common = Common {
        type_name: header[5].clone(),
        class,
        severity: severity.map(|s| s.saturating_mul(10)),
        window: Window::new(start.unwrap_or(last), last),
        last,
    };
    build(&x, tenant, root, &keys, common, w)
}

/// Field names of one syslog flavour.
struct Keys<'a> {
    id: &'a str,
    category: &'a str,
    host_ip: &'a str,
    host_name: &'a str,
    account: &'a str,
    threat: &'a str,
    certainty: &'a str,
    dst_ip: &'a str,
    dst_port: &'a str,
    dst_name: &'a str,
    proto: &'a str,
    bytes_sent: &'a str,
    bytes_received: &'a str,
}

const JSON_KEYS: Keys<'static> = Keys {
    id: "detection_id",
    category: "category",
    host_ip: "host_ip",
    host_name: "host_name",
    account: "account_uid",
    threat: "threat",
    certainty: "certainty",
    dst_ip: "dd_dst_ip",
    dst_port: "dd_dst_port",
    dst_name: "dd_dst_dns",
    proto: "dd_proto",
    bytes_sent: "dd_bytes_sent",
    bytes_received: "dd_bytes_rcvd",
};

/// One JSON syslog payload (`vectra_json_v2`), already parsed.
pub fn parse_json_payload(v: &Value, tenant: &str) -> Result<Detection, IngestError> {
    json_at(v, tenant, &Path::Root(""))
}

fn json_at(v: &Value, tenant: &str, root: &Path<'_>) -> Result<Detection, IngestError> {
    if !v.is_object() {
        return Err(invalid(root, "expected a JSON object"));
    }
    let class = field(v, "d_type")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    if NOT_DETECTIONS.contains(&class.to_ascii_lowercase().as_str()) {
        return Err(IngestError::Skipped {
            path: root.key("d_type").render(),
            reason: format!("event class {:?} is not a detection", json::clip(&class)),
        });
    }
    let mut w = Warnings::default();
    let when = required(v, &["vectra_timestamp"], root, json::time)?;
    let type_name = required(v, &["d_type_vname"], root, json::non_empty_text)?;
    let common = Common {
        type_name,
        class,
        severity: w.opt(v, "severity", root, json::score),
        window: Window::new(when, when),
        last: when,
    };
    build(v, tenant, root, &JSON_KEYS, common, w)
}

fn epoch_ms(v: &Value, path: &Path<'_>) -> Result<Timestamp, IngestError> {
    let ms = json::uint(v, path)?;
    i64::try_from(ms)
        .map_err(|_| invalid(path, "epoch milliseconds out of range"))
        .and_then(|ms| parse_epoch_millis(ms).map_err(|e| invalid(path, e)))
}

fn build(
    x: &Value,
    tenant: &str,
    root: &Path<'_>,
    k: &Keys<'_>,
    common: Common,
    mut w: Warnings,
) -> Result<Detection, IngestError> {
    let window = common.window;
    let source_id = required(x, &[k.id], root, json::non_empty_text)?;
    let host = HostRef {
        ip: w.opt(x, k.host_ip, root, json::ip),
        name: w.opt(x, k.host_name, root, text).filter(|n| !n.is_empty()),
        source_host_id: None,
    };
    let account = w.opt(x, k.account, root, text).filter(|a| !a.is_empty());
    let subject = if host.ip.is_none() && host.name.is_none() && account.is_some() {
        Subject::Account
    } else {
        Subject::Host
    };
    if subject == Subject::Host && host.ip.is_none() && host.name.is_none() {
        return Err(IngestError::Missing {
            path: format!("{} (or {})", root.key(k.host_ip).render(), k.host_name),
        });
    }
    let mut flows = FlowSet::default();
    let mut needs_target_list = false;
    match w.opt(x, k.dst_ip, root, json::ip) {
        Some(ip) if ip.is_unspecified() => needs_target_list = true,
        Some(ip) => {
            let session = Session {
                first: window.start,
                last: window.end,
                local_port: None,
                bytes_sent: w.opt(x, k.bytes_sent, root, json::uint),
                bytes_received: w.opt(x, k.bytes_received, root, json::uint),
                community_id: None,
            };
            let protocol = w
                .opt(x, k.proto, root, text)
                .map(|p| Protocol::parse(&p))
                .unwrap_or_default();
            let domain = w.opt(x, k.dst_name, root, text).filter(|d| !d.is_empty());
            let port = w.opt(x, k.dst_port, root, json::port).filter(|p| *p != 0);
            flows.add(ip, port, protocol, domain, session);
        }
        None => {}
    }
    let category = w
        .opt(x, k.category, root, text)
        .map(|c| normalise_category(&c))
        .unwrap_or_default();
    Ok(Detection {
        source: SourceKind::Vectra,
        tenant: tenant.to_owned(),
        source_id,
        revision: revision_string(common.last),
        category,
        detection_type: common.type_name,
        threat: w.opt(x, k.threat, root, json::score),
        certainty: w.opt(x, k.certainty, root, json::score),
        severity: common.severity,
        subject,
        direction: Direction::Outbound,
        host,
        window,
        flows: flows.into_flows(),
        needs_target_list,
        // Vectra's internal detection code (`smb_psexec`): says more than the display name.
        summary: (!common.class.is_empty()).then_some(common.class),
        warnings: w.0,
    })
}

#[cfg(test)]
mod tests;
