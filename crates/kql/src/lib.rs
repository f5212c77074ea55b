//! KQL: AST, printer, parser and evaluator over in-memory tables.
//!
//! `parse` turns text into an [`ast::Query`], [`printer::print`] turns it back into text that
//! re-parses to the same tree, and [`evaluate`] runs it over a [`Database`] of named tables
//! with Kusto's semantics (learn.microsoft.com/en-us/kusto/query/).

pub mod ast;
pub mod columnar;
mod compile;
pub mod corpus;
mod eval;
mod lexer;
pub mod load;
mod ops;
mod parser;
pub mod printer;
mod scalar;
mod scan;
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

/// Named tables, stored by column ([`columnar::ColumnarTable`]). Tables are shared (`Arc`),
/// so cloning a database is cheap.
#[derive(Clone, Debug, Default)]
pub struct Database {
    tables: BTreeMap<String, Arc<columnar::ColumnarTable>>,
}

impl Database {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds or replaces a table. String cells that are null become `""`: Kusto strings have
    /// no null (https://learn.microsoft.com/en-us/kusto/query/scalar-data-types/null-values).
    pub fn insert(&mut self, name: impl Into<String>, table: Table) {
        self.insert_columnar(name, columnar::ColumnarTable::from_table(table));
    }

    /// Adds or replaces a table already stored by column.
    pub fn insert_columnar(&mut self, name: impl Into<String>, table: columnar::ColumnarTable) {
        self.tables.insert(name.into(), Arc::new(table));
    }

    /// A copy of a table as rows (see [`Database::table`] for the stored form).
    pub fn get(&self, name: &str) -> Option<Table> {
        self.table(name).map(columnar::ColumnarTable::to_table)
    }

    /// The stored table.
    pub fn table(&self, name: &str) -> Option<&columnar::ColumnarTable> {
        self.tables.get(name).map(|t| t.as_ref())
    }

    pub fn contains(&self, name: &str) -> bool {
        self.tables.contains_key(name)
    }

    /// Loads every `NAME.jsonl` of a folder (see [`load`]) as table NAME.
    pub fn from_dir(dir: &std::path::Path) -> Result<Database, load::LoadError> {
        let mut db = Database::new();
        for (name, table) in load::load_dir_columnar(dir)? {
            db.insert_columnar(name, table);
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
