//! The larger tabular operators: summarize, join, union, mv-expand.

use std::collections::HashSet;

use culprit_model::{Column, KustoType, Value};

use crate::KqlError;
use crate::ast::*;
use crate::compile::AGGREGATES;
use crate::eval::{
    Ctx, R, Rel, Row, coerce, default_name, finish, no_column, null_of, semantic, static_type,
};
use crate::scalar::{CExpr, Cells};
use crate::values::{FxMap, FxSet, compare, hash_many, hash_one, key_eq, to_json};

// ---- summarize ----

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum AggKind {
    Count,
    CountIf,
    DCount,
    DCountIf,
    MakeSet,
    MakeSetIf,
    MakeList,
    MakeListIf,
    Min,
    Max,
    MinIf,
    MaxIf,
    Sum,
    SumIf,
    Avg,
    AvgIf,
    TakeAny,
    TakeAnyIf,
    ArgMax,
    ArgMin,
}

fn agg_kind(name: &str) -> Option<AggKind> {
    Some(match name {
        "count" => AggKind::Count,
        "countif" => AggKind::CountIf,
        "dcount" => AggKind::DCount,
        "dcountif" => AggKind::DCountIf,
        "make_set" | "makeset" => AggKind::MakeSet,
        "make_set_if" => AggKind::MakeSetIf,
        "make_list" | "makelist" => AggKind::MakeList,
        "make_list_if" => AggKind::MakeListIf,
        "min" => AggKind::Min,
        "max" => AggKind::Max,
        "minif" => AggKind::MinIf,
        "maxif" => AggKind::MaxIf,
        "sum" => AggKind::Sum,
        "sumif" => AggKind::SumIf,
        "avg" => AggKind::Avg,
        "avgif" => AggKind::AvgIf,
        "take_any" | "any" => AggKind::TakeAny,
        "take_anyif" => AggKind::TakeAnyIf,
        "arg_max" | "argmax" => AggKind::ArgMax,
        "arg_min" | "argmin" => AggKind::ArgMin,
        _ => return None,
    })
}

/// The column name Kusto gives an unnamed aggregate (`count_`, `dcount_DeviceId`, ...).
fn agg_name(name: &str, args: &[Expr]) -> String {
    let arg = args
        .first()
        .map(|a| default_name(a, "", 0))
        .unwrap_or_default();
    match name {
        "count" => "count_".to_owned(),
        "countif" => "countif_".to_owned(),
        "make_set" | "makeset" | "make_set_if" => format!("set_{arg}"),
        "make_list" | "makelist" | "make_list_if" => format!("list_{arg}"),
        "take_any" | "any" | "take_anyif" => format!("any_{arg}"),
        other => format!("{other}_{arg}"),
    }
}

struct AggSpec {
    kind: AggKind,
    args: Vec<CExpr>,
    /// `make_set(x, max)`: the size cap.
    limit: usize,
    /// arg_max/arg_min: the columns returned with the extreme row.
    cols: Vec<usize>,
}

#[derive(Clone, Debug)]
enum State {
    Count(i64),
    DCount(FxSet<u64>),
    Set(Vec<serde_json::Value>, FxSet<u64>),
    List(Vec<serde_json::Value>),
    Extreme(Option<Value>),
    Sum(Option<Value>),
    Avg(f64, i64),
    Any(Option<Value>),
    Arg(Option<(Value, Vec<Value>)>),
}

impl AggSpec {
    fn init(&self) -> State {
        match self.kind {
            AggKind::Count | AggKind::CountIf => State::Count(0),
            AggKind::DCount | AggKind::DCountIf => State::DCount(FxSet::default()),
            AggKind::MakeSet | AggKind::MakeSetIf => State::Set(Vec::new(), FxSet::default()),
            AggKind::MakeList | AggKind::MakeListIf => State::List(Vec::new()),
            AggKind::Min | AggKind::Max | AggKind::MinIf | AggKind::MaxIf => State::Extreme(None),
            AggKind::Sum | AggKind::SumIf => State::Sum(None),
            AggKind::Avg | AggKind::AvgIf => State::Avg(0.0, 0),
            AggKind::TakeAny | AggKind::TakeAnyIf => State::Any(None),
            AggKind::ArgMax | AggKind::ArgMin => State::Arg(None),
        }
    }

    /// The predicate argument of the `...if` forms.
    fn pred_index(&self) -> Option<usize> {
        match self.kind {
            AggKind::CountIf => Some(0),
            AggKind::DCountIf
            | AggKind::MakeSetIf
            | AggKind::MakeListIf
            | AggKind::MinIf
            | AggKind::MaxIf
            | AggKind::SumIf
            | AggKind::AvgIf
            | AggKind::TakeAnyIf => Some(1),
            _ => None,
        }
    }

    fn update<C: Cells + ?Sized>(&self, st: &mut State, row: &C) {
        if let Some(p) = self.pred_index()
            && !self.args.get(p).is_some_and(|c| c.test(row))
        {
            return;
        }
        if let State::Count(n) = st {
            *n += 1;
            return;
        }
        let Some(first) = self.args.first() else {
            return;
        };
        let v = first.eval(row);
        match st {
            State::Count(_) => {}
            State::DCount(set) => {
                if !v.is_null() {
                    set.insert(hash_one(&v));
                }
            }
            State::Set(items, seen) => {
                if !v.is_null() && items.len() < self.limit && seen.insert(hash_one(&v)) {
                    items.push(to_json(&v));
                }
            }
            State::List(items) => {
                if !v.is_null() && items.len() < self.limit {
                    items.push(to_json(&v));
                }
            }
            State::Extreme(cur) => {
                let want = if matches!(self.kind, AggKind::Min | AggKind::MinIf) {
                    std::cmp::Ordering::Less
                } else {
                    std::cmp::Ordering::Greater
                };
                if !v.is_null() && cur.as_ref().is_none_or(|c| compare(&v, c) == Some(want)) {
                    *cur = Some(v.into_owned());
                }
            }
            State::Sum(cur) => {
                if !v.is_null() {
                    *cur = Some(match cur.take() {
                        None => v.into_owned(),
                        Some(c) => crate::scalar::binary_values(BinOp::Add, &c, &v),
                    });
                }
            }
            State::Avg(s, n) => {
                if let Some(x) = v.as_f64().filter(|_| !matches!(&*v, Value::String(_))) {
                    *s += x;
                    *n += 1;
                }
            }
            State::Any(cur) => {
                if cur.is_none() && !v.is_null() {
                    *cur = Some(v.into_owned());
                }
            }
            State::Arg(cur) => {
                let want = if self.kind == AggKind::ArgMin {
                    std::cmp::Ordering::Less
                } else {
                    std::cmp::Ordering::Greater
                };
                if !v.is_null()
                    && cur
                        .as_ref()
                        .is_none_or(|(c, _)| compare(&v, c) == Some(want))
                {
                    let cols = self
                        .cols
                        .iter()
                        .map(|&i| row.cell(i).cloned().unwrap_or_default())
                        .collect();
                    *cur = Some((v.into_owned(), cols));
                }
            }
        }
    }
}

fn result(st: &State) -> Value {
    match st {
        State::Count(n) => Value::Int(*n),
        State::DCount(s) => Value::Int(s.len() as i64),
        State::Set(items, _) | State::List(items) => {
            Value::Dynamic(serde_json::Value::Array(items.clone()))
        }
        State::Extreme(v) | State::Sum(v) | State::Any(v) => v.clone().unwrap_or_default(),
        State::Avg(s, n) => {
            if *n == 0 {
                Value::Null
            } else {
                Value::Real(s / *n as f64)
            }
        }
        State::Arg(v) => v.as_ref().map(|(x, _)| x.clone()).unwrap_or_default(),
    }
}

enum OutSrc {
    Post(CExpr),
    /// Part `k` (0 = the extreme value, then the returned columns) of aggregate `spec`.
    ArgPart(usize, usize),
}

struct SummarizePlan {
    specs: Vec<AggSpec>,
    spec_types: Vec<Option<KustoType>>,
    outputs: Vec<(String, OutSrc, Option<KustoType>)>,
}

impl<'a> Ctx<'a> {
    /// Compiles an aggregate expression: aggregate calls become references to their results.
    fn compile_agg(
        &mut self,
        e: &'a Expr,
        schema: &[Column],
        plan: &mut SummarizePlan,
        pos: Pos,
    ) -> R<CExpr> {
        let outer = self.pending_aggs.replace(Vec::new());
        let post = self.compile(e, &[]);
        let found = std::mem::replace(&mut self.pending_aggs, outer).unwrap_or_default();
        let post = post.map_err(|err| match (&err, e) {
            (KqlError::Semantic { message, .. }, _)
                if message.starts_with("Failed to resolve scalar") =>
            {
                semantic(
                    pos,
                    format!("{message}: outside an aggregate, summarize can use only constants"),
                )
            }
            _ => err,
        })?;
        let base = plan.specs.len();
        for (name, args, pos) in found {
            let spec = self.agg_spec(name, args, schema, &[], pos)?;
            plan.spec_types.push(agg_type(&spec, schema));
            plan.specs.push(spec);
        }
        Ok(shift_cols(post, base))
    }

    fn agg_spec(
        &mut self,
        name: &str,
        args: &'a [Expr],
        schema: &[Column],
        by_names: &[String],
        pos: Pos,
    ) -> R<AggSpec> {
        let kind = agg_kind(name).ok_or_else(|| crate::eval::unsupported(pos, name))?;
        let mut spec = AggSpec {
            kind,
            args: Vec::new(),
            limit: 1_048_576,
            cols: Vec::new(),
        };
        let n_value_args = match kind {
            AggKind::Count => 0,
            AggKind::CountIf
            | AggKind::TakeAny
            | AggKind::DCount
            | AggKind::Min
            | AggKind::Max
            | AggKind::Sum
            | AggKind::Avg
            | AggKind::ArgMax
            | AggKind::ArgMin => 1,
            AggKind::MakeSet | AggKind::MakeList => 1,
            _ => 2,
        };
        for a in args.iter().take(n_value_args) {
            spec.args.push(self.compile(a, schema)?);
        }
        if matches!(
            kind,
            AggKind::MakeSet | AggKind::MakeList | AggKind::MakeSetIf | AggKind::MakeListIf
        ) && let Some(l) = args.get(n_value_args)
        {
            spec.limit = self
                .const_scalar(l)?
                .as_i64()
                .and_then(|l| usize::try_from(l).ok())
                .unwrap_or(spec.limit);
        }
        if matches!(kind, AggKind::ArgMax | AggKind::ArgMin) {
            let first_col = match args.first() {
                Some(Expr::Name(n)) => schema.iter().position(|c| &c.name == n),
                _ => None,
            };
            for a in args.iter().skip(1) {
                match a {
                    Expr::Star => {
                        spec.cols.extend((0..schema.len()).filter(|&i| {
                            Some(i) != first_col && !by_names.contains(&schema[i].name)
                        }))
                    }
                    Expr::Name(n) => spec.cols.push(
                        schema
                            .iter()
                            .position(|c| &c.name == n)
                            .ok_or_else(|| no_column(pos, n))?,
                    ),
                    _ => {
                        return Err(semantic(
                            pos,
                            format!("{name} returns columns by name or '*'"),
                        ));
                    }
                }
            }
        }
        Ok(spec)
    }
}

fn agg_type(spec: &AggSpec, schema: &[Column]) -> Option<KustoType> {
    match spec.kind {
        AggKind::Count | AggKind::CountIf | AggKind::DCount | AggKind::DCountIf => {
            Some(KustoType::Int64)
        }
        AggKind::MakeSet | AggKind::MakeSetIf | AggKind::MakeList | AggKind::MakeListIf => {
            Some(KustoType::Object)
        }
        AggKind::Avg | AggKind::AvgIf => Some(KustoType::Double),
        _ => spec.args.first().and_then(|a| static_type(a, schema)),
    }
}

pub(crate) fn summarize<'a>(
    ctx: &mut Ctx<'a>,
    rel: Rel<'a>,
    aggs: &'a [NamedExpr],
    by: &'a [NamedExpr],
    pos: Pos,
) -> R<Rel<'a>> {
    summarize_with(ctx, &rel.columns, aggs, by, pos, |f| {
        for r in &rel.rows {
            f(r);
        }
    })
}

/// `summarize` over rows that `each_row` hands out one at a time (a relation's rows, or the
/// selected rows of a columnar table).
pub(crate) fn summarize_with<'a>(
    ctx: &mut Ctx<'a>,
    schema: &[Column],
    aggs: &'a [NamedExpr],
    by: &'a [NamedExpr],
    pos: Pos,
    each_row: impl FnOnce(&mut dyn FnMut(&dyn Cells)),
) -> R<Rel<'a>> {
    let schema = schema.to_vec();
    let mut by_exprs = Vec::new();
    let mut by_cols = Vec::new();
    for (i, ne) in by.iter().enumerate() {
        let c = ctx.compile(&ne.expr, &schema)?;
        let name = ne.name.clone().unwrap_or_else(|| match &ne.expr {
            Expr::Call { name, args, .. } if matches!(name.as_str(), "bin" | "floor") => {
                default_name(args.first().unwrap_or(&ne.expr), "Column", i + 1)
            }
            e => default_name(e, "Column", i + 1),
        });
        by_cols.push((name, static_type(&c, &schema)));
        by_exprs.push(c);
    }
    let by_names: Vec<String> = by_cols.iter().map(|(n, _)| n.clone()).collect();
    let mut plan = SummarizePlan {
        specs: Vec::new(),
        spec_types: Vec::new(),
        outputs: Vec::new(),
    };
    for ne in aggs {
        match &ne.expr {
            Expr::Call { name, args, pos }
                if matches!(name.as_str(), "arg_max" | "arg_min" | "argmax" | "argmin") =>
            {
                let spec = ctx.agg_spec(name, args, &schema, &by_names, *pos)?;
                let j = plan.specs.len();
                // `(A, B) = arg_max(x, y)` names the columns in order.
                let tuple: Vec<String> = match &ne.name {
                    Some(n) if n.starts_with('(') => n
                        .trim_matches(|c| c == '(' || c == ')')
                        .split(", ")
                        .map(str::to_owned)
                        .collect(),
                    _ => Vec::new(),
                };
                let first_name = tuple
                    .first()
                    .cloned()
                    .or_else(|| ne.name.clone())
                    .unwrap_or_else(|| match args.first() {
                        Some(Expr::Name(n)) => n.clone(),
                        _ => agg_name(name, args),
                    });
                plan.outputs
                    .push((first_name, OutSrc::ArgPart(j, 0), agg_type(&spec, &schema)));
                for (k, &c) in spec.cols.iter().enumerate() {
                    let col_name = tuple
                        .get(k + 1)
                        .cloned()
                        .unwrap_or_else(|| schema[c].name.clone());
                    plan.outputs
                        .push((col_name, OutSrc::ArgPart(j, k + 1), Some(schema[c].ty)));
                }
                plan.spec_types.push(None);
                plan.specs.push(spec);
            }
            e => {
                let c = ctx.compile_agg(e, &schema, &mut plan, pos)?;
                let name = ne.name.clone().unwrap_or_else(|| match first_agg(e) {
                    Some((name, args)) => agg_name(name, args),
                    None => format!("Column{}", plan.outputs.len() + 1),
                });
                let ty = match &c {
                    CExpr::Col(j) => plan.spec_types.get(*j).copied().flatten(),
                    other => static_type(other, &[]),
                };
                plan.outputs.push((name, OutSrc::Post(c), ty));
            }
        }
    }
    // Groups in first-seen order; a hash picks the bucket, values confirm the match.
    let mut buckets: FxMap<u64, Vec<usize>> = FxMap::default();
    let mut keys: Vec<Vec<Value>> = Vec::new();
    let mut states: Vec<Vec<State>> = Vec::new();
    each_row(&mut |r: &dyn Cells| {
        let kv: Vec<std::borrow::Cow<'_, Value>> = by_exprs.iter().map(|c| c.eval(r)).collect();
        let h = hash_many(kv.iter().map(|v| &**v));
        let bucket = buckets.entry(h).or_default();
        let g = match bucket
            .iter()
            .find(|&&g| keys[g].iter().zip(&kv).all(|(a, b)| key_eq(a, b)))
        {
            Some(&g) => g,
            None => {
                keys.push(kv.iter().map(|v| (**v).clone()).collect());
                states.push(plan.specs.iter().map(AggSpec::init).collect());
                bucket.push(keys.len() - 1);
                keys.len() - 1
            }
        };
        for (spec, st) in plan.specs.iter().zip(states[g].iter_mut()) {
            spec.update(st, r);
        }
    });
    // Without `by`, an empty input still yields one row (count 0)
    // (https://learn.microsoft.com/en-us/kusto/query/summarize-operator).
    if by.is_empty() && keys.is_empty() {
        keys.push(Vec::new());
        states.push(plan.specs.iter().map(AggSpec::init).collect());
    }
    let mut columns: Vec<(String, Option<KustoType>)> = by_cols;
    columns.extend(plan.outputs.iter().map(|(n, _, t)| (n.clone(), *t)));
    let rows = keys
        .into_iter()
        .zip(states)
        .map(|(mut key, st)| {
            let results: Vec<Value> = st.iter().map(result).collect();
            for (_, src, _) in &plan.outputs {
                key.push(match src {
                    OutSrc::Post(c) => c.eval(&results).into_owned(),
                    OutSrc::ArgPart(j, 0) => results.get(*j).cloned().unwrap_or_default(),
                    OutSrc::ArgPart(j, k) => match st.get(*j) {
                        Some(State::Arg(Some((_, cols)))) => {
                            cols.get(k - 1).cloned().unwrap_or_default()
                        }
                        _ => Value::Null,
                    },
                });
            }
            key
        })
        .collect();
    Ok(dedupe_names(finish(columns, rows)))
}

/// Kusto suffixes a repeated output column name with 1, 2, ...
fn dedupe_names(mut rel: Rel<'_>) -> Rel<'_> {
    let mut seen: HashSet<String> = HashSet::new();
    for c in &mut rel.columns {
        let base = c.name.clone();
        let mut n = 0;
        while !seen.insert(c.name.clone()) {
            n += 1;
            c.name = format!("{base}{n}");
        }
    }
    rel
}

// ---- join ----

fn key_indices(
    left: &Rel<'_>,
    right: &Rel<'_>,
    on: &[JoinOn],
    pos: Pos,
) -> R<(Vec<usize>, Vec<usize>)> {
    let mut l = Vec::new();
    let mut r = Vec::new();
    for c in on {
        let (a, b) = match c {
            JoinOn::Same(n) => (n, n),
            JoinOn::Pair { left, right } => (left, right),
        };
        l.push(left.col(a).ok_or_else(|| no_column(pos, a))?);
        r.push(right.col(b).ok_or_else(|| no_column(pos, b))?);
    }
    Ok((l, r))
}

/// Joins per https://learn.microsoft.com/en-us/kusto/query/join-operator: the default
/// `innerunique` keeps one left row per key before an inner join.
pub(crate) fn join<'a>(
    left: Rel<'a>,
    right: Rel<'a>,
    kind: JoinKind,
    on: &[JoinOn],
    pos: Pos,
) -> R<Rel<'a>> {
    let (lk, rk) = key_indices(&left, &right, on, pos)?;
    let key_of = |row: &[Value], idx: &[usize]| -> Option<Vec<Value>> {
        let k: Vec<Value> = idx
            .iter()
            .map(|&i| row.get(i).cloned().unwrap_or_default())
            .collect();
        // Null keys match nothing.
        (!k.iter().any(Value::is_null)).then_some(k)
    };
    let mut index: FxMap<u64, Vec<usize>> = FxMap::default();
    let right_keys: Vec<Option<Vec<Value>>> = right.rows.iter().map(|r| key_of(r, &rk)).collect();
    for (i, k) in right_keys.iter().enumerate() {
        if let Some(k) = k {
            index.entry(hash_many(k.iter())).or_default().push(i);
        }
    }
    let matches = |k: &Option<Vec<Value>>| -> Vec<usize> {
        let Some(k) = k else { return Vec::new() };
        index
            .get(&hash_many(k.iter()))
            .map(|c| {
                c.iter()
                    .copied()
                    .filter(|&j| {
                        right_keys[j]
                            .as_ref()
                            .is_some_and(|rk2| rk2.iter().zip(k).all(|(a, b)| key_eq(a, b)))
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut left = left;
    if kind == JoinKind::InnerUnique {
        let mut seen: FxMap<u64, Vec<Vec<Value>>> = FxMap::default();
        left.rows.retain(|r| match key_of(r, &lk) {
            None => true,
            Some(k) => {
                let b = seen.entry(hash_many(k.iter())).or_default();
                if b.iter()
                    .any(|o| o.iter().zip(&k).all(|(a, c)| key_eq(a, c)))
                {
                    false
                } else {
                    b.push(k);
                    true
                }
            }
        });
    }
    let left_matches: Vec<Vec<usize>> =
        left.rows.iter().map(|r| matches(&key_of(r, &lk))).collect();
    match kind {
        JoinKind::LeftSemi | JoinKind::LeftAnti => {
            let keep = kind == JoinKind::LeftSemi;
            let rows = left
                .rows
                .into_iter()
                .zip(&left_matches)
                .filter(|(_, m)| m.is_empty() != keep)
                .map(|(r, _)| r)
                .collect();
            return Ok(Rel {
                columns: left.columns,
                rows,
            });
        }
        JoinKind::RightSemi | JoinKind::RightAnti => {
            let hit: HashSet<usize> = left_matches.iter().flatten().copied().collect();
            let keep = kind == JoinKind::RightSemi;
            let rows = right
                .rows
                .into_iter()
                .enumerate()
                .filter(|(i, _)| hit.contains(i) == keep)
                .map(|(_, r)| r)
                .collect();
            return Ok(Rel {
                columns: right.columns,
                rows,
            });
        }
        _ => {}
    }
    let mut columns = left.columns.clone();
    for c in &right.columns {
        let mut name = c.name.clone();
        let mut n = 0;
        while columns.iter().any(|x| x.name == name) {
            n += 1;
            name = format!("{}{n}", c.name);
        }
        columns.push(Column::new(name, c.ty));
    }
    let left_nulls: Vec<Value> = left.columns.iter().map(|c| null_of(c.ty)).collect();
    let right_nulls: Vec<Value> = right.columns.iter().map(|c| null_of(c.ty)).collect();
    let glue = |a: &[Value], b: &[Value]| {
        Row::Owned(a.iter().chain(b).cloned().collect::<Vec<_>>().into())
    };
    let mut rows = Vec::new();
    let mut right_hit = vec![false; right.rows.len()];
    for (l, m) in left.rows.iter().zip(&left_matches) {
        for &j in m {
            right_hit[j] = true;
            rows.push(glue(l, &right.rows[j]));
        }
        if m.is_empty() && matches!(kind, JoinKind::LeftOuter | JoinKind::FullOuter) {
            rows.push(glue(l, &right_nulls));
        }
    }
    if matches!(kind, JoinKind::RightOuter | JoinKind::FullOuter) {
        for (j, r) in right.rows.iter().enumerate() {
            if !right_hit[j] {
                rows.push(glue(&left_nulls, r));
            }
        }
    }
    Ok(Rel { columns, rows })
}

// ---- union ----

/// An outer union by column name, first-seen order, missing cells null
/// (https://learn.microsoft.com/en-us/kusto/query/union-operator). A name seen with two types
/// becomes two columns, `name_type`.
pub(crate) fn union_all<'a>(
    parts: Vec<(String, Rel<'a>)>,
    withsource: Option<&str>,
    inner: bool,
) -> Rel<'a> {
    let mut columns: Vec<Column> = Vec::new();
    if let Some(w) = withsource {
        columns.push(Column::new(w, KustoType::String));
    }
    let offset = usize::from(withsource.is_some());
    let mut maps: Vec<Vec<usize>> = Vec::new();
    for (_, rel) in &parts {
        let map = rel
            .columns
            .iter()
            .map(|c| {
                let same = columns
                    .iter()
                    .skip(offset)
                    .position(|x| x.name == c.name && x.ty == c.ty);
                let typed = format!("{}_{}", c.name, kql_type_name(c.ty));
                match same {
                    Some(i) => i + offset,
                    None if !columns.iter().any(|x| x.name == c.name) => {
                        columns.push(c.clone());
                        columns.len() - 1
                    }
                    None => match columns.iter().position(|x| x.name == typed) {
                        Some(i) => i,
                        None => {
                            columns.push(Column::new(typed, c.ty));
                            columns.len() - 1
                        }
                    },
                }
            })
            .collect();
        maps.push(map);
    }
    let keep: Vec<usize> = if inner {
        (0..columns.len())
            .filter(|&i| i < offset || maps.iter().all(|m| m.contains(&i)))
            .collect()
    } else {
        (0..columns.len()).collect()
    };
    let mut rows = Vec::new();
    for ((name, rel), map) in parts.iter().zip(&maps) {
        for r in &rel.rows {
            let mut out: Vec<Value> = columns.iter().map(|c| null_of(c.ty)).collect();
            if withsource.is_some() {
                out[0] = Value::String(name.clone());
            }
            for (v, &i) in r.iter().zip(map) {
                out[i] = v.clone();
            }
            rows.push(Row::Owned(
                keep.iter()
                    .map(|&i| std::mem::take(&mut out[i]))
                    .collect::<Vec<_>>()
                    .into(),
            ));
        }
    }
    Rel {
        columns: keep.iter().map(|&i| columns[i].clone()).collect(),
        rows,
    }
}

fn kql_type_name(t: KustoType) -> &'static str {
    match t {
        KustoType::Boolean => "bool",
        KustoType::DateTime => "datetime",
        KustoType::Object => "dynamic",
        KustoType::Guid => "guid",
        KustoType::Int32 => "int",
        KustoType::Int64 => "long",
        KustoType::Double => "real",
        KustoType::String => "string",
        KustoType::TimeSpan => "timespan",
        KustoType::Decimal => "decimal",
    }
}

// ---- mv-expand ----

/// Expands arrays and bags into rows, in parallel across items; a null expands to one row
/// and an empty array to none (https://learn.microsoft.com/en-us/kusto/query/mv-expand-operator).
pub(crate) fn mv_expand<'a>(
    ctx: &mut Ctx<'a>,
    rel: Rel<'a>,
    params: &[(String, String)],
    items: &'a [MvExpandItem],
    limit: Option<usize>,
) -> R<Rel<'a>> {
    let bag_as_array = params
        .iter()
        .any(|(k, v)| (k == "bagexpansion" || k == "kind") && v == "array");
    let index_col = params
        .iter()
        .find(|(k, _)| k == "with_itemindex")
        .map(|(_, v)| v.clone());
    let mut columns = rel.columns.clone();
    let mut plan = Vec::new();
    for (n, it) in items.iter().enumerate() {
        let c = ctx.compile(&it.expr, &rel.columns)?;
        let name = it
            .name
            .clone()
            .unwrap_or_else(|| default_name(&it.expr, "Column", n + 1));
        let ty = match &it.to_type {
            Some(t) => KustoType::from_name(t)
                .ok_or_else(|| semantic(Pos::default(), format!("unknown type '{t}'")))?,
            None => KustoType::Object,
        };
        let at = match columns.iter().position(|c| c.name == name) {
            Some(i) => {
                columns[i].ty = ty;
                i
            }
            None => {
                columns.push(Column::new(name, ty));
                columns.len() - 1
            }
        };
        plan.push((c, at, ty));
    }
    if let Some(ix) = &index_col {
        columns.push(Column::new(ix.clone(), KustoType::Int64));
    }
    let width = columns.len();
    let mut rows = Vec::new();
    for r in &rel.rows {
        let expanded: Vec<Vec<Value>> = plan
            .iter()
            .map(|(c, _, _)| elements(&c.eval(r), bag_as_array))
            .collect();
        let n = expanded
            .iter()
            .map(Vec::len)
            .max()
            .unwrap_or(0)
            .min(limit.unwrap_or(usize::MAX));
        for k in 0..n {
            let mut out = r.to_vec();
            out.resize(width, Value::Null);
            for ((_, at, ty), vals) in plan.iter().zip(&expanded) {
                out[*at] = coerce(vals.get(k).cloned().unwrap_or_default(), *ty);
            }
            if index_col.is_some() {
                out[width - 1] = Value::Int(k as i64);
            }
            rows.push(Row::Owned(out.into()));
        }
    }
    Ok(Rel { columns, rows })
}

fn elements(v: &Value, bag_as_array: bool) -> Vec<Value> {
    use serde_json::Value as J;
    let j = match v {
        Value::Dynamic(j) => j.clone(),
        Value::String(s) => match serde_json::from_str::<J>(s) {
            Ok(j @ (J::Array(_) | J::Object(_))) => j,
            _ => return vec![v.clone()],
        },
        other => return vec![other.clone()],
    };
    match j {
        J::Array(items) => items.into_iter().map(Value::Dynamic).collect(),
        J::Object(m) => m
            .into_iter()
            .map(|(k, v)| {
                if bag_as_array {
                    Value::Dynamic(J::Array(vec![J::String(k), v]))
                } else {
                    let mut one = serde_json::Map::new();
                    one.insert(k, v);
                    Value::Dynamic(J::Object(one))
                }
            })
            .collect(),
        J::Null => vec![Value::Null],
        scalar => vec![Value::Dynamic(scalar)],
    }
}

/// Moves aggregate-result references of one expression past the aggregates of earlier ones.
fn shift_cols(c: CExpr, base: usize) -> CExpr {
    let s = |b: Box<CExpr>| Box::new(shift_cols(*b, base));
    match c {
        CExpr::Col(i) => CExpr::Col(i + base),
        CExpr::Binary(op, l, r) => CExpr::Binary(op, s(l), s(r)),
        CExpr::Neg(e) => CExpr::Neg(s(e)),
        CExpr::Str {
            kind,
            negated,
            cs,
            left,
            right,
        } => CExpr::Str {
            kind,
            negated,
            cs,
            left: s(left),
            right: s(right),
        },
        CExpr::HasList {
            all,
            negated,
            left,
            items,
        } => CExpr::HasList {
            all,
            negated,
            left: s(left),
            items: items.into_iter().map(|i| shift_cols(i, base)).collect(),
        },
        CExpr::Regex { negated, left, re } => CExpr::Regex {
            negated,
            left: s(left),
            re: re.map_err(s),
        },
        CExpr::In {
            expr,
            negated,
            set,
            rows,
        } => CExpr::In {
            expr: s(expr),
            negated,
            set,
            rows: rows.into_iter().map(|i| shift_cols(i, base)).collect(),
        },
        CExpr::Between {
            expr,
            negated,
            low,
            high,
        } => CExpr::Between {
            expr: s(expr),
            negated,
            low: s(low),
            high: s(high),
        },
        CExpr::Member(e, n) => CExpr::Member(s(e), n),
        CExpr::Index(a, b) => CExpr::Index(s(a), s(b)),
        CExpr::Call(f, args) => {
            CExpr::Call(f, args.into_iter().map(|i| shift_cols(i, base)).collect())
        }
        CExpr::Extract { re, group, text } => CExpr::Extract {
            re,
            group,
            text: s(text),
        },
        c @ CExpr::Const(_) => c,
    }
}

/// The first aggregate call in an expression, for naming an unnamed output column.
fn first_agg(e: &Expr) -> Option<(&str, &[Expr])> {
    match e {
        Expr::Call { name, args, .. } if AGGREGATES.contains(&name.as_str()) => Some((name, args)),
        Expr::Call { args, .. } => args.iter().find_map(first_agg),
        Expr::Binary { left, right, .. } | Expr::StrOp { left, right, .. } => {
            first_agg(left).or_else(|| first_agg(right))
        }
        Expr::Unary { expr, .. }
        | Expr::Member { target: expr, .. }
        | Expr::In { expr, .. }
        | Expr::Between { expr, .. } => first_agg(expr),
        _ => None,
    }
}
