//! Columnar storage for loaded tables: one typed vector per column, strings and dynamic
//! values dictionary-encoded (a `u32` code per cell, each distinct value stored once), nulls
//! in bitmaps. A million-row table then costs a few bytes a cell instead of a `Value` and its
//! heap string each, and a predicate over a string column runs once per distinct value.
//!
//! [`Table`] stays the exchange form: [`ColumnarTable::from_table`] and
//! [`ColumnarTable::to_table`] convert both ways.

use std::collections::hash_map::Entry;
use std::hash::BuildHasher;
use std::sync::{Arc, OnceLock};

use culprit_model::{Column, Duration, KustoType, Table, Timestamp, Value};

use crate::values::{FxBuild, FxMap};

/// A table stored by column.
#[derive(Clone, Debug, Default)]
pub struct ColumnarTable {
    columns: Vec<Column>,
    data: Vec<ColumnData>,
    len: usize,
}

/// Null flags, one bit a row; empty while the column has no null.
#[derive(Clone, Debug, Default)]
pub(crate) struct Nulls(Vec<u64>);

impl Nulls {
    fn get(&self, i: usize) -> bool {
        self.0.get(i / 64).is_some_and(|w| w >> (i % 64) & 1 == 1)
    }
    fn set(&mut self, i: usize) {
        let w = i / 64;
        if self.0.len() <= w {
            self.0.resize(w + 1, 0);
        }
        if let Some(word) = self.0.get_mut(w) {
            *word |= 1 << (i % 64);
        }
    }
}

/// What a fixed-width column holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum NumKind {
    Int,
    Real,
    DateTime,
    TimeSpan,
}

/// Distinct strings of a column, each as the `Value` expressions borrow.
#[derive(Clone, Debug, Default)]
pub(crate) struct StrDict {
    values: Vec<Value>,
}

/// Distinct dynamic values of a column, kept as their JSON text and parsed on first use.
#[derive(Debug, Default)]
pub(crate) struct DynDict {
    entries: Vec<DynEntry>,
}

impl Clone for DynDict {
    fn clone(&self) -> Self {
        DynDict {
            entries: self
                .entries
                .iter()
                .map(|e| DynEntry {
                    text: e.text.clone(),
                    parsed: OnceLock::new(),
                })
                .collect(),
        }
    }
}

#[derive(Debug)]
struct DynEntry {
    /// The cell as the API sends it: JSON text; empty for null.
    text: Box<str>,
    parsed: OnceLock<Value>,
}

impl DynEntry {
    fn value(&self) -> &Value {
        self.parsed.get_or_init(|| {
            Value::from_json(
                KustoType::Object,
                &serde_json::Value::String(self.text.to_string()),
            )
        })
    }
}

#[derive(Clone, Debug)]
pub(crate) enum ColumnData {
    /// 0 false, 1 true, 2 null.
    Bool(Vec<u8>),
    /// Integers, datetimes and timespans as their `i64`; reals as their bits.
    Num {
        kind: NumKind,
        vals: Vec<i64>,
        nulls: Nulls,
    },
    Str {
        codes: Vec<u32>,
        dict: Arc<StrDict>,
    },
    Dyn {
        codes: Vec<u32>,
        dict: Arc<DynDict>,
    },
    /// Cells that do not fit their column's type, kept as they are.
    Any(Vec<Value>),
}

impl ColumnData {
    /// The cell when it is stored as a `Value` (strings, dynamic, odd cells); `None` for the
    /// fixed-width kinds, which [`ColumnData::value`] builds.
    pub(crate) fn cell_ref(&self, row: usize) -> Option<&Value> {
        match self {
            ColumnData::Str { codes, dict } => dict.values.get(*codes.get(row)? as usize),
            ColumnData::Dyn { codes, dict } => dict
                .entries
                .get(*codes.get(row)? as usize)
                .map(|e| e.value()),
            ColumnData::Any(v) => v.get(row),
            _ => None,
        }
    }

    /// Whether [`ColumnData::cell_ref`] answers for this column.
    pub(crate) fn is_by_ref(&self) -> bool {
        matches!(
            self,
            ColumnData::Str { .. } | ColumnData::Dyn { .. } | ColumnData::Any(_)
        )
    }

    /// The dictionary code of a cell, for columns that have one.
    pub(crate) fn code(&self, row: usize) -> Option<u32> {
        match self {
            ColumnData::Str { codes, .. } | ColumnData::Dyn { codes, .. } => {
                codes.get(row).copied()
            }
            _ => None,
        }
    }

    /// `v` as this column stores it, when the column holds integers, datetimes or timespans
    /// and `v` is of the same kind (so that comparing the stored numbers compares the values).
    pub(crate) fn same_kind_i64(&self, v: &Value) -> Option<i64> {
        match (self, v) {
            (
                ColumnData::Num {
                    kind: NumKind::Int, ..
                },
                Value::Int(x),
            )
            | (
                ColumnData::Num {
                    kind: NumKind::DateTime,
                    ..
                },
                Value::DateTime(Timestamp(x)),
            )
            | (
                ColumnData::Num {
                    kind: NumKind::TimeSpan,
                    ..
                },
                Value::TimeSpan(Duration(x)),
            ) => Some(*x),
            _ => None,
        }
    }

    /// The stored number of a non-null cell of an integer, datetime or timespan column.
    pub(crate) fn i64_at(&self, row: usize) -> Option<i64> {
        match self {
            ColumnData::Num { kind, vals, nulls } if *kind != NumKind::Real && !nulls.get(row) => {
                vals.get(row).copied()
            }
            _ => None,
        }
    }

    /// The number of distinct codes, for columns that have them.
    pub(crate) fn dict_len(&self) -> Option<usize> {
        match self {
            ColumnData::Str { dict, .. } => Some(dict.values.len()),
            ColumnData::Dyn { dict, .. } => Some(dict.entries.len()),
            _ => None,
        }
    }

    /// An owned copy of a cell.
    pub(crate) fn value(&self, row: usize) -> Value {
        match self {
            ColumnData::Bool(v) => match v.get(row) {
                Some(0) => Value::Bool(false),
                Some(1) => Value::Bool(true),
                _ => Value::Null,
            },
            ColumnData::Num { kind, vals, nulls } => {
                let Some(&x) = vals.get(row) else {
                    return Value::Null;
                };
                if nulls.get(row) {
                    return Value::Null;
                }
                match kind {
                    NumKind::Int => Value::Int(x),
                    NumKind::Real => Value::Real(f64::from_bits(x as u64)),
                    NumKind::DateTime => Value::DateTime(Timestamp(x)),
                    NumKind::TimeSpan => Value::TimeSpan(Duration(x)),
                }
            }
            other => other.cell_ref(row).cloned().unwrap_or_default(),
        }
    }

    /// Rows `rows`, in that order, sharing the dictionaries.
    fn select(&self, rows: &[u32]) -> ColumnData {
        let pick = |v: &[u32]| {
            rows.iter()
                .map(|&r| v.get(r as usize).copied().unwrap_or(0))
                .collect()
        };
        match self {
            ColumnData::Bool(v) => ColumnData::Bool(
                rows.iter()
                    .map(|&r| v.get(r as usize).copied().unwrap_or(2))
                    .collect(),
            ),
            ColumnData::Num { kind, vals, nulls } => {
                let mut out_nulls = Nulls::default();
                let vals = rows
                    .iter()
                    .enumerate()
                    .map(|(i, &r)| {
                        if nulls.get(r as usize) {
                            out_nulls.set(i);
                        }
                        vals.get(r as usize).copied().unwrap_or(0)
                    })
                    .collect();
                ColumnData::Num {
                    kind: *kind,
                    vals,
                    nulls: out_nulls,
                }
            }
            ColumnData::Str { codes, dict } => ColumnData::Str {
                codes: pick(codes),
                dict: dict.clone(),
            },
            ColumnData::Dyn { codes, dict } => ColumnData::Dyn {
                codes: pick(codes),
                dict: dict.clone(),
            },
            ColumnData::Any(v) => ColumnData::Any(
                rows.iter()
                    .map(|&r| v.get(r as usize).cloned().unwrap_or_default())
                    .collect(),
            ),
        }
    }

    fn heap_bytes(&self) -> usize {
        match self {
            ColumnData::Bool(v) => v.capacity(),
            ColumnData::Num { vals, nulls, .. } => vals.capacity() * 8 + nulls.0.capacity() * 8,
            ColumnData::Str { codes, dict } => {
                codes.capacity() * 4
                    + dict
                        .values
                        .iter()
                        .map(|v| size_of::<Value>() + v.as_str().map_or(0, str::len))
                        .sum::<usize>()
            }
            ColumnData::Dyn { codes, dict } => {
                codes.capacity() * 4
                    + dict
                        .entries
                        .iter()
                        .map(|e| size_of::<DynEntry>() + e.text.len())
                        .sum::<usize>()
            }
            ColumnData::Any(v) => v.capacity() * size_of::<Value>(),
        }
    }
}

/// Builds one column a cell at a time.
#[derive(Debug)]
struct ColumnBuilder {
    ty: KustoType,
    data: ColumnData,
    /// Hash of a distinct value → its first code; `chain` links codes with the same hash.
    index: FxMap<u64, u32>,
    chain: Vec<u32>,
    len: usize,
}

const NO_CODE: u32 = u32::MAX;

fn hash_str(s: &str) -> u64 {
    FxBuild::default().hash_one(s)
}

impl ColumnBuilder {
    fn new(ty: KustoType) -> Self {
        let data = match ty {
            KustoType::Boolean => ColumnData::Bool(Vec::new()),
            KustoType::Int32 | KustoType::Int64 => num(NumKind::Int),
            KustoType::Double | KustoType::Decimal => num(NumKind::Real),
            KustoType::DateTime => num(NumKind::DateTime),
            KustoType::TimeSpan => num(NumKind::TimeSpan),
            KustoType::String | KustoType::Guid => ColumnData::Str {
                codes: Vec::new(),
                dict: Arc::new(StrDict::default()),
            },
            KustoType::Object => ColumnData::Dyn {
                codes: Vec::new(),
                dict: Arc::new(DynDict::default()),
            },
        };
        ColumnBuilder {
            ty,
            data,
            index: FxMap::default(),
            chain: Vec::new(),
            len: 0,
        }
    }

    /// Continues an existing column (appending rows to a loaded table).
    fn resume(ty: KustoType, data: ColumnData, len: usize) -> Self {
        let mut b = ColumnBuilder {
            ty,
            data,
            index: FxMap::default(),
            chain: Vec::new(),
            len,
        };
        let texts: Vec<u64> = match &b.data {
            ColumnData::Str { dict, .. } => dict
                .values
                .iter()
                .map(|v| hash_str(v.as_str().unwrap_or_default()))
                .collect(),
            ColumnData::Dyn { dict, .. } => {
                dict.entries.iter().map(|e| hash_str(&e.text)).collect()
            }
            _ => Vec::new(),
        };
        for (code, h) in texts.into_iter().enumerate() {
            b.link(h, code as u32);
        }
        b
    }

    fn link(&mut self, h: u64, code: u32) {
        let prev = match self.index.entry(h) {
            Entry::Occupied(mut e) => std::mem::replace(e.get_mut(), code),
            Entry::Vacant(e) => {
                e.insert(code);
                NO_CODE
            }
        };
        self.chain.push(prev);
    }

    /// The code of `s` in a string or dynamic dictionary, adding it when new.
    fn intern(&mut self, s: &str) -> u32 {
        let h = hash_str(s);
        let mut at = self.index.get(&h).copied().unwrap_or(NO_CODE);
        while at != NO_CODE {
            let same = match &self.data {
                ColumnData::Str { dict, .. } => {
                    dict.values.get(at as usize).and_then(Value::as_str) == Some(s)
                }
                ColumnData::Dyn { dict, .. } => {
                    dict.entries.get(at as usize).map(|e| &*e.text) == Some(s)
                }
                _ => false,
            };
            if same {
                return at;
            }
            at = self.chain.get(at as usize).copied().unwrap_or(NO_CODE);
        }
        let code = match &mut self.data {
            ColumnData::Str { dict, .. } => {
                let d = Arc::make_mut(dict);
                d.values.push(Value::String(s.to_owned()));
                d.values.len() - 1
            }
            ColumnData::Dyn { dict, .. } => {
                let d = Arc::make_mut(dict);
                d.entries.push(DynEntry {
                    text: s.into(),
                    parsed: OnceLock::new(),
                });
                d.entries.len() - 1
            }
            _ => 0,
        } as u32;
        self.link(h, code);
        code
    }

    /// Appends a cell read from JSON as the scenario files and the APIs write it.
    fn push_json(&mut self, j: Option<&serde_json::Value>) {
        use serde_json::Value as J;
        match (&self.data, j) {
            (ColumnData::Str { .. }, None | Some(J::Null)) => self.push_code(""),
            (ColumnData::Str { .. }, Some(J::String(s))) => self.push_code(s),
            (ColumnData::Str { .. }, Some(other)) => self.push_code(&other.to_string()),
            (ColumnData::Dyn { .. }, None | Some(J::Null)) => self.push_code(""),
            (ColumnData::Dyn { .. }, Some(J::String(s))) => self.push_code(s),
            (ColumnData::Dyn { .. }, Some(other)) => self.push_code(&other.to_string()),
            (_, None) => self.push(Value::Null),
            (_, Some(j)) => self.push(Value::from_json(self.ty, j)),
        }
    }

    fn push_code(&mut self, s: &str) {
        let code = self.intern(s);
        if let ColumnData::Str { codes, .. } | ColumnData::Dyn { codes, .. } = &mut self.data {
            codes.push(code);
        }
        self.len += 1;
    }

    /// Appends a cell; a value that does not fit the column turns it into plain values.
    fn push(&mut self, v: Value) {
        let fits = match (&self.data, &v) {
            (ColumnData::Any(_), _) => true,
            (_, Value::Null) => true,
            (ColumnData::Bool(_), Value::Bool(_)) => true,
            (ColumnData::Num { kind, .. }, v) => matches!(
                (kind, v),
                (NumKind::Int, Value::Int(_))
                    | (NumKind::Real, Value::Real(_))
                    | (NumKind::DateTime, Value::DateTime(_))
                    | (NumKind::TimeSpan, Value::TimeSpan(_))
            ),
            (ColumnData::Str { .. }, Value::String(_)) => true,
            (ColumnData::Dyn { .. }, Value::Dynamic(_)) => true,
            _ => false,
        };
        if !fits {
            let all: Vec<Value> = (0..self.len).map(|i| self.data.value(i)).collect();
            self.data = ColumnData::Any(all);
            self.index = FxMap::default();
            self.chain = Vec::new();
        }
        let row = self.len;
        match (&mut self.data, v) {
            (ColumnData::Any(vals), Value::Null)
                if matches!(self.ty, KustoType::String | KustoType::Guid) =>
            {
                vals.push(Value::String(String::new()))
            }
            (ColumnData::Any(vals), v) => vals.push(v),
            (ColumnData::Bool(vals), v) => vals.push(match v {
                Value::Bool(false) => 0,
                Value::Bool(true) => 1,
                _ => 2,
            }),
            (ColumnData::Num { vals, nulls, .. }, v) => {
                let x = match v {
                    Value::Int(i) => i,
                    Value::Real(r) => r.to_bits() as i64,
                    Value::DateTime(t) => t.0,
                    Value::TimeSpan(d) => d.0,
                    _ => {
                        nulls.set(row);
                        0
                    }
                };
                vals.push(x);
            }
            // Kusto strings are never null: a null string is "".
            (ColumnData::Str { .. }, Value::String(s)) => {
                self.push_code(&s);
                return;
            }
            (ColumnData::Str { .. }, _) => {
                self.push_code("");
                return;
            }
            (ColumnData::Dyn { .. }, Value::Dynamic(j)) => {
                self.push_code(&j.to_string());
                return;
            }
            (ColumnData::Dyn { .. }, _) => {
                self.push_code("");
                return;
            }
        }
        self.len += 1;
    }

    fn finish(mut self) -> ColumnData {
        match &mut self.data {
            ColumnData::Bool(v) => v.shrink_to_fit(),
            ColumnData::Num { vals, nulls, .. } => {
                vals.shrink_to_fit();
                nulls.0.shrink_to_fit();
            }
            ColumnData::Str { codes, dict } => {
                codes.shrink_to_fit();
                if let Some(d) = Arc::get_mut(dict) {
                    d.values.shrink_to_fit();
                }
            }
            ColumnData::Dyn { codes, dict } => {
                codes.shrink_to_fit();
                if let Some(d) = Arc::get_mut(dict) {
                    d.entries.shrink_to_fit();
                }
            }
            ColumnData::Any(v) => v.shrink_to_fit(),
        }
        self.data
    }
}

fn num(kind: NumKind) -> ColumnData {
    ColumnData::Num {
        kind,
        vals: Vec::new(),
        nulls: Nulls::default(),
    }
}

/// Builds a [`ColumnarTable`] a row at a time.
#[derive(Debug)]
pub struct ColumnarBuilder {
    columns: Vec<Column>,
    builders: Vec<ColumnBuilder>,
    len: usize,
}

impl ColumnarBuilder {
    pub fn new(columns: Vec<Column>) -> Self {
        let builders = columns.iter().map(|c| ColumnBuilder::new(c.ty)).collect();
        ColumnarBuilder {
            columns,
            builders,
            len: 0,
        }
    }

    /// Continues a table: rows pushed after it are appended.
    pub fn from_table(t: ColumnarTable) -> Self {
        let len = t.len;
        let builders = t
            .columns
            .iter()
            .zip(t.data)
            .map(|(c, d)| ColumnBuilder::resume(c.ty, d, len))
            .collect();
        ColumnarBuilder {
            columns: t.columns,
            builders,
            len,
        }
    }

    pub fn columns(&self) -> &[Column] {
        &self.columns
    }

    /// Appends one row from a JSON object keyed by column name; keys not in the schema are
    /// ignored and missing keys are null (as [`Table::push_json_object`]).
    pub fn push_json_object(&mut self, obj: &serde_json::Map<String, serde_json::Value>) {
        for (c, b) in self.columns.iter().zip(&mut self.builders) {
            b.push_json(obj.get(&c.name));
        }
        self.len += 1;
    }

    /// Appends one row of values in column order; missing cells are null.
    pub fn push_row(&mut self, row: impl IntoIterator<Item = Value>) {
        let mut cells = row.into_iter();
        for b in &mut self.builders {
            b.push(cells.next().unwrap_or_default());
        }
        self.len += 1;
    }

    pub fn finish(self) -> ColumnarTable {
        ColumnarTable {
            columns: self.columns,
            data: self
                .builders
                .into_iter()
                .map(ColumnBuilder::finish)
                .collect(),
            len: self.len,
        }
    }
}

impl ColumnarTable {
    /// Converts a row table; its rows are consumed one at a time.
    pub fn from_table(t: Table) -> Self {
        let mut b = ColumnarBuilder::new(t.columns);
        for row in t.rows {
            b.push_row(row);
        }
        b.finish()
    }

    /// The rows as a row table.
    pub fn to_table(&self) -> Table {
        let all: Vec<usize> = (0..self.columns.len()).collect();
        self.table_of(&all)
    }

    /// Only the named columns (matched without regard to case; unknown names are skipped), as
    /// a row table.
    pub fn to_table_columns(&self, names: &[&str]) -> Table {
        let idx: Vec<usize> = names.iter().filter_map(|n| self.column_index(n)).collect();
        self.table_of(&idx)
    }

    fn table_of(&self, idx: &[usize]) -> Table {
        let columns = idx.iter().map(|&i| self.columns[i].clone()).collect();
        let rows = (0..self.len)
            .map(|r| idx.iter().map(|&i| self.data[i].value(r)).collect())
            .collect();
        Table { columns, rows }
    }

    pub fn columns(&self) -> &[Column] {
        &self.columns
    }

    pub(crate) fn data(&self) -> &[ColumnData] {
        &self.data
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// As [`Table::column_index`]: exact name first, then without regard to case.
    pub fn column_index(&self, name: &str) -> Option<usize> {
        self.columns
            .iter()
            .position(|c| c.name == name)
            .or_else(|| {
                self.columns
                    .iter()
                    .position(|c| c.name.eq_ignore_ascii_case(name))
            })
    }

    /// One cell, owned; null outside the table.
    pub fn value(&self, row: usize, column: usize) -> Value {
        self.data
            .get(column)
            .map(|d| d.value(row))
            .unwrap_or_default()
    }

    /// Rows `rows`, in that order, as a new table sharing this one's dictionaries.
    pub fn select_rows(&self, rows: &[u32]) -> ColumnarTable {
        ColumnarTable {
            columns: self.columns.clone(),
            data: self.data.iter().map(|d| d.select(rows)).collect(),
            len: rows.len(),
        }
    }

    /// The rows whose `Timestamp` lies in `[from, to]`; a table without one is kept whole.
    pub fn filter_time(&self, from: Timestamp, to: Timestamp) -> ColumnarTable {
        let Some(i) = self.column_index("Timestamp") else {
            return self.clone();
        };
        let keep: Vec<u32> = (0..self.len)
            .filter(
                |&r| matches!(self.data[i].value(r), Value::DateTime(t) if t >= from && t <= to),
            )
            .map(|r| r as u32)
            .collect();
        self.select_rows(&keep)
    }

    /// The oldest and newest `Timestamp`.
    pub fn time_span(&self) -> Option<(Timestamp, Timestamp)> {
        let i = self.column_index("Timestamp")?;
        let mut span: Option<(Timestamp, Timestamp)> = None;
        for r in 0..self.len {
            if let Some(ts) = self.data[i].value(r).as_datetime() {
                span = Some(span.map_or((ts, ts), |(lo, hi)| (lo.min(ts), hi.max(ts))));
            }
        }
        span
    }

    /// Appends another table's rows, its columns matched to this one's by name (a column this
    /// table lacks is dropped, one the other lacks is null).
    pub fn append(&mut self, other: &ColumnarTable) {
        let map: Vec<Option<usize>> = self
            .columns
            .iter()
            .map(|c| other.column_index(&c.name))
            .collect();
        let mut b = ColumnarBuilder::from_table(std::mem::take(self));
        for r in 0..other.len {
            b.push_row(
                map.iter()
                    .map(|m| m.map(|j| other.value(r, j)).unwrap_or_default()),
            );
        }
        *self = b.finish();
    }

    /// An estimate of the heap the table holds, in bytes.
    pub fn heap_bytes(&self) -> usize {
        self.data.iter().map(ColumnData::heap_bytes).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cols() -> Vec<Column> {
        vec![
            Column::new("S", KustoType::String),
            Column::new("I", KustoType::Int64),
            Column::new("D", KustoType::DateTime),
            Column::new("B", KustoType::Boolean),
            Column::new("O", KustoType::Object),
            Column::new("R", KustoType::Double),
        ]
    }

    #[test]
    fn rows_survive_the_round_trip() {
        let ts = Timestamp::parse("2023-08-16T04:54:30.9870000Z").unwrap();
        let rows = vec![
            vec![
                Value::String("a".into()),
                Value::Int(1),
                Value::DateTime(ts),
                Value::Bool(true),
                Value::Dynamic(json!({"k": [1, 2]})),
                Value::Real(1.5),
            ],
            vec![
                Value::String("a".into()),
                Value::Null,
                Value::Null,
                Value::Null,
                Value::Null,
                Value::Null,
            ],
            vec![
                Value::String("b".into()),
                Value::Int(-3),
                Value::DateTime(ts),
                Value::Bool(false),
                Value::Dynamic(json!("text")),
                Value::Real(-0.0),
            ],
        ];
        let t = Table {
            columns: cols(),
            rows: rows.clone(),
        };
        let c = ColumnarTable::from_table(t.clone());
        assert_eq!(c.len(), 3);
        assert_eq!(c.to_table(), t);
        // Two distinct strings stored once each.
        assert_eq!(c.data()[0].dict_len(), Some(2));
    }

    #[test]
    fn null_strings_become_empty_and_odd_cells_are_kept() {
        let t = Table {
            columns: vec![
                Column::new("S", KustoType::String),
                Column::new("I", KustoType::Int64),
            ],
            rows: vec![
                vec![Value::Null, Value::Int(1)],
                vec![
                    Value::String("x".into()),
                    Value::String("not a number".into()),
                ],
            ],
        };
        let c = ColumnarTable::from_table(t);
        assert_eq!(c.value(0, 0), Value::String(String::new()));
        assert_eq!(c.value(0, 1), Value::Int(1));
        assert_eq!(c.value(1, 1), Value::String("not a number".into()));
    }

    #[test]
    fn json_rows_load_as_the_row_form_does() {
        let objs = [
            json!({"S": "x", "I": 5, "D": "2023-08-16T04:54:30.9870000Z", "B": true,
                   "O": "{\"a\":1}", "R": 2.5}),
            json!({"S": null, "I": "7", "D": "garbage", "O": "", "R": null}),
            json!({"S": 12, "O": "not json", "B": "false"}),
        ];
        let mut b = ColumnarBuilder::new(cols());
        let mut t = Table::new(cols());
        for o in &objs {
            b.push_json_object(o.as_object().unwrap());
            t.push_json_object(o.as_object().unwrap());
        }
        let c = b.finish();
        let mut expected = t;
        for row in &mut expected.rows {
            if row[0].is_null() {
                row[0] = Value::String(String::new());
            }
        }
        assert_eq!(c.to_table(), expected);
    }

    #[test]
    fn append_aligns_by_name_and_filters_by_time() {
        let t1 = Table {
            columns: vec![
                Column::new("Timestamp", KustoType::DateTime),
                Column::new("S", KustoType::String),
            ],
            rows: vec![vec![
                Value::DateTime(Timestamp(10)),
                Value::String("a".into()),
            ]],
        };
        let t2 = Table {
            columns: vec![
                Column::new("S", KustoType::String),
                Column::new("Timestamp", KustoType::DateTime),
            ],
            rows: vec![
                vec![Value::String("a".into()), Value::DateTime(Timestamp(20))],
                vec![Value::String("c".into()), Value::DateTime(Timestamp(30))],
            ],
        };
        let mut c = ColumnarTable::from_table(t1);
        c.append(&ColumnarTable::from_table(t2));
        assert_eq!(c.len(), 3);
        assert_eq!(c.data()[1].dict_len(), Some(2), "'a' is interned once");
        assert_eq!(c.value(2, 1), Value::String("c".into()));
        assert_eq!(c.time_span(), Some((Timestamp(10), Timestamp(30))));
        let f = c.filter_time(Timestamp(15), Timestamp(30));
        assert_eq!(f.len(), 2);
        assert_eq!(f.value(0, 0), Value::DateTime(Timestamp(20)));
    }
}
