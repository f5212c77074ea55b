//! KQL: AST, printer, parser and evaluator over in-memory tables.
//!
//! `parse` turns text into an [`ast::Query`], [`printer::print`] turns it back into text that
//! re-parses to the same tree, and [`evaluate`] runs it over a [`Database`] of named tables
//! with Kusto's semantics (learn.microsoft.com/en-us/kusto/query/).

pub mod ast;
mod compile;
pub mod corpus;
mod eval;
mod lexer;
mod ops;
mod parser;
pub mod printer;
mod scalar;
pub mod schema;
mod values;

use std::collections::BTreeMap;
use std::sync::Arc;

pub use culprit_model::{Column, KustoType, Table, Timestamp, Value};

/// Why a query could not be parsed or run. Every variant names a 1-based line and column.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KqlError {
    #[error("syntax error at {line}:{column}: {message}")]
    Syntax {
        line: u32,
        column: u32,
        message: String,
    },
    #[error("unsupported operator {operator} at {line}:{column}")]
    Unsupported {
        operator: String,
        line: u32,
        column: u32,
    },
    #[error("semantic error at {line}:{column}: {message}")]
    Semantic {
        line: u32,
        column: u32,
        message: String,
    },
}

impl KqlError {
    /// A short stable name of the error's kind, for grouping failures in reports.
    pub fn kind(&self) -> String {
        match self {
            KqlError::Syntax { .. } => "syntax".to_owned(),
            KqlError::Unsupported { operator, .. } => format!("unsupported:{operator}"),
            KqlError::Semantic { .. } => "semantic".to_owned(),
        }
    }
}

/// Named tables. Tables are shared (`Arc`), so cloning a database is cheap.
#[derive(Clone, Debug, Default)]
pub struct Database {
    tables: BTreeMap<String, Arc<Table>>,
}

impl Database {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds or replaces a table. String cells that are null become `""`: Kusto strings have
    /// no null (https://learn.microsoft.com/en-us/kusto/query/scalar-data-types/null-values).
    pub fn insert(&mut self, name: impl Into<String>, table: Table) {
        self.tables
            .insert(name.into(), Arc::new(eval::normalize_strings(table)));
    }

    pub fn get(&self, name: &str) -> Option<&Table> {
        self.tables.get(name).map(|t| t.as_ref())
    }

    /// Loads `NAME.jsonl` files (one JSON object per row, as in the scenario folders) from a
    /// directory, each as table NAME; Device* tables get their full schema.
    pub fn from_dir(dir: &std::path::Path) -> std::io::Result<Database> {
        let mut db = Database::new();
        let mut entries: Vec<_> = std::fs::read_dir(dir)?.collect::<Result<_, _>>()?;
        entries.sort_by_key(|e| e.path());
        for e in entries {
            let path = e.path();
            let (Some(stem), Some("jsonl")) = (
                path.file_stem().and_then(|s| s.to_str()),
                path.extension().and_then(|s| s.to_str()),
            ) else {
                continue;
            };
            let text = std::fs::read_to_string(&path)?;
            let table = table_from_jsonl(stem, &text).map_err(|e| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("{}: {e}", path.display()),
                )
            })?;
            db.insert(stem, table);
        }
        Ok(db)
    }

    pub fn table_names(&self) -> Vec<String> {
        self.tables.keys().cloned().collect()
    }
}

#[derive(Clone, Debug)]
pub struct EvalOptions {
    /// The instant `now()` and `ago()` are relative to.
    pub now: Timestamp,
    /// Stop producing output rows beyond this many; the caller flags truncation.
    pub row_limit: Option<usize>,
}

impl Default for EvalOptions {
    fn default() -> Self {
        EvalOptions {
            now: Timestamp::now(),
            row_limit: None,
        }
    }
}

/// Parses a query (statements separated by `;`).
pub fn parse(text: &str) -> Result<ast::Query, KqlError> {
    parser::parse_query(text)
}

/// Evaluates a parsed query: the result of its last tabular statement.
pub fn evaluate(q: &ast::Query, db: &Database, opts: &EvalOptions) -> Result<Table, KqlError> {
    eval::evaluate(q, db, opts)
}

/// Parses and evaluates.
pub fn run(text: &str, db: &Database, opts: &EvalOptions) -> Result<Table, KqlError> {
    evaluate(&parse(text)?, db, opts)
}

/// The value a literal stands for.
pub(crate) fn literal_value(l: &ast::Literal) -> Value {
    use ast::Literal as L;
    match l {
        L::Null => Value::Null,
        L::Bool(b) => Value::Bool(*b),
        L::Int(i) => Value::Int(*i),
        L::Real(r) => Value::Real(*r),
        L::String(s) => Value::String(s.clone()),
        L::DateTime(t) => Value::DateTime(*t),
        L::TimeSpan(d) => Value::TimeSpan(*d),
        L::Dynamic(j) if j.is_null() => Value::Null,
        L::Dynamic(j) => Value::Dynamic(j.clone()),
        L::Typed { ty, raw } => match (ty.as_str(), raw.as_str()) {
            (_, "null") => Value::Null,
            ("real" | "double", "nan") => Value::Real(f64::NAN),
            ("real" | "double", "+inf" | "inf") => Value::Real(f64::INFINITY),
            ("real" | "double", "-inf") => Value::Real(f64::NEG_INFINITY),
            ("guid", g) => Value::String(g.to_owned()),
            _ => Value::Null,
        },
    }
}

/// Reads JSON Lines rows into a table: under the known schema of a Device* table, else under
/// columns inferred from the first row that has each key.
pub fn table_from_jsonl(name: &str, text: &str) -> Result<Table, KqlError> {
    let mut objects = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let v: serde_json::Value = serde_json::from_str(line).map_err(|e| KqlError::Syntax {
            line: u32::try_from(i + 1).unwrap_or(u32::MAX),
            column: u32::try_from(e.column()).unwrap_or(u32::MAX),
            message: format!("row of {name} is not JSON: {e}"),
        })?;
        match v {
            serde_json::Value::Object(m) => objects.push(m),
            _ => {
                return Err(KqlError::Syntax {
                    line: u32::try_from(i + 1).unwrap_or(u32::MAX),
                    column: 1,
                    message: format!("row of {name} is not a JSON object"),
                });
            }
        }
    }
    let columns = schema::columns(name).unwrap_or_else(|| infer_columns(&objects));
    Ok(Table::from_json_objects(columns, objects.iter()))
}

fn infer_columns(objects: &[serde_json::Map<String, serde_json::Value>]) -> Vec<Column> {
    let mut cols: Vec<Column> = Vec::new();
    for o in objects {
        for (k, v) in o {
            let ty = match v {
                serde_json::Value::Null => continue,
                serde_json::Value::Bool(_) => KustoType::Boolean,
                serde_json::Value::Number(n) if n.is_i64() => KustoType::Int64,
                serde_json::Value::Number(_) => KustoType::Double,
                serde_json::Value::String(s)
                    if s.len() >= 19 && values::parse_datetime(s).is_some() =>
                {
                    KustoType::DateTime
                }
                serde_json::Value::String(_) => KustoType::String,
                _ => KustoType::Object,
            };
            if !cols.iter().any(|c| &c.name == k) {
                cols.push(Column::new(k.clone(), ty));
            }
        }
    }
    cols
}
