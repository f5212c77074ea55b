//! Resolution of scalar expressions against a schema and the `let` scope.

use culprit_model::{Column, Value};

use crate::ast::*;
use crate::eval::{Binding, Ctx, R, no_column, semantic, unsupported, value_set};
use crate::literal_value;
use crate::scalar::{CExpr, F, StrKind, function, regex_for};

/// Aggregation functions: valid only inside `summarize`.
pub(crate) const AGGREGATES: &[&str] = &[
    "count",
    "countif",
    "dcount",
    "dcountif",
    "make_set",
    "make_set_if",
    "make_list",
    "make_list_if",
    "makeset",
    "makelist",
    "min",
    "max",
    "sum",
    "sumif",
    "avg",
    "avgif",
    "arg_max",
    "arg_min",
    "take_any",
    "any",
    "take_anyif",
    "minif",
    "maxif",
    "argmax",
    "argmin",
    "dcount_hll",
    "stdev",
    "variance",
    "percentile",
    "percentiles",
    "make_bag",
    "hll",
    "tdigest",
];

fn string_op(op: &str) -> Option<(StrKind, bool, bool)> {
    let (negated, base) = match op.strip_prefix('!') {
        Some(b) => (true, b),
        None => (false, op),
    };
    let (cs, base) = match base.strip_suffix("_cs") {
        Some(b) => (true, b),
        None => (false, base),
    };
    let kind = match base {
        "has" => StrKind::Has,
        "hasprefix" => StrKind::HasPrefix,
        "hassuffix" => StrKind::HasSuffix,
        "contains" => StrKind::Contains,
        "startswith" => StrKind::StartsWith,
        "endswith" => StrKind::EndsWith,
        _ => return None,
    };
    Some((kind, negated, cs))
}

fn expr_pos(e: &Expr) -> Pos {
    match e {
        Expr::Call { pos, .. }
        | Expr::Binary { pos, .. }
        | Expr::StrOp { pos, .. }
        | Expr::In { pos, .. }
        | Expr::Between { pos, .. } => *pos,
        Expr::Member { target, .. } | Expr::Index { target, .. } => expr_pos(target),
        Expr::Unary { expr, .. } => expr_pos(expr),
        _ => Pos::default(),
    }
}

impl<'a> Ctx<'a> {
    pub(crate) fn compile(&mut self, e: &'a Expr, schema: &[Column]) -> R<CExpr> {
        let c = self.compile_inner(e, schema)?;
        Ok(fold(c))
    }

    fn compile_inner(&mut self, e: &'a Expr, schema: &[Column]) -> R<CExpr> {
        let bx = |c: CExpr| Box::new(c);
        Ok(match e {
            Expr::Lit(l) => CExpr::Const(literal_value(l)),
            Expr::Name(n) => self.resolve_name(n, schema, Pos::default())?,
            Expr::Star => return Err(semantic(Pos::default(), "'*' is not a scalar expression")),
            Expr::Call { name, args, pos } => self.compile_call(name, args, *pos, schema)?,
            Expr::Member { target, name } => {
                CExpr::Member(bx(self.compile(target, schema)?), name.clone())
            }
            Expr::Index { target, index } => CExpr::Index(
                bx(self.compile(target, schema)?),
                bx(self.compile(index, schema)?),
            ),
            Expr::Unary {
                op: UnaryOp::Neg,
                expr,
            } => CExpr::Neg(bx(self.compile(expr, schema)?)),
            Expr::Unary {
                op: UnaryOp::Plus,
                expr,
            } => self.compile(expr, schema)?,
            Expr::Binary {
                op, left, right, ..
            } => CExpr::Binary(
                *op,
                bx(self.compile(left, schema)?),
                bx(self.compile(right, schema)?),
            ),
            Expr::StrOp {
                op,
                left,
                right,
                pos,
            } => self.compile_str_op(op, left, right, *pos, schema)?,
            Expr::In {
                expr,
                negated,
                case_insensitive,
                list,
                ..
            } => {
                let target = bx(self.compile(expr, schema)?);
                let mut set = value_set(*case_insensitive);
                let mut rows = Vec::new();
                for item in list {
                    if self.is_table_item(item) {
                        // `in (T)`: the values of T's first column.
                        let t = self.eval_expr_table(item, expr_pos(expr))?;
                        for r in &t.rows {
                            if let Some(v) = r.first() {
                                set.insert(v.clone());
                            }
                        }
                        continue;
                    }
                    match self.compile(item, schema)? {
                        CExpr::Const(v) => set.insert(v),
                        c => rows.push(c),
                    }
                }
                CExpr::In {
                    expr: target,
                    negated: *negated,
                    set,
                    rows,
                }
            }
            Expr::Between {
                expr,
                negated,
                low,
                high,
                ..
            } => CExpr::Between {
                expr: bx(self.compile(expr, schema)?),
                negated: *negated,
                low: bx(self.compile(low, schema)?),
                high: bx(self.compile(high, schema)?),
            },
            Expr::List(_) => {
                return Err(semantic(expr_pos(e), "a list is not a scalar expression"));
            }
            Expr::Tabular(_) => {
                return Err(semantic(
                    expr_pos(e),
                    "a tabular expression is not a scalar; use toscalar()",
                ));
            }
        })
    }

    fn is_table_item(&self, e: &Expr) -> bool {
        match e {
            Expr::Tabular(_) => true,
            Expr::Name(n) => {
                matches!(self.lookup(n), Some(Binding::Table(_)))
                    || (self.lookup(n).is_none()
                        && (self.db.contains(n)
                            || crate::schema::DEVICE_TABLES.contains(&n.as_str())))
            }
            _ => false,
        }
    }

    fn resolve_name(&mut self, n: &str, schema: &[Column], pos: Pos) -> R<CExpr> {
        if let Some(i) = schema.iter().position(|c| c.name == n) {
            return Ok(CExpr::Col(i));
        }
        match self.lookup(n) {
            Some(Binding::Scalar(v)) => Ok(CExpr::Const(v.clone())),
            Some(Binding::Func([], body)) => {
                let body = *body;
                match self.call_function(&[], body, &[], pos)? {
                    crate::eval::Outcome::Scalar(v) => Ok(CExpr::Const(v)),
                    crate::eval::Outcome::Table(_) => {
                        Err(semantic(pos, format!("'{n}' is a table, not a scalar")))
                    }
                }
            }
            Some(_) => Err(semantic(pos, format!("'{n}' is a table, not a scalar"))),
            None => Err(no_column(pos, n)),
        }
    }

    fn compile_args(&mut self, args: &'a [Expr], schema: &[Column]) -> R<Vec<CExpr>> {
        args.iter().map(|a| self.compile(a, schema)).collect()
    }

    fn compile_call(
        &mut self,
        name: &'a str,
        args: &'a [Expr],
        pos: Pos,
        schema: &[Column],
    ) -> R<CExpr> {
        let now = Value::DateTime(self.opts.now);
        match (name, args) {
            ("now", []) => return Ok(CExpr::Const(now)),
            ("now", [offset]) => {
                return Ok(CExpr::Binary(
                    BinOp::Add,
                    Box::new(CExpr::Const(now)),
                    Box::new(self.compile(offset, schema)?),
                ));
            }
            // ago(x) is now() - x (https://learn.microsoft.com/en-us/kusto/query/ago-function).
            ("ago", [span]) => {
                return Ok(CExpr::Binary(
                    BinOp::Sub,
                    Box::new(CExpr::Const(now)),
                    Box::new(self.compile(span, schema)?),
                ));
            }
            ("toscalar", [t]) => {
                let rel = self.eval_expr_table(t, pos)?;
                return Ok(CExpr::Const(
                    rel.rows
                        .first()
                        .and_then(|r| r.first().cloned())
                        .unwrap_or_default(),
                ));
            }
            ("column_ifexists", [Expr::Lit(Literal::String(col)), default]) => {
                return match schema.iter().position(|c| &c.name == col) {
                    Some(i) => Ok(CExpr::Col(i)),
                    None => self.compile(default, schema),
                };
            }
            ("extract", [pattern, group, text, ..]) => {
                let p = self.compile(pattern, schema)?;
                let g = self.compile(group, schema)?;
                if let (CExpr::Const(pv), CExpr::Const(gv)) = (&p, &g) {
                    let re = regex::Regex::new(&crate::values::to_text(pv))
                        .map_err(|e| semantic(pos, format!("invalid regex: {e}")))?;
                    let group = gv
                        .as_i64()
                        .and_then(|g| usize::try_from(g).ok())
                        .unwrap_or(0);
                    return Ok(CExpr::Extract {
                        re,
                        group,
                        text: Box::new(self.compile(text, schema)?),
                    });
                }
                let t = self.compile(text, schema)?;
                return Ok(CExpr::Call(F::Extract, vec![p, g, t]));
            }
            _ => {}
        }
        if let Some(Binding::Func(params, body)) = self.lookup(name) {
            let (params, body) = (*params, *body);
            return match self.call_function(params, body, args, pos)? {
                crate::eval::Outcome::Scalar(v) => Ok(CExpr::Const(v)),
                crate::eval::Outcome::Table(_) => Err(semantic(
                    pos,
                    format!("function '{name}' returns a table, not a scalar"),
                )),
            };
        }
        if AGGREGATES.contains(&name) {
            if let Some(pending) = self.pending_aggs.as_mut() {
                pending.push((name, args, pos));
                return Ok(CExpr::Col(pending.len() - 1));
            }
            return Err(semantic(
                pos,
                format!("aggregate function '{name}' can only be used inside summarize"),
            ));
        }
        match function(name) {
            Some(f) => Ok(CExpr::Call(f, self.compile_args(args, schema)?)),
            None => Err(unsupported(pos, name)),
        }
    }

    fn compile_str_op(
        &mut self,
        op: &str,
        left: &'a Expr,
        right: &'a Expr,
        pos: Pos,
        schema: &[Column],
    ) -> R<CExpr> {
        let l = Box::new(self.compile(left, schema)?);
        if let Some(negated) = match op {
            "matches regex" => Some(false),
            "!matches regex" => Some(true),
            _ => None,
        } {
            let r = self.compile(right, schema)?;
            let re =
                match regex_for(&r).map_err(|e| semantic(pos, format!("invalid regex: {e}")))? {
                    Some(re) => Ok(re),
                    None => Err(Box::new(r)),
                };
            return Ok(CExpr::Regex {
                negated,
                left: l,
                re,
            });
        }
        if let Some((all, negated)) = match op {
            "has_any" | "has_any_cs" => Some((false, false)),
            "!has_any" => Some((false, true)),
            "has_all" | "has_all_cs" => Some((true, false)),
            _ => None,
        } {
            let items = match right {
                Expr::List(items) => items
                    .iter()
                    .map(|i| self.compile(i, schema))
                    .collect::<R<_>>()?,
                other => vec![self.compile(other, schema)?],
            };
            return Ok(CExpr::HasList {
                all,
                negated,
                left: l,
                items,
            });
        }
        let Some((kind, negated, cs)) = string_op(op) else {
            return Err(unsupported(pos, op));
        };
        Ok(CExpr::Str {
            kind,
            negated,
            cs,
            left: l,
            right: Box::new(self.compile(right, schema)?),
        })
    }
}

/// Evaluates once a node whose inputs are all constants.
fn fold(c: CExpr) -> CExpr {
    let all_const = match &c {
        CExpr::Binary(_, l, r) => l.is_const() && r.is_const(),
        CExpr::Neg(e) | CExpr::Member(e, _) => e.is_const(),
        CExpr::Index(a, b) => a.is_const() && b.is_const(),
        CExpr::Call(_, args) => args.iter().all(CExpr::is_const),
        CExpr::Str { left, right, .. } => left.is_const() && right.is_const(),
        CExpr::Between {
            expr, low, high, ..
        } => expr.is_const() && low.is_const() && high.is_const(),
        _ => false,
    };
    if all_const {
        CExpr::Const(c.eval(&[]).into_owned())
    } else {
        c
    }
}
