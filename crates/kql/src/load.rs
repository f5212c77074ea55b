//! Reading recorded Advanced Hunting tables (`<Table>.jsonl`: one JSON object per row, as the
//! scenario folders and hunting exports hold them). Device* tables get their full schema;
//! other tables get one inferred from the rows.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use culprit_model::{Column, KustoType, Table, Timestamp};

use crate::columnar::{ColumnarBuilder, ColumnarTable};

/// A file that could not be read as a table; the reason names the line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {reason}", path.display())]
pub struct LoadError {
    pub path: PathBuf,
    pub reason: String,
}

/// Every `*.jsonl` in `dir`, each as the table named by its file stem.
pub fn load_dir(dir: &Path) -> Result<BTreeMap<String, Table>, LoadError> {
    let mut out = BTreeMap::new();
    for (name, file) in jsonl_files(dir)? {
        let table = load_table(&name, &file)?;
        out.insert(name, table);
    }
    Ok(out)
}

/// As [`load_dir`], each table stored by column.
pub fn load_dir_columnar(dir: &Path) -> Result<BTreeMap<String, ColumnarTable>, LoadError> {
    let mut out = BTreeMap::new();
    for (name, file) in jsonl_files(dir)? {
        let table = load_table_columnar(&name, &file)?;
        out.insert(name, table);
    }
    Ok(out)
}

/// As [`load_table`], straight into columns: no row of values is ever built.
pub fn load_table_columnar(name: &str, file: &Path) -> Result<ColumnarTable, LoadError> {
    let mut b = ColumnarBuilder::new(table_columns(name, file)?);
    for_each_object(file, |obj| b.push_json_object(&obj))?;
    Ok(b.finish())
}

fn table_columns(name: &str, file: &Path) -> Result<Vec<Column>, LoadError> {
    Ok(match crate::schema::columns(name) {
        Some(known) => known,
        None => {
            let mut inference = Inference::default();
            for_each_object(file, |obj| inference.observe(&obj))?;
            inference.columns
        }
    })
}

/// The `*.jsonl` files of a folder with their table names, in name order.
fn jsonl_files(dir: &Path) -> Result<Vec<(String, PathBuf)>, LoadError> {
    let entries = std::fs::read_dir(dir).map_err(|e| LoadError {
        path: dir.to_owned(),
        reason: format!("cannot list the folder: {e}"),
    })?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .collect();
    files.sort();
    Ok(files
        .into_iter()
        .filter_map(|f| {
            let name = f.file_stem().and_then(|s| s.to_str())?.to_owned();
            Some((name, f))
        })
        .collect())
}

/// Reads one table a line at a time: a million-row file is never held as JSON trees.
pub fn load_table(name: &str, file: &Path) -> Result<Table, LoadError> {
    let mut table = Table::new(table_columns(name, file)?);
    for_each_object(file, |obj| table.push_json_object(&obj))?;
    Ok(table)
}

type Object = serde_json::Map<String, serde_json::Value>;

/// Calls `f` with each line's object; an error names the file, the line and the reason.
fn for_each_object(file: &Path, mut f: impl FnMut(Object)) -> Result<(), LoadError> {
    use std::io::BufRead;
    let err = |reason: String| LoadError {
        path: file.to_owned(),
        reason,
    };
    let reader = std::fs::File::open(file)
        .map(std::io::BufReader::new)
        .map_err(|e| err(format!("cannot read: {e}")))?;
    for (n, line) in reader.lines().enumerate() {
        let line = line.map_err(|e| err(format!("line {}: cannot read: {e}", n + 1)))?;
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<serde_json::Value>(&line) {
            Ok(serde_json::Value::Object(obj)) => f(obj),
            Ok(_) => return Err(err(format!("line {}: expected a JSON object", n + 1))),
            Err(e) => return Err(err(format!("line {}: invalid JSON: {e}", n + 1))),
        }
    }
    Ok(())
}

/// A schema for a table the engine does not know: columns in order of first appearance, each
/// typed by its first non-null value.
#[derive(Debug, Default)]
pub struct Inference {
    pub columns: Vec<Column>,
    typed: Vec<bool>,
}

impl Inference {
    pub fn observe(&mut self, obj: &Object) {
        for (key, value) in obj {
            let ty = infer_type(value);
            match self.columns.iter().position(|c| &c.name == key) {
                Some(i) if !self.typed[i] => {
                    if let Some(ty) = ty {
                        self.columns[i].ty = ty;
                        self.typed[i] = true;
                    }
                }
                Some(_) => {}
                None => {
                    self.columns
                        .push(Column::new(key.clone(), ty.unwrap_or(KustoType::String)));
                    self.typed.push(ty.is_some());
                }
            }
        }
    }
}

fn infer_type(v: &serde_json::Value) -> Option<KustoType> {
    use serde_json::Value as J;
    match v {
        J::Null => None,
        J::Bool(_) => Some(KustoType::Boolean),
        J::Number(n) if n.is_i64() || n.is_u64() => Some(KustoType::Int64),
        J::Number(_) => Some(KustoType::Double),
        J::Array(_) | J::Object(_) => Some(KustoType::Object),
        J::String(s) if s.is_empty() => None,
        J::String(s) if looks_like_datetime(s) => Some(KustoType::DateTime),
        J::String(_) => Some(KustoType::String),
    }
}

/// Only the API's own datetime shape counts, so free text that happens to parse stays text.
fn looks_like_datetime(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() >= 20
        && b[4] == b'-'
        && b[7] == b'-'
        && b[10] == b'T'
        && s.ends_with('Z')
        && Timestamp::parse(s).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn infers_types_from_the_first_non_null_value() {
        let rows = [
            json!({"A": null, "B": "x", "C": 1, "D": "2023-08-16T04:54:30.9870000Z"}),
            json!({"A": true, "B": "y", "C": 2, "D": null, "E": 1.5}),
        ];
        let mut inference = Inference::default();
        for r in &rows {
            inference.observe(r.as_object().unwrap());
        }
        let types: Vec<_> = inference
            .columns
            .iter()
            .map(|c| (c.name.as_str(), c.ty))
            .collect();
        assert_eq!(
            types,
            vec![
                ("A", KustoType::Boolean),
                ("B", KustoType::String),
                ("C", KustoType::Int64),
                ("D", KustoType::DateTime),
                ("E", KustoType::Double),
            ]
        );
    }

    #[test]
    fn free_text_is_not_taken_for_a_date() {
        assert_eq!(infer_type(&json!("2023-08-16")), Some(KustoType::String));
        assert_eq!(infer_type(&json!("")), None);
    }
}
