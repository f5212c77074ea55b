//! The evaluator: tabular operators over rows shared between stages.

use std::collections::HashMap;
use std::ops::Deref;
use std::rc::Rc;

use culprit_model::{Column, KustoType, Table, Value};

use crate::ast::*;
use crate::scalar::{CExpr, ValueSet};
use crate::values::{self, key_eq, type_of};
use crate::{Database, EvalOptions, KqlError};

/// A row built by an operator, shared between stages.
#[derive(Clone, Debug)]
pub(crate) enum Row<'a> {
    Owned(Rc<[Value]>),
    /// Never built: keeps the lifetime parameter that relations thread through the
    /// operators (they borrow names and expressions from the query).
    #[allow(dead_code)]
    Never(std::marker::PhantomData<&'a ()>),
}

impl Deref for Row<'_> {
    type Target = [Value];
    fn deref(&self) -> &[Value] {
        match self {
            Row::Owned(r) => r,
            Row::Never(_) => &[],
        }
    }
}

/// An intermediate table.
#[derive(Clone, Debug, Default)]
pub(crate) struct Rel<'a> {
    pub columns: Vec<Column>,
    pub rows: Vec<Row<'a>>,
}

impl<'a> Rel<'a> {
    fn empty(columns: Vec<Column>) -> Self {
        Rel {
            columns,
            rows: Vec::new(),
        }
    }
    fn into_table(self, limit: Option<usize>) -> Table {
        let n = limit.unwrap_or(usize::MAX);
        Table {
            columns: self.columns,
            rows: self.rows.into_iter().take(n).map(|r| r.to_vec()).collect(),
        }
    }
    pub(crate) fn col(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c.name == name)
    }
}

/// The null of a column type: `""` for strings.
pub(crate) fn null_of(ty: KustoType) -> Value {
    match ty {
        KustoType::String | KustoType::Guid => Value::String(String::new()),
        _ => Value::Null,
    }
}

pub(crate) enum Binding<'a> {
    Scalar(Value),
    Table(Rc<Rel<'a>>),
    Func(&'a [Param], &'a Query),
}

pub(crate) struct Ctx<'a> {
    pub db: &'a Database,
    pub opts: &'a EvalOptions,
    pub scopes: Vec<HashMap<String, Binding<'a>>>,
    pub depth: u32,
    /// The position of the statement or operator being evaluated, for errors raised where the
    /// tree holds no position (names).
    pub here: Pos,
    /// While compiling a `summarize` expression: the aggregate calls met, which compile to
    /// references to their results.
    pub pending_aggs: Option<Vec<(&'a str, &'a [Expr], Pos)>>,
}

pub(crate) type R<T> = Result<T, KqlError>;

pub(crate) fn semantic(pos: Pos, message: impl Into<String>) -> KqlError {
    KqlError::Semantic {
        line: pos.line,
        column: pos.column,
        message: message.into(),
    }
}

pub(crate) fn unsupported(pos: Pos, operator: &str) -> KqlError {
    KqlError::Unsupported {
        operator: operator.to_owned(),
        line: pos.line,
        column: pos.column,
    }
}

pub(crate) fn evaluate(q: &Query, db: &Database, opts: &EvalOptions) -> R<Table> {
    let mut ctx = Ctx {
        db,
        opts,
        scopes: vec![HashMap::new()],
        depth: 0,
        here: Pos { line: 1, column: 1 },
        pending_aggs: None,
    };
    let outcome = ctx.run_statements(q).map_err(|e| locate(e, ctx.here))?;
    match outcome {
        Some(Outcome::Table(rel)) => Ok(rel.into_table(opts.row_limit)),
        Some(Outcome::Scalar(v)) => {
            let ty = type_of(&v).unwrap_or(KustoType::String);
            Ok(Table {
                columns: vec![Column::new("print_0", ty)],
                rows: vec![vec![v]],
            })
        }
        None => Err(semantic(
            Pos { line: 1, column: 1 },
            "the query has no tabular expression to return",
        )),
    }
}

/// Gives an error without a position (line 0) the position being evaluated.
fn locate(e: KqlError, here: Pos) -> KqlError {
    match e {
        KqlError::Semantic {
            line: 0, message, ..
        } => KqlError::Semantic {
            line: here.line,
            column: here.column,
            message,
        },
        KqlError::Unsupported {
            line: 0, operator, ..
        } => KqlError::Unsupported {
            line: here.line,
            column: here.column,
            operator,
        },
        e => e,
    }
}

fn op_pos(op: &Operator) -> Pos {
    match op {
        Operator::Where { pos, .. }
        | Operator::Project { pos, .. }
        | Operator::ProjectAway { pos, .. }
        | Operator::ProjectKeep { pos, .. }
        | Operator::ProjectRename { pos, .. }
        | Operator::ProjectReorder { pos, .. }
        | Operator::Extend { pos, .. }
        | Operator::Summarize { pos, .. }
        | Operator::Sort { pos, .. }
        | Operator::Top { pos, .. }
        | Operator::Take { pos, .. }
        | Operator::Distinct { pos, .. }
        | Operator::Count { pos }
        | Operator::Join { pos, .. }
        | Operator::MvExpand { pos, .. }
        | Operator::Serialize { pos, .. }
        | Operator::As { pos, .. } => *pos,
        Operator::Union(u) => u.pos,
        Operator::Other(raw) => raw.pos,
    }
}

pub(crate) enum Outcome<'a> {
    Table(Rel<'a>),
    Scalar(Value),
}

impl<'a> Ctx<'a> {
    pub(crate) fn lookup(&self, name: &str) -> Option<&Binding<'a>> {
        self.scopes.iter().rev().find_map(|s| s.get(name))
    }

    fn bind(&mut self, name: &str, b: Binding<'a>) {
        if let Some(s) = self.scopes.last_mut() {
            s.insert(name.to_owned(), b);
        }
    }

    fn run_statements(&mut self, q: &'a Query) -> R<Option<Outcome<'a>>> {
        let mut last = None;
        for s in &q.statements {
            match s {
                Statement::Let { name, value, pos } => {
                    self.here = *pos;
                    let b = match value {
                        LetValue::Function { params, body } => Binding::Func(params, body),
                        LetValue::Expr(t) => match self.eval_any(t)? {
                            Outcome::Table(r) => Binding::Table(Rc::new(r)),
                            Outcome::Scalar(v) => Binding::Scalar(v),
                        },
                    };
                    self.bind(name, b);
                }
                Statement::Declare { params, pos } => {
                    for p in params {
                        let d = p.default.as_ref().ok_or_else(|| {
                            semantic(*pos, format!("query parameter '{}' has no value", p.name))
                        })?;
                        let v = self.const_scalar(d)?;
                        self.bind(&p.name, Binding::Scalar(v));
                    }
                }
                Statement::Set { .. } => {}
                Statement::Tabular(t) => last = Some(self.eval_any(t)?),
            }
        }
        Ok(last)
    }

    /// Whether a bare expression in tabular position names a table.
    fn is_tabular(&self, e: &Expr) -> bool {
        match e {
            Expr::Tabular(_) => true,
            Expr::Name(n) => match self.lookup(n) {
                Some(Binding::Table(_)) => true,
                Some(Binding::Scalar(_)) => false,
                Some(Binding::Func(..)) => true,
                None => self.db.contains(n) || crate::schema::DEVICE_TABLES.contains(&n.as_str()),
            },
            Expr::Call { name, .. } => {
                matches!(name.as_str(), "materialize" | "view" | "table")
                    || matches!(self.lookup(name), Some(Binding::Func(..)))
            }
            _ => false,
        }
    }

    /// A `let` value or statement: a table, or a scalar when it is a bare scalar expression.
    fn eval_any(&mut self, t: &'a TabularExpr) -> R<Outcome<'a>> {
        if let (Source::Expr(e), true) = (&t.source, t.ops.is_empty()) {
            if let Expr::Call { name, args, pos } = e
                && let Some(Binding::Func(params, body)) = self.lookup(name)
            {
                let (params, body) = (*params, *body);
                return self.call_function(params, body, args, *pos);
            }
            if !self.is_tabular(e) {
                return Ok(Outcome::Scalar(self.const_scalar(e)?));
            }
        }
        Ok(Outcome::Table(self.eval_tabular(t)?))
    }

    pub(crate) fn const_scalar(&mut self, e: &'a Expr) -> R<Value> {
        let c = self.compile(e, &[])?;
        Ok(c.eval(&[]).into_owned())
    }

    pub(crate) fn call_function(
        &mut self,
        params: &'a [Param],
        body: &'a Query,
        args: &'a [Expr],
        pos: Pos,
    ) -> R<Outcome<'a>> {
        self.depth += 1;
        if self.depth > 64 {
            return Err(semantic(pos, "functions call each other too deeply"));
        }
        let mut scope = HashMap::new();
        for (i, p) in params.iter().enumerate() {
            let b = match (args.get(i), &p.ty) {
                (Some(a), ParamType::Tabular { .. }) => {
                    Binding::Table(Rc::new(self.eval_expr_table(a, pos)?))
                }
                (Some(a), ParamType::Scalar(_)) => Binding::Scalar(self.const_scalar(a)?),
                (None, _) => match &p.default {
                    Some(d) => Binding::Scalar(self.const_scalar(d)?),
                    None => return Err(semantic(pos, format!("missing argument '{}'", p.name))),
                },
            };
            scope.insert(p.name.clone(), b);
        }
        self.scopes.push(scope);
        let r = self.run_statements(body);
        self.scopes.pop();
        self.depth -= 1;
        r?.ok_or_else(|| semantic(pos, "function body returns nothing"))
    }

    // ---- tabular ----

    pub(crate) fn eval_tabular(&mut self, t: &'a TabularExpr) -> R<Rel<'a>> {
        let mut ops = t.ops.iter();
        let mut rel = match self.stored_table(&t.source) {
            Some(table) => self.scan_prefix(table, &mut ops)?,
            None => self.eval_source(&t.source)?,
        };
        for op in ops {
            if op_pos(op).line > 0 {
                self.here = op_pos(op);
            }
            rel = self.apply(rel, op)?;
        }
        Ok(rel)
    }

    /// The stored table a source names directly (not through a `let` or a function).
    fn stored_table(&self, s: &Source) -> Option<&'a crate::columnar::ColumnarTable> {
        let db: &'a Database = self.db;
        match s {
            Source::Expr(Expr::Name(n)) if self.lookup(n).is_none() => db.table(n),
            _ => None,
        }
    }

    /// Runs the leading operators that work on columns, then builds the rows.
    fn scan_prefix(
        &mut self,
        table: &'a crate::columnar::ColumnarTable,
        ops: &mut std::slice::Iter<'a, Operator>,
    ) -> R<Rel<'a>> {
        let mut scan = crate::scan::Scan::new(table);
        loop {
            let Some(op) = ops.as_slice().first() else {
                return Ok(scan.into_rel());
            };
            if op_pos(op).line > 0 {
                self.here = op_pos(op);
            }
            match self.scan_apply(scan, op)? {
                crate::scan::Step::Scan(s) => scan = s,
                crate::scan::Step::Rel(rel) => {
                    ops.next();
                    return Ok(rel);
                }
                crate::scan::Step::Rows(s) => return Ok(s.into_rel()),
            }
            ops.next();
        }
    }

    fn eval_source(&mut self, s: &'a Source) -> R<Rel<'a>> {
        match s {
            Source::Expr(e) => self.eval_expr_table(e, Pos::default()),
            Source::Union(u) => self.union(None, u),
            Source::Datatable {
                columns,
                values,
                pos,
            } => self.datatable(columns, values, *pos),
            Source::Print { exprs, .. } => {
                let (columns, row) = self.project_row(exprs, &[], &[])?;
                Ok(Rel {
                    columns,
                    rows: vec![Row::Owned(row.into())],
                })
            }
            Source::Range {
                name,
                from,
                to,
                step,
                pos,
            } => self.range(name, from, to, step, *pos),
            Source::Other(raw) => Err(unsupported(raw.pos, &raw.name)),
        }
    }

    /// A table named by an expression: a table, a `let`, a function call, a sub-query.
    pub(crate) fn eval_expr_table(&mut self, e: &'a Expr, pos: Pos) -> R<Rel<'a>> {
        match e {
            Expr::Tabular(t) => self.eval_tabular(t),
            Expr::Name(n) => self.table_by_name(n, pos),
            Expr::Call { name, args, pos } => match (name.as_str(), args.as_slice()) {
                ("materialize" | "view", [a]) => self.eval_expr_table(a, *pos),
                ("table", [a]) => {
                    let n = self.const_scalar(a)?;
                    self.table_by_name(&values::to_text(&n), *pos)
                }
                _ => match self.lookup(name) {
                    Some(Binding::Func(params, body)) => {
                        let (params, body) = (*params, *body);
                        match self.call_function(params, body, args, *pos)? {
                            Outcome::Table(t) => Ok(t),
                            Outcome::Scalar(_) => Err(semantic(
                                *pos,
                                format!("function '{name}' returns a scalar, not a table"),
                            )),
                        }
                    }
                    _ => Err(unsupported(*pos, name)),
                },
            },
            _ => Err(semantic(pos, "expected a tabular expression")),
        }
    }

    fn table_by_name(&mut self, n: &str, pos: Pos) -> R<Rel<'a>> {
        match self.lookup(n) {
            Some(Binding::Table(t)) => return Ok((**t).clone()),
            Some(Binding::Func([], body)) => {
                let body = *body;
                return match self.call_function(&[], body, &[], pos)? {
                    Outcome::Table(t) => Ok(t),
                    Outcome::Scalar(_) => {
                        Err(semantic(pos, format!("'{n}' is a scalar, not a table")))
                    }
                };
            }
            Some(_) => return Err(semantic(pos, format!("'{n}' is a scalar, not a table"))),
            None => {}
        }
        if let Some(t) = self.db.table(n) {
            return Ok(crate::scan::Scan::new(t).into_rel());
        }
        match crate::schema::columns(n) {
            Some(cols) => Ok(Rel::empty(cols)),
            None => Err(semantic(
                pos,
                format!("Failed to resolve table or column expression named '{n}'"),
            )),
        }
    }

    fn datatable(
        &mut self,
        columns: &[(String, String)],
        values: &'a [Expr],
        pos: Pos,
    ) -> R<Rel<'a>> {
        let cols: Vec<Column> = columns
            .iter()
            .map(|(n, t)| {
                KustoType::from_name(t)
                    .map(|ty| Column::new(n.clone(), ty))
                    .ok_or_else(|| semantic(pos, format!("unknown type '{t}'")))
            })
            .collect::<R<_>>()?;
        if cols.is_empty() {
            return Err(semantic(pos, "datatable needs at least one column"));
        }
        let mut rows = Vec::new();
        for chunk in values.chunks(cols.len()) {
            let mut row = Vec::with_capacity(cols.len());
            for (c, e) in cols.iter().zip(chunk) {
                row.push(coerce(self.const_scalar(e)?, c.ty));
            }
            row.resize(cols.len(), Value::Null);
            rows.push(Row::Owned(row.into()));
        }
        Ok(Rel {
            columns: cols,
            rows,
        })
    }

    fn range(
        &mut self,
        name: &str,
        from: &'a Expr,
        to: &'a Expr,
        step: &'a Expr,
        pos: Pos,
    ) -> R<Rel<'a>> {
        let (a, b, s) = (
            self.const_scalar(from)?,
            self.const_scalar(to)?,
            self.const_scalar(step)?,
        );
        let mut rows = Vec::new();
        let mut cur = a.clone();
        while values::compare(&cur, &b).is_some_and(|o| o != std::cmp::Ordering::Greater) {
            if rows.len() >= 1_000_000 {
                return Err(semantic(pos, "range produces too many rows"));
            }
            rows.push(Row::Owned(vec![cur.clone()].into()));
            let next = crate::scalar::binary_values(BinOp::Add, &cur, &s);
            if values::compare(&next, &cur) != Some(std::cmp::Ordering::Greater) {
                break;
            }
            cur = next;
        }
        let ty = type_of(&a).unwrap_or(KustoType::Int64);
        Ok(Rel {
            columns: vec![Column::new(name, ty)],
            rows,
        })
    }

    fn apply(&mut self, rel: Rel<'a>, op: &'a Operator) -> R<Rel<'a>> {
        match op {
            Operator::Where { pred, .. } => {
                let c = self.compile(pred, &rel.columns)?;
                let rows = rel.rows.into_iter().filter(|r| c.test(r)).collect();
                Ok(Rel {
                    columns: rel.columns,
                    rows,
                })
            }
            Operator::Project { exprs, .. } => self.project(rel, exprs),
            Operator::Extend { exprs, .. } | Operator::Serialize { exprs, .. } => {
                self.extend(rel, exprs)
            }
            Operator::ProjectAway { columns, pos } => {
                let drop = matching(&rel.columns, columns, *pos)?;
                let keep: Vec<usize> = (0..rel.columns.len())
                    .filter(|i| !drop.contains(i))
                    .collect();
                Ok(select(rel, &keep))
            }
            Operator::ProjectKeep { columns, pos } => {
                let keep = matching(&rel.columns, columns, *pos)?;
                let keep: Vec<usize> = (0..rel.columns.len())
                    .filter(|i| keep.contains(i))
                    .collect();
                Ok(select(rel, &keep))
            }
            Operator::ProjectRename { renames, pos } => {
                let mut rel = rel;
                for (new, old) in renames {
                    let i = rel.col(old).ok_or_else(|| no_column(*pos, old))?;
                    rel.columns[i].name = new.clone();
                }
                Ok(rel)
            }
            Operator::ProjectReorder { columns, pos } => {
                let names: Vec<String> = columns.iter().map(|(n, _)| n.clone()).collect();
                let first = matching(&rel.columns, &names, *pos)?;
                let mut order = first.clone();
                order.extend((0..rel.columns.len()).filter(|i| !first.contains(i)));
                Ok(select(rel, &order))
            }
            Operator::Summarize { aggs, by, pos, .. } => self.summarize(rel, aggs, by, *pos),
            Operator::Sort { keys, .. } => self.sort(rel, keys),
            Operator::Top { count, key, .. } => {
                let n = self.count_arg(count)?;
                let mut rel = self.sort(rel, std::slice::from_ref(key))?;
                rel.rows.truncate(n);
                Ok(rel)
            }
            Operator::Take { count, .. } => {
                let n = self.count_arg(count)?;
                let mut rel = rel;
                rel.rows.truncate(n);
                Ok(rel)
            }
            Operator::Distinct { columns, pos } => self.distinct(rel, columns, *pos),
            Operator::Count { .. } => Ok(Rel {
                columns: vec![Column::new("Count", KustoType::Int64)],
                rows: vec![Row::Owned(vec![Value::Int(rel.rows.len() as i64)].into())],
            }),
            Operator::Join {
                kind,
                right,
                on,
                pos,
                ..
            } => {
                let right = self.eval_tabular(right)?;
                crate::ops::join(rel, right, kind.unwrap_or(JoinKind::InnerUnique), on, *pos)
            }
            Operator::Union(u) => self.union(Some(rel), u),
            Operator::MvExpand {
                params,
                items,
                limit,
                ..
            } => {
                let limit = match limit {
                    Some(l) => Some(self.count_arg(l)?),
                    None => None,
                };
                crate::ops::mv_expand(self, rel, params, items, limit)
            }
            Operator::As { .. } => Ok(rel),
            Operator::Other(raw) if raw.name == "render" => Ok(rel),
            Operator::Other(raw) => Err(unsupported(raw.pos, &raw.name)),
        }
    }

    fn count_arg(&mut self, e: &'a Expr) -> R<usize> {
        let v = self.const_scalar(e)?;
        Ok(v.as_i64().map_or(0, |n| usize::try_from(n).unwrap_or(0)))
    }

    /// Name and values of computed columns for one row (or for `print`, no row).
    fn project_row(
        &mut self,
        exprs: &'a [NamedExpr],
        columns: &[Column],
        row: &[Value],
    ) -> R<(Vec<Column>, Vec<Value>)> {
        let mut cols = Vec::new();
        let mut vals = Vec::new();
        for (i, ne) in exprs.iter().enumerate() {
            let c = self.compile(&ne.expr, columns)?;
            let v = c.eval(row).into_owned();
            let name = ne
                .name
                .clone()
                .unwrap_or_else(|| default_name(&ne.expr, "print_", i));
            cols.push(Column::new(name, type_of(&v).unwrap_or(KustoType::String)));
            vals.push(v);
        }
        Ok((cols, vals))
    }

    fn project(&mut self, rel: Rel<'a>, exprs: &'a [NamedExpr]) -> R<Rel<'a>> {
        self.project_items(
            rel,
            exprs.iter().map(|ne| (ne.name.clone(), &ne.expr)).collect(),
        )
    }

    fn project_items(
        &mut self,
        rel: Rel<'a>,
        items: Vec<(Option<String>, &'a Expr)>,
    ) -> R<Rel<'a>> {
        let mut compiled = Vec::new();
        let mut columns = Vec::new();
        for (i, (name, e)) in items.into_iter().enumerate() {
            let c = self.compile(e, &rel.columns)?;
            let name = name.unwrap_or_else(|| default_name(e, "Column", i + 1));
            columns.push((name, static_type(&c, &rel.columns)));
            compiled.push(c);
        }
        let rows: Vec<Vec<Value>> = rel
            .rows
            .iter()
            .map(|r| compiled.iter().map(|c| c.eval(r).into_owned()).collect())
            .collect();
        Ok(finish(columns, rows))
    }

    fn extend(&mut self, rel: Rel<'a>, exprs: &'a [NamedExpr]) -> R<Rel<'a>> {
        let mut schema = rel.columns.clone();
        let mut rows: Vec<Vec<Value>> = rel.rows.iter().map(|r| r.to_vec()).collect();
        for (i, ne) in exprs.iter().enumerate() {
            let c = self.compile(&ne.expr, &schema)?;
            let name = ne
                .name
                .clone()
                .unwrap_or_else(|| default_name(&ne.expr, "Column", i + 1));
            let vals: Vec<Value> = rows.iter().map(|r| c.eval(r).into_owned()).collect();
            let ty = static_type(&c, &schema)
                .or_else(|| vals.iter().find_map(type_of))
                .unwrap_or(KustoType::String);
            let at = match schema.iter().position(|col| col.name == name) {
                Some(j) => {
                    schema[j].ty = ty;
                    j
                }
                None => {
                    schema.push(Column::new(name, ty));
                    schema.len() - 1
                }
            };
            for (r, v) in rows.iter_mut().zip(vals) {
                if at < r.len() {
                    r[at] = v;
                } else {
                    r.push(v);
                }
            }
        }
        Ok(Rel {
            columns: schema,
            rows: rows.into_iter().map(|r| Row::Owned(r.into())).collect(),
        })
    }

    fn sort(&mut self, rel: Rel<'a>, keys: &'a [SortKey]) -> R<Rel<'a>> {
        let compiled: Vec<CExpr> = keys
            .iter()
            .map(|k| self.compile(&k.expr, &rel.columns))
            .collect::<R<_>>()?;
        let mut keyed: Vec<(Vec<Value>, Row<'a>)> = rel
            .rows
            .into_iter()
            .map(|r| {
                (
                    compiled.iter().map(|c| c.eval(&r).into_owned()).collect(),
                    r,
                )
            })
            .collect();
        keyed.sort_by(|(a, _), (b, _)| {
            for (i, k) in keys.iter().enumerate() {
                // Nulls first when ascending, last when descending, unless stated
                // (https://learn.microsoft.com/en-us/kusto/query/sort-operator).
                let nulls_first = k.nulls_first.unwrap_or(k.asc);
                let (x, y) = (&a[i], &b[i]);
                let o = match (x.is_null(), y.is_null()) {
                    (true, true) => std::cmp::Ordering::Equal,
                    (true, false) => {
                        if nulls_first {
                            std::cmp::Ordering::Less
                        } else {
                            std::cmp::Ordering::Greater
                        }
                    }
                    (false, true) => {
                        if nulls_first {
                            std::cmp::Ordering::Greater
                        } else {
                            std::cmp::Ordering::Less
                        }
                    }
                    (false, false) => {
                        let o = values::sort_cmp(x, y);
                        if k.asc { o } else { o.reverse() }
                    }
                };
                if o != std::cmp::Ordering::Equal {
                    return o;
                }
            }
            std::cmp::Ordering::Equal
        });
        Ok(Rel {
            columns: rel.columns,
            rows: keyed.into_iter().map(|(_, r)| r).collect(),
        })
    }

    fn distinct(&mut self, rel: Rel<'a>, columns: &'a [Expr], _pos: Pos) -> R<Rel<'a>> {
        let rel = if matches!(columns, [Expr::Star]) {
            rel
        } else {
            self.project_items(rel, columns.iter().map(|e| (None, e)).collect())?
        };
        let mut seen: values::FxMap<u64, Vec<usize>> = values::FxMap::default();
        let mut out: Vec<Row<'a>> = Vec::new();
        for r in rel.rows {
            let h = values::hash_many(r.iter());
            let bucket = seen.entry(h).or_default();
            if bucket
                .iter()
                .any(|&i| out[i].iter().zip(r.iter()).all(|(a, b)| key_eq(a, b)))
            {
                continue;
            }
            bucket.push(out.len());
            out.push(r);
        }
        Ok(Rel {
            columns: rel.columns,
            rows: out,
        })
    }

    fn union(&mut self, input: Option<Rel<'a>>, u: &'a Union) -> R<Rel<'a>> {
        let mut parts: Vec<(String, Rel<'a>)> = Vec::new();
        if let Some(r) = input {
            parts.push(("union_arg0".to_owned(), r));
        }
        for t in &u.tables {
            match (&t.source, t.ops.is_empty()) {
                (Source::Expr(Expr::Name(n)), true) if n.contains('*') => {
                    for name in self.matching_tables(n) {
                        let r = self.table_by_name(&name, u.pos)?;
                        parts.push((name, r));
                    }
                }
                (Source::Expr(Expr::Name(n)), true) => {
                    let r = self.table_by_name(n, u.pos)?;
                    parts.push((n.clone(), r));
                }
                _ => {
                    let name = format!("union_arg{}", parts.len());
                    let r = self.eval_tabular(t)?;
                    parts.push((name, r));
                }
            }
        }
        let inner = u.params.iter().any(|(k, v)| k == "kind" && v == "inner");
        Ok(crate::ops::union_all(parts, u.withsource.as_deref(), inner))
    }

    fn matching_tables(&self, pattern: &str) -> Vec<String> {
        let mut names: Vec<String> = self.db.table_names();
        names.extend(crate::schema::DEVICE_TABLES.iter().map(|s| (*s).to_owned()));
        names.sort();
        names.dedup();
        names.into_iter().filter(|n| wildcard(pattern, n)).collect()
    }

    fn summarize(
        &mut self,
        rel: Rel<'a>,
        aggs: &'a [NamedExpr],
        by: &'a [NamedExpr],
        pos: Pos,
    ) -> R<Rel<'a>> {
        crate::ops::summarize(self, rel, aggs, by, pos)
    }
}

/// Table and column name patterns with `*`.
pub(crate) fn wildcard(pattern: &str, name: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == name;
    }
    let mut rest = name;
    for (i, p) in parts.iter().enumerate() {
        if i == 0 {
            let Some(r) = rest.strip_prefix(p) else {
                return false;
            };
            rest = r;
        } else if i == parts.len() - 1 {
            return rest.ends_with(p);
        } else {
            let Some(at) = rest.find(p) else { return false };
            rest = &rest[at + p.len()..];
        }
    }
    true
}

pub(crate) fn matching(columns: &[Column], patterns: &[String], pos: Pos) -> R<Vec<usize>> {
    let mut out = Vec::new();
    for p in patterns {
        let hits: Vec<usize> = columns
            .iter()
            .enumerate()
            .filter(|(_, c)| wildcard(p, &c.name))
            .map(|(i, _)| i)
            .collect();
        if hits.is_empty() && !p.contains('*') {
            return Err(no_column(pos, p));
        }
        for h in hits {
            if !out.contains(&h) {
                out.push(h);
            }
        }
    }
    Ok(out)
}

pub(crate) fn no_column(pos: Pos, name: &str) -> KqlError {
    semantic(
        pos,
        format!("Failed to resolve scalar expression named '{name}'"),
    )
}

fn select<'a>(rel: Rel<'a>, idx: &[usize]) -> Rel<'a> {
    let columns = idx.iter().map(|&i| rel.columns[i].clone()).collect();
    let rows = rel
        .rows
        .iter()
        .map(|r| {
            Row::Owned(
                idx.iter()
                    .map(|&i| r.get(i).cloned().unwrap_or_default())
                    .collect::<Vec<_>>()
                    .into(),
            )
        })
        .collect();
    Rel { columns, rows }
}

/// Builds a relation from computed rows, typing columns without a static type by their values.
pub(crate) fn finish<'a>(
    columns: Vec<(String, Option<KustoType>)>,
    rows: Vec<Vec<Value>>,
) -> Rel<'a> {
    let cols = columns
        .into_iter()
        .enumerate()
        .map(|(i, (name, ty))| {
            let ty = ty
                .or_else(|| rows.iter().find_map(|r| r.get(i).and_then(type_of)))
                .unwrap_or(KustoType::String);
            Column::new(name, ty)
        })
        .collect();
    Rel {
        columns: cols,
        rows: rows.into_iter().map(|r| Row::Owned(r.into())).collect(),
    }
}

/// The name Kusto gives an unnamed column: a column's own name, `a_b` for `a.b`, else
/// `{prefix}{n}`.
pub(crate) fn default_name(e: &Expr, prefix: &str, n: usize) -> String {
    fn path(e: &Expr) -> Option<String> {
        match e {
            Expr::Name(n) => Some(n.clone()),
            Expr::Member { target, name } => Some(format!("{}_{name}", path(target)?)),
            Expr::Index { target, index } => match &**index {
                Expr::Lit(Literal::String(k)) => Some(format!("{}_{k}", path(target)?)),
                _ => None,
            },
            _ => None,
        }
    }
    // A call named after its first argument when that is a column (`tostring(x)` → `x`).
    let named = match e {
        Expr::Call { args, .. } => args.first().and_then(path),
        e => path(e),
    };
    named.unwrap_or_else(|| format!("{prefix}{n}"))
}

/// The type of a compiled expression when it is known without evaluating.
pub(crate) fn static_type(c: &CExpr, schema: &[Column]) -> Option<KustoType> {
    use crate::scalar::F;
    Some(match c {
        CExpr::Col(i) => schema.get(*i)?.ty,
        CExpr::Const(v) => type_of(v)?,
        CExpr::Str { .. }
        | CExpr::HasList { .. }
        | CExpr::Regex { .. }
        | CExpr::In { .. }
        | CExpr::Between { .. } => KustoType::Boolean,
        CExpr::Binary(op, ..)
            if !matches!(
                op,
                BinOp::Add | BinOp::Sub | BinOp::Mul | BinOp::Div | BinOp::Mod
            ) =>
        {
            KustoType::Boolean
        }
        CExpr::Member(..) | CExpr::Index(..) => KustoType::Object,
        CExpr::Extract { .. } => KustoType::String,
        CExpr::Call(f, _) => match f {
            F::ToString
            | F::Strcat
            | F::StrcatDelim
            | F::ToLower
            | F::ToUpper
            | F::Substring
            | F::ReplaceString
            | F::Trim
            | F::Extract => KustoType::String,
            F::ToInt => KustoType::Int32,
            F::ToLong
            | F::Strlen
            | F::IndexOf
            | F::ArrayLength
            | F::ArrayIndexOf
            | F::DatetimeDiff
            | F::Hash => KustoType::Int64,
            F::ToReal | F::Round => KustoType::Double,
            F::ToDatetime | F::StartOfDay => KustoType::DateTime,
            F::ToTimespan | F::Dayofweek => KustoType::TimeSpan,
            F::ToBool
            | F::IsEmpty
            | F::IsNotEmpty
            | F::IsNull
            | F::IsNotNull
            | F::Not
            | F::SetHasElement => KustoType::Boolean,
            F::ParseJson | F::PackArray | F::Pack | F::Split | F::ArrayConcat | F::BagKeys => {
                KustoType::Object
            }
            _ => return None,
        },
        _ => return None,
    })
}

/// A value stored in a column of type `ty` (datatable cells, `to typeof()`).
pub(crate) fn coerce(v: Value, ty: KustoType) -> Value {
    match (ty, v) {
        (_, Value::Null) => null_of(ty),
        (KustoType::Object, Value::Dynamic(j)) => Value::Dynamic(j),
        (KustoType::Object, v) => Value::Dynamic(values::to_json(&v)),
        (_, Value::Dynamic(j)) => coerce(values::from_json_scalar(&j), ty),
        (KustoType::String | KustoType::Guid, v) => Value::String(values::to_text(&v).into_owned()),
        (KustoType::Int32 | KustoType::Int64, v @ Value::Int(_)) => v,
        (KustoType::Int32 | KustoType::Int64, v) => crate::scalar::to_long(&v),
        (KustoType::Double | KustoType::Decimal, Value::Int(i)) => Value::Real(i as f64),
        (KustoType::DateTime, Value::String(s)) => {
            values::parse_datetime(&s).map_or(Value::Null, Value::DateTime)
        }
        (_, v) => v,
    }
}

/// Sets of constants for `in`.
pub(crate) fn value_set(ci: bool) -> ValueSet {
    ValueSet {
        ci,
        ..ValueSet::default()
    }
}
