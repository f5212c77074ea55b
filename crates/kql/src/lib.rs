//! KQL: AST, printer, parser and evaluator over in-memory tables.
//!
//! `parse` turns text into an [`ast::Query`], [`printer::print`] turns it back into text that
//! re-parses to the same tree, and [`evaluate`] runs it over a [`Database`] of named tables
//! with Kusto's semantics (learn.microsoft.com/en-us/kusto/query/).

pub mod ast;
pub mod corpus;
mod eval;
mod lexer;
mod parser;
pub mod printer;
pub mod schema;

use std::collections::BTreeMap;
use std::sync::Arc;

pub use culprit_model::{Column, KustoType, Table, Timestamp, Value};

/// Why a query could not be parsed or run. Every variant names a 1-based line and column.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KqlError {
    #[error("syntax error at {line}:{column}: {message}")]
    Syntax { line: u32, column: u32, message: String },
    #[error("unsupported operator {operator} at {line}:{column}")]
    Unsupported { operator: String, line: u32, column: u32 },
    #[error("semantic error at {line}:{column}: {message}")]
    Semantic { line: u32, column: u32, message: String },
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
