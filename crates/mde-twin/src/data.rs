//! Loading recorded Advanced Hunting tables (`<scenario>/mde/<Table>.jsonl`) into a KQL
//! database, several scenario folders merged into one tenant.

use std::collections::BTreeMap;
use std::path::PathBuf;

use culprit_kql::Database;
use culprit_kql::columnar::ColumnarTable;
use culprit_model::Timestamp;

use crate::TwinError;

/// Tables read from one or more scenario folders, before they become a [`Database`]. Tables
/// are stored by column from the first line read: a million rows fit in a few hundred MB.
#[derive(Debug, Default)]
pub struct LoadedData {
    pub tables: BTreeMap<String, ColumnarTable>,
}

impl LoadedData {
    /// Reads every `mde/*.jsonl` of every folder; the same table in two folders is appended.
    pub fn load(dirs: &[PathBuf]) -> Result<Self, TwinError> {
        let mut data = LoadedData::default();
        for dir in dirs {
            let tables = culprit_kql::load::load_dir_columnar(&dir.join("mde")).map_err(|e| {
                TwinError::Data {
                    path: e.path,
                    reason: e.reason,
                }
            })?;
            for (name, table) in tables {
                data.append(name, table);
            }
        }
        Ok(data)
    }

    /// Inferred schemas of two folders may differ: the new rows are aligned by column name.
    fn append(&mut self, name: String, table: ColumnarTable) {
        match self.tables.get_mut(&name) {
            Some(existing) => existing.append(&table),
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
        self.tables
            .values()
            .filter_map(ColumnarTable::time_span)
            .reduce(|(a, b), (c, d)| (a.min(c), b.max(d)))
    }

    pub fn into_database(self) -> Database {
        let mut db = Database::new();
        for (name, table) in self.tables {
            db.insert_columnar(name, table);
        }
        db
    }
}
