//! Zeek's ASCII writer: `#separator`, `#set_separator`, `#empty_field`, `#unset_field`,
//! `#fields` and `#types` directives, then one row per line.

use serde_json::{Map, Number, Value};

use crate::IngestError;

#[derive(Debug)]
pub(super) struct Header {
    separator: String,
    set_separator: String,
    empty: String,
    unset: String,
    fields: Vec<String>,
    types: Vec<String>,
}

impl Default for Header {
    fn default() -> Self {
        Header {
            separator: "\t".to_owned(),
            set_separator: ",".to_owned(),
            empty: "(empty)".to_owned(),
            unset: "-".to_owned(),
            fields: Vec::new(),
            types: Vec::new(),
        }
    }
}

/// Decodes Zeek's `\xHH` escapes (used for separators in headers and for bytes in values).
pub(super) fn unescape(s: &str) -> String {
    if !s.contains("\\x") {
        return s.to_owned();
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && b.get(i + 1) == Some(&b'x')
            && let Some(hex) = s.get(i + 2..i + 4)
            && let Ok(byte) = u8::from_str_radix(hex, 16)
        {
            out.push(byte);
            i += 4;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl Header {
    /// A `#...` line. Unknown directives (`#path`, `#open`, `#close`, banners) are ignored.
    pub(super) fn directive(&mut self, line: &[u8]) {
        let text = String::from_utf8_lossy(line);
        // `#separator` is always followed by a space; later directives use the separator.
        if let Some(rest) = text.strip_prefix("#separator ") {
            let sep = unescape(rest.trim_end_matches(['\r', '\n']));
            if !sep.is_empty() {
                self.separator = sep;
            }
            return;
        }
        let mut parts = text.split(self.separator.as_str());
        let key = parts.next().unwrap_or("");
        let values: Vec<String> = parts.map(str::to_owned).collect();
        let single = || values.first().cloned().unwrap_or_default();
        match key {
            "#set_separator" => self.set_separator = unescape(&single()),
            "#empty_field" => self.empty = single(),
            "#unset_field" => self.unset = single(),
            "#fields" => {
                self.fields = values;
                self.types.clear();
            }
            "#types" => self.types = values,
            _ => {}
        }
    }

    /// One data row as a flat JSON object keyed by the `#fields` names.
    pub(super) fn row(&self, line: &[u8], label: &str) -> Result<Value, IngestError> {
        if self.fields.is_empty() {
            return Err(IngestError::Malformed {
                path: label.to_owned(),
                reason: "TSV row before any #fields header".to_owned(),
            });
        }
        let text = String::from_utf8_lossy(line);
        let cols: Vec<&str> = text.split(self.separator.as_str()).collect();
        if cols.len() != self.fields.len() {
            return Err(IngestError::Malformed {
                path: label.to_owned(),
                reason: format!(
                    "{} columns, the #fields header has {}",
                    cols.len(),
                    self.fields.len()
                ),
            });
        }
        let mut map = Map::with_capacity(cols.len());
        for (i, (name, raw)) in self.fields.iter().zip(cols).enumerate() {
            let ty = self.types.get(i).map_or("string", String::as_str);
            if let Some(v) = self.value(raw, ty) {
                map.insert(name.clone(), v);
            }
        }
        Ok(Value::Object(map))
    }

    /// A typed value; `None` for the unset marker. Values that do not fit their type stay
    /// strings, so the consumer reports them as bad fields instead of failing the row.
    fn value(&self, raw: &str, ty: &str) -> Option<Value> {
        if raw == self.unset {
            return None;
        }
        if ty.starts_with("set[") || ty.starts_with("vector[") {
            if raw == self.empty {
                return Some(Value::Array(Vec::new()));
            }
            let items = raw
                .split(self.set_separator.as_str())
                .map(|s| Value::String(unescape(s)));
            return Some(Value::Array(items.collect()));
        }
        if raw == self.empty {
            return Some(Value::String(String::new()));
        }
        let typed = match ty {
            // `time` and `interval` stay text: parsed exactly to ticks by the consumer.
            "double" => raw
                .parse::<f64>()
                .ok()
                .and_then(Number::from_f64)
                .map(Value::Number),
            "count" | "port" => raw.parse::<u64>().ok().map(|n| Value::Number(n.into())),
            "int" => raw.parse::<i64>().ok().map(|n| Value::Number(n.into())),
            "bool" => match raw {
                "T" => Some(Value::Bool(true)),
                "F" => Some(Value::Bool(false)),
                _ => None,
            },
            _ => None,
        };
        Some(typed.unwrap_or_else(|| Value::String(unescape(raw))))
    }
}
