//! The leading operators of a query over a stored table, run on its columns: a selection
//! vector of row numbers instead of row copies, computed columns as vectors, and rows built
//! only when an operator that needs them comes (or the result is returned).

use culprit_model::{Column, KustoType, Value};

use crate::ast::*;
use crate::columnar::ColumnarTable;
use crate::eval::{Ctx, R, Rel, Row, default_name, matching, no_column, static_type};
use crate::scalar::{CExpr, Cells};
use crate::values::type_of;

enum Src {
    /// A column of the stored table.
    Base(usize),
    /// Values computed for the selected rows, one per selected row.
    Computed(Vec<Value>),
}

pub(crate) struct Scan<'t> {
    table: &'t ColumnarTable,
    /// Selected row numbers in order; `None` is every row.
    sel: Option<Vec<u32>>,
    cols: Vec<(Column, Src)>,
}

/// One selected row as expressions read it.
struct ScanRow<'s, 't> {
    scan: &'s Scan<'t>,
    pos: usize,
    rid: usize,
    /// Fixed-width cells of this row, built for the columns being read.
    scratch: &'s [Value],
}

impl Cells for ScanRow<'_, '_> {
    fn cell(&self, i: usize) -> Option<&Value> {
        match &self.scan.cols.get(i)?.1 {
            Src::Base(j) => self
                .scan
                .table
                .data()
                .get(*j)?
                .cell_ref(self.rid)
                .or_else(|| self.scratch.get(i)),
            Src::Computed(v) => v.get(self.pos),
        }
    }
}

/// What applying an operator to a scan gave.
pub(crate) enum Step<'t, 'a> {
    Scan(Scan<'t>),
    Rel(Rel<'a>),
    /// The operator does not run on columns: build the rows and run it on them.
    Rows(Scan<'t>),
}

impl<'t> Scan<'t> {
    pub(crate) fn new(table: &'t ColumnarTable) -> Self {
        Scan {
            table,
            sel: None,
            cols: table
                .columns()
                .iter()
                .enumerate()
                .map(|(i, c)| (c.clone(), Src::Base(i)))
                .collect(),
        }
    }

    fn schema(&self) -> Vec<Column> {
        self.cols.iter().map(|(c, _)| c.clone()).collect()
    }

    fn rows(&self) -> usize {
        self.sel.as_ref().map_or(self.table.len(), Vec::len)
    }

    fn rid(&self, pos: usize) -> usize {
        match &self.sel {
            Some(s) => s.get(pos).map_or(usize::MAX, |&r| r as usize),
            None => pos,
        }
    }

    /// Calls `f` with each selected row; the fixed-width cells of `used` are built first.
    fn for_each_row(&self, used: &[usize], mut f: impl FnMut(usize, &ScanRow<'_, 't>)) {
        let data = self.table.data();
        let fixed: Vec<(usize, usize)> = used
            .iter()
            .filter_map(|&i| match self.cols.get(i) {
                Some((_, Src::Base(j))) if !data.get(*j)?.is_by_ref() => Some((i, *j)),
                _ => None,
            })
            .collect();
        let mut scratch = vec![Value::Null; self.cols.len()];
        for pos in 0..self.rows() {
            let rid = self.rid(pos);
            for &(i, j) in &fixed {
                scratch[i] = data[j].value(rid);
            }
            let row = ScanRow {
                scan: self,
                pos,
                rid,
                scratch: &scratch,
            };
            f(pos, &row);
        }
    }

    /// Keeps the selected rows at positions `keep` (ascending).
    fn keep(&mut self, keep: Vec<usize>) {
        let sel = keep.iter().map(|&p| self.rid(p) as u32).collect();
        for (_, src) in &mut self.cols {
            if let Src::Computed(v) = src {
                let old = std::mem::take(v);
                let mut old = old.into_iter().map(Some).collect::<Vec<_>>();
                *v = keep
                    .iter()
                    .map(|&p| old.get_mut(p).and_then(Option::take).unwrap_or_default())
                    .collect();
            }
        }
        self.sel = Some(sel);
    }

    fn filter(&mut self, pred: &CExpr) {
        let mut conjuncts = Vec::new();
        split_and(pred, &mut conjuncts);
        for c in conjuncts {
            let mut used = Vec::new();
            c.columns_used(&mut used);
            let keep = self.matching_rows(c, &used);
            self.keep(keep);
        }
    }

    /// Positions of the rows where `c` holds. A predicate over one dictionary column is
    /// decided once per distinct value.
    fn matching_rows(&self, c: &CExpr, used: &[usize]) -> Vec<usize> {
        let mut keep = Vec::new();
        if let [i] = used
            && let Some((_, Src::Base(j))) = self.cols.get(*i)
            && let Some(data) = self.table.data().get(*j)
            && let Some(n) = data.dict_len()
        {
            // 0 unknown, 1 holds, 2 does not.
            let mut memo = vec![0u8; n];
            self.for_each_row(used, |pos, row| {
                let Some(code) = data.code(row.rid) else {
                    return;
                };
                let slot = &mut memo[code as usize];
                if *slot == 0 {
                    *slot = if c.test(row) { 1 } else { 2 };
                }
                if *slot == 1 {
                    keep.push(pos);
                }
            });
            return keep;
        }
        // `column <op> constant` over integers or times: compare the stored numbers. A null
        // cell compares as null, which `where` drops.
        if let CExpr::Binary(op, l, r) = c
            && let (CExpr::Col(i), CExpr::Const(v)) = (&**l, &**r)
            && let Some((_, Src::Base(j))) = self.cols.get(*i)
            && let Some(data) = self.table.data().get(*j)
            && let Some(x) = data.same_kind_i64(v)
        {
            let holds: Option<fn(i64, i64) -> bool> = match op {
                BinOp::Eq => Some(|a, b| a == b),
                BinOp::Ne => Some(|a, b| a != b),
                BinOp::Lt => Some(|a, b| a < b),
                BinOp::Le => Some(|a, b| a <= b),
                BinOp::Gt => Some(|a, b| a > b),
                BinOp::Ge => Some(|a, b| a >= b),
                _ => None,
            };
            if let Some(holds) = holds {
                for pos in 0..self.rows() {
                    if data.i64_at(self.rid(pos)).is_some_and(|a| holds(a, x)) {
                        keep.push(pos);
                    }
                }
                return keep;
            }
        }
        if used.is_empty() {
            let holds = c.test(&[]);
            return if holds {
                (0..self.rows()).collect()
            } else {
                Vec::new()
            };
        }
        self.for_each_row(used, |pos, row| {
            if c.test(row) {
                keep.push(pos);
            }
        });
        keep
    }

    fn compute(&self, c: &CExpr) -> Vec<Value> {
        let mut used = Vec::new();
        c.columns_used(&mut used);
        let mut out = Vec::with_capacity(self.rows());
        self.for_each_row(&used, |_, row| out.push(c.eval(row).into_owned()));
        out
    }

    /// The rows, built.
    pub(crate) fn into_rel<'a>(self) -> Rel<'a> {
        let data = self.table.data();
        let mut rows = Vec::with_capacity(self.rows());
        for pos in 0..self.rows() {
            let rid = self.rid(pos);
            let row: Vec<Value> = self
                .cols
                .iter()
                .map(|(_, src)| match src {
                    Src::Base(j) => data.get(*j).map(|d| d.value(rid)).unwrap_or_default(),
                    Src::Computed(v) => v.get(pos).cloned().unwrap_or_default(),
                })
                .collect();
            rows.push(Row::Owned(row.into()));
        }
        Rel {
            columns: self.cols.into_iter().map(|(c, _)| c).collect(),
            rows,
        }
    }

    fn select(mut self, idx: &[usize]) -> Self {
        let mut old: Vec<Option<(Column, Src)>> = self.cols.into_iter().map(Some).collect();
        let mut cols = Vec::with_capacity(idx.len());
        // `matching` names each column once.
        for &i in idx {
            if let Some(c) = old.get_mut(i).and_then(Option::take) {
                cols.push(c);
            }
        }
        self.cols = cols;
        self
    }
}

fn split_and<'c>(c: &'c CExpr, out: &mut Vec<&'c CExpr>) {
    match c {
        CExpr::Binary(BinOp::And, l, r) => {
            split_and(l, out);
            split_and(r, out);
        }
        other => out.push(other),
    }
}

fn value_type(vals: &[Value]) -> KustoType {
    vals.iter().find_map(type_of).unwrap_or(KustoType::String)
}

impl<'a> Ctx<'a> {
    /// Applies one operator to a scan, on its columns when the operator allows it.
    pub(crate) fn scan_apply<'t>(
        &mut self,
        mut scan: Scan<'t>,
        op: &'a Operator,
    ) -> R<Step<'t, 'a>> {
        match op {
            Operator::Where { pred, .. } => {
                let c = self.compile(pred, &scan.schema())?;
                scan.filter(&c);
                Ok(Step::Scan(scan))
            }
            Operator::Take { count, .. } => {
                let n = self.scan_count_arg(count)?;
                if n < scan.rows() {
                    scan.keep((0..n).collect());
                }
                Ok(Step::Scan(scan))
            }
            Operator::Count { .. } => Ok(Step::Rel(Rel {
                columns: vec![Column::new("Count", KustoType::Int64)],
                rows: vec![Row::Owned(vec![Value::Int(scan.rows() as i64)].into())],
            })),
            Operator::Project { exprs, .. } => {
                let schema = scan.schema();
                let mut cols = Vec::with_capacity(exprs.len());
                let mut taken: Vec<bool> = vec![false; scan.cols.len()];
                let mut compiled = Vec::new();
                for (i, ne) in exprs.iter().enumerate() {
                    let c = self.compile(&ne.expr, &schema)?;
                    let name = ne
                        .name
                        .clone()
                        .unwrap_or_else(|| default_name(&ne.expr, "Column", i + 1));
                    compiled.push((name, c));
                }
                for (name, c) in compiled {
                    let ty = static_type(&c, &schema);
                    match (&c, ty) {
                        (CExpr::Col(j), Some(ty))
                            if matches!(scan.cols.get(*j), Some((_, Src::Base(_))))
                                && !taken[*j] =>
                        {
                            taken[*j] = true;
                            if let Some((_, Src::Base(b))) = scan.cols.get(*j) {
                                cols.push((Column::new(name, ty), Src::Base(*b)));
                            }
                        }
                        _ => {
                            let vals = scan.compute(&c);
                            let ty = ty.unwrap_or_else(|| value_type(&vals));
                            cols.push((Column::new(name, ty), Src::Computed(vals)));
                        }
                    }
                }
                scan.cols = cols;
                Ok(Step::Scan(scan))
            }
            Operator::Extend { exprs, .. } | Operator::Serialize { exprs, .. } => {
                for (i, ne) in exprs.iter().enumerate() {
                    let schema = scan.schema();
                    let c = self.compile(&ne.expr, &schema)?;
                    let name = ne
                        .name
                        .clone()
                        .unwrap_or_else(|| default_name(&ne.expr, "Column", i + 1));
                    let vals = scan.compute(&c);
                    let ty = static_type(&c, &schema).unwrap_or_else(|| value_type(&vals));
                    let col = (Column::new(name, ty), Src::Computed(vals));
                    match scan.cols.iter().position(|(c, _)| c.name == col.0.name) {
                        Some(j) => scan.cols[j] = col,
                        None => scan.cols.push(col),
                    }
                }
                Ok(Step::Scan(scan))
            }
            Operator::ProjectAway { columns, pos } => {
                let drop = matching(&scan.schema(), columns, *pos)?;
                let keep: Vec<usize> = (0..scan.cols.len()).filter(|i| !drop.contains(i)).collect();
                Ok(Step::Scan(scan.select(&keep)))
            }
            Operator::ProjectKeep { columns, pos } => {
                let keep = matching(&scan.schema(), columns, *pos)?;
                let keep: Vec<usize> = (0..scan.cols.len()).filter(|i| keep.contains(i)).collect();
                Ok(Step::Scan(scan.select(&keep)))
            }
            Operator::ProjectRename { renames, pos } => {
                for (new, old) in renames {
                    let i = scan
                        .cols
                        .iter()
                        .position(|(c, _)| &c.name == old)
                        .ok_or_else(|| no_column(*pos, old))?;
                    scan.cols[i].0.name = new.clone();
                }
                Ok(Step::Scan(scan))
            }
            Operator::ProjectReorder { columns, pos } => {
                let names: Vec<String> = columns.iter().map(|(n, _)| n.clone()).collect();
                let first = matching(&scan.schema(), &names, *pos)?;
                let mut order = first.clone();
                order.extend((0..scan.cols.len()).filter(|i| !first.contains(i)));
                Ok(Step::Scan(scan.select(&order)))
            }
            Operator::Summarize { aggs, by, pos, .. } => {
                let schema = scan.schema();
                let all: Vec<usize> = (0..scan.cols.len()).collect();
                let rel = crate::ops::summarize_with(self, &schema, aggs, by, *pos, |f| {
                    scan.for_each_row(&all, |_, row| f(row));
                })?;
                Ok(Step::Rel(rel))
            }
            _ => Ok(Step::Rows(scan)),
        }
    }

    fn scan_count_arg(&mut self, e: &'a Expr) -> R<usize> {
        let v = self.const_scalar(e)?;
        Ok(v.as_i64().map_or(0, |n| usize::try_from(n).unwrap_or(0)))
    }
}
