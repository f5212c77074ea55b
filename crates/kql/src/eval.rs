//! The evaluator.

use culprit_model::{KustoType, Table, Value};

use crate::ast::Query;
use crate::{Database, EvalOptions, KqlError};

/// Null string cells become `""`: in Kusto a string is never null.
pub(crate) fn normalize_strings(mut table: Table) -> Table {
    let string_cols: Vec<usize> = table
        .columns
        .iter()
        .enumerate()
        .filter(|(_, c)| matches!(c.ty, KustoType::String | KustoType::Guid))
        .map(|(i, _)| i)
        .collect();
    for row in &mut table.rows {
        for &i in &string_cols {
            if let Some(cell @ Value::Null) = row.get_mut(i) {
                *cell = Value::String(String::new());
            }
        }
    }
    table
}

pub(crate) fn evaluate(_q: &Query, _db: &Database, _opts: &EvalOptions) -> Result<Table, KqlError> {
    Err(KqlError::Unsupported { operator: "evaluate".into(), line: 1, column: 1 })
}
