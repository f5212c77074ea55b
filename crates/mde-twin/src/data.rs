//! Loading recorded Advanced Hunting tables (`<scenario>/mde/<Table>.jsonl`) into a KQL
//! database, several scenario folders merged into one tenant.

use std::collections::BTreeMap;
use std::path::PathBuf;

use culprit_kql::Database;
use culprit_model::{Table, Timestamp, Value};

use crate::TwinError;

/// Tables read from one or more scenario folders, before they become a [`Database`].
#[derive(Debug, Default)]
pub struct LoadedData {
    pub tables: BTreeMap<String, Table>,
}

impl LoadedData {
    /// Reads every `mde/*.jsonl` of every folder; the same table in two folders is appended.
    pub fn load(dirs: &[PathBuf]) -> Result<Self, TwinError> {
        let mut data = LoadedData::default();
        for dir in dirs {
            let tables =
                culprit_kql::load::load_dir(&dir.join("mde")).map_err(|e| TwinError::Data {
                    path: e.path,
                    reason: e.reason,
                })?;
            for (name, table) in tables {
                data.append(name, table);
            }
        }
        Ok(data)
    }

    fn append(&mut self, name: String, table: Table) {
        match self.tables.get_mut(&name) {
            Some(existing) if existing.columns == table.columns => existing.rows.extend(table.rows),
            Some(existing) => {
                // Inferred schemas of two folders may differ: align the new rows by name.
                let index = table.index();
                for row in table.rows {
                    let aligned = existing
                        .columns
                        .iter()
                        .map(|c| {
                            index
                                .get(&c.name)
                                .and_then(|i| row.get(i).cloned())
                                .unwrap_or_default()
                        })
                        .collect();
                    existing.rows.push(aligned);
                }
            }
            None => {
                self.tables.insert(name, table);
            }
        }
    }

    /// The newest `Timestamp` in any table.
    pub fn newest(&self) -> Option<Timestamp> {
        self.span().map(|(_, hi)| hi)
    }

    /// The oldest and newest `Timestamp` over all tables.
    pub fn span(&self) -> Option<(Timestamp, Timestamp)> {
        let mut span: Option<(Timestamp, Timestamp)> = None;
        for t in self.tables.values() {
            let Some(i) = t.column_index("Timestamp") else {
                continue;
            };
            for ts in t.rows.iter().filter_map(|r| r.get(i)?.as_datetime()) {
                span = Some(span.map_or((ts, ts), |(lo, hi)| (lo.min(ts), hi.max(ts))));
            }
        }
        span
    }

    pub fn into_database(self) -> Database {
        let mut db = Database::new();
        for (name, table) in self.tables {
            db.insert(name, table);
        }
        db
    }
}

/// Rows of `table` whose `Timestamp` lies in `[from, to]`; tables without one pass whole.
pub fn filter_time(table: &Table, from: Timestamp, to: Timestamp) -> Table {
    let Some(i) = table.column_index("Timestamp") else {
        return table.clone();
    };
    let rows = table
        .rows
        .iter()
        .filter(|r| matches!(r.get(i), Some(Value::DateTime(t)) if *t >= from && *t <= to))
        .cloned()
        .collect();
    Table {
        columns: table.columns.clone(),
        rows,
    }
}
