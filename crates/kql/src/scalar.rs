//! Scalar expressions compiled against a schema (names resolved to column indices, constants
//! folded, regexes built once) and evaluated per row.

use std::borrow::Cow;
use std::cmp::Ordering;
use std::collections::HashSet;

use culprit_model::{Duration, Timestamp, Value};
use regex::Regex;

use crate::ast::BinOp;
use crate::values::{
    self, compare, from_json_scalar, key_eq, parse_datetime, parse_timespan, to_json, to_text,
};

/// Built-in scalar functions the evaluator runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum F {
    Bin,
    ToString,
    ToInt,
    ToLong,
    ToReal,
    ToDatetime,
    ToTimespan,
    ToBool,
    ParseJson,
    Strcat,
    StrcatDelim,
    Split,
    ToLower,
    ToUpper,
    Iff,
    Case,
    Coalesce,
    IsEmpty,
    IsNotEmpty,
    IsNull,
    IsNotNull,
    ArrayLength,
    PackArray,
    Pack,
    Not,
    Strlen,
    Substring,
    IndexOf,
    ReplaceString,
    Trim,
    StartOfDay,
    Abs,
    Round,
    Extract,
    SetHasElement,
    ArrayIndexOf,
    ArrayConcat,
    BagKeys,
    DatetimeDiff,
    Dayofweek,
    Hash,
    Replace,
    ReplaceRegex,
    ParseUrl,
    CountOf,
    DatetimeAdd,
    Base64Decode,
    ExtractJson,
}

pub(crate) fn function(name: &str) -> Option<F> {
    Some(match name {
        "bin" | "floor" => F::Bin,
        "tostring" => F::ToString,
        "toint" => F::ToInt,
        "tolong" => F::ToLong,
        "toreal" | "todouble" | "todecimal" => F::ToReal,
        "todatetime" => F::ToDatetime,
        "totimespan" | "totime" => F::ToTimespan,
        "tobool" | "toboolean" => F::ToBool,
        "parse_json" | "todynamic" | "toobject" => F::ParseJson,
        "strcat" => F::Strcat,
        "strcat_delim" => F::StrcatDelim,
        "split" => F::Split,
        "tolower" => F::ToLower,
        "toupper" => F::ToUpper,
        "iff" | "iif" => F::Iff,
        "case" => F::Case,
        "coalesce" => F::Coalesce,
        "isempty" => F::IsEmpty,
        "isnotempty" => F::IsNotEmpty,
        "isnull" => F::IsNull,
        "isnotnull" => F::IsNotNull,
        "array_length" => F::ArrayLength,
        "pack_array" => F::PackArray,
        "pack" | "bag_pack" | "pack_dictionary" => F::Pack,
        "not" => F::Not,
        "strlen" => F::Strlen,
        "substring" => F::Substring,
        "indexof" => F::IndexOf,
        "replace_string" => F::ReplaceString,
        "trim" => F::Trim,
        "startofday" => F::StartOfDay,
        "abs" => F::Abs,
        "round" => F::Round,
        "extract" => F::Extract,
        "set_has_element" => F::SetHasElement,
        "array_index_of" => F::ArrayIndexOf,
        "array_concat" => F::ArrayConcat,
        "bag_keys" => F::BagKeys,
        "datetime_diff" => F::DatetimeDiff,
        "dayofweek" => F::Dayofweek,
        "hash" => F::Hash,
        "replace" => F::Replace,
        "replace_regex" => F::ReplaceRegex,
        "parse_url" => F::ParseUrl,
        "countof" => F::CountOf,
        "datetime_add" => F::DatetimeAdd,
        "base64_decodestring" | "base64_decode_tostring" => F::Base64Decode,
        "extractjson" | "extract_json" => F::ExtractJson,
        _ => return None,
    })
}

/// String operators by kind; `cs` marks the case-sensitive forms.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum StrKind {
    Has,
    HasPrefix,
    HasSuffix,
    Contains,
    StartsWith,
    EndsWith,
}

/// A set of constants for `in`: strings apart so that lookups need no allocation.
#[derive(Debug, Default)]
pub(crate) struct ValueSet {
    pub(crate) strings: HashSet<String>,
    pub(crate) others: Vec<Value>,
    pub(crate) ci: bool,
}

impl ValueSet {
    pub(crate) fn insert(&mut self, v: Value) {
        match v {
            Value::Dynamic(serde_json::Value::Array(items)) => {
                for j in &items {
                    self.insert(from_json_scalar(j));
                }
            }
            Value::Dynamic(j) if !j.is_object() => self.insert(from_json_scalar(&j)),
            Value::String(s) => {
                self.strings
                    .insert(if self.ci { s.to_lowercase() } else { s });
            }
            other => self.others.push(other),
        }
    }

    pub(crate) fn contains(&self, v: &Value) -> bool {
        match v {
            Value::String(s) if self.ci => self.strings.contains(&s.to_lowercase()),
            Value::String(s) => self.strings.contains(s.as_str()),
            Value::Dynamic(j) if !j.is_object() && !j.is_array() => {
                self.contains(&from_json_scalar(j))
            }
            other => self.others.iter().any(|o| key_eq(o, other)),
        }
    }
}

#[derive(Debug)]
pub(crate) enum CExpr {
    Col(usize),
    Const(Value),
    Binary(BinOp, Box<CExpr>, Box<CExpr>),
    Neg(Box<CExpr>),
    Str {
        kind: StrKind,
        negated: bool,
        cs: bool,
        left: Box<CExpr>,
        right: Box<CExpr>,
    },
    HasList {
        all: bool,
        negated: bool,
        left: Box<CExpr>,
        items: Vec<CExpr>,
    },
    Regex {
        negated: bool,
        left: Box<CExpr>,
        re: Result<Regex, Box<CExpr>>,
    },
    In {
        expr: Box<CExpr>,
        negated: bool,
        set: ValueSet,
        rows: Vec<CExpr>,
    },
    Between {
        expr: Box<CExpr>,
        negated: bool,
        low: Box<CExpr>,
        high: Box<CExpr>,
    },
    Member(Box<CExpr>, String),
    Index(Box<CExpr>, Box<CExpr>),
    Call(F, Vec<CExpr>),
    /// `extract` with a constant pattern.
    Extract {
        re: Regex,
        group: usize,
        text: Box<CExpr>,
    },
}

type V<'r> = Cow<'r, Value>;

/// The cells of one row as expressions read them: a row vector, or a row of a columnar table.
pub(crate) trait Cells {
    fn cell(&self, i: usize) -> Option<&Value>;
}

impl Cells for [Value] {
    fn cell(&self, i: usize) -> Option<&Value> {
        self.get(i)
    }
}

impl<const N: usize> Cells for [Value; N] {
    fn cell(&self, i: usize) -> Option<&Value> {
        self.get(i)
    }
}

impl Cells for Vec<Value> {
    fn cell(&self, i: usize) -> Option<&Value> {
        self.get(i)
    }
}

impl Cells for crate::eval::Row<'_> {
    fn cell(&self, i: usize) -> Option<&Value> {
        self.get(i)
    }
}

fn null<'r>() -> V<'r> {
    Cow::Owned(Value::Null)
}
fn owned<'r>(v: Value) -> V<'r> {
    Cow::Owned(v)
}
fn b<'r>(x: bool) -> V<'r> {
    Cow::Owned(Value::Bool(x))
}

impl CExpr {
    /// The columns the expression reads, added to `out`.
    pub(crate) fn columns_used(&self, out: &mut Vec<usize>) {
        let mut add = |e: &CExpr| e.columns_used(out);
        match self {
            CExpr::Col(i) => {
                if !out.contains(i) {
                    out.push(*i);
                }
            }
            CExpr::Const(_) => {}
            CExpr::Binary(_, l, r) | CExpr::Index(l, r) => {
                add(l);
                add(r);
            }
            CExpr::Neg(e) | CExpr::Member(e, _) => add(e),
            CExpr::Str { left, right, .. } => {
                add(left);
                add(right);
            }
            CExpr::HasList { left, items, .. } => {
                add(left);
                items.iter().for_each(add);
            }
            CExpr::Regex { left, re, .. } => {
                add(left);
                if let Err(p) = re {
                    add(p);
                }
            }
            CExpr::In { expr, rows, .. } => {
                add(expr);
                rows.iter().for_each(add);
            }
            CExpr::Between {
                expr, low, high, ..
            } => {
                add(expr);
                add(low);
                add(high);
            }
            CExpr::Call(_, args) => args.iter().for_each(add),
            CExpr::Extract { text, .. } => add(text),
        }
    }

    pub(crate) fn is_const(&self) -> bool {
        matches!(self, CExpr::Const(_))
    }

    /// True when the predicate holds (null counts as false, as `where` treats it).
    pub(crate) fn test<C: Cells + ?Sized>(&self, row: &C) -> bool {
        self.truth(row) == Some(true)
    }

    /// A predicate's three-valued truth, without building values for `and`, `or` and
    /// comparisons: `where` runs this on every row.
    fn truth<C: Cells + ?Sized>(&self, row: &C) -> Option<bool> {
        match self {
            CExpr::Binary(BinOp::And, l, r) => match l.truth(row) {
                Some(false) => Some(false),
                lv => match r.truth(row) {
                    Some(false) => Some(false),
                    rv => lv.and(rv),
                },
            },
            CExpr::Binary(BinOp::Or, l, r) => match l.truth(row) {
                Some(true) => Some(true),
                lv => match r.truth(row) {
                    Some(true) => Some(true),
                    rv => lv.and(rv),
                },
            },
            CExpr::Binary(op, l, r) if is_comparison(*op) => {
                compare_values(*op, &l.eval(row), &r.eval(row))
            }
            other => other.eval(row).as_bool(),
        }
    }

    pub(crate) fn eval<'r, C: Cells + ?Sized>(&'r self, row: &'r C) -> V<'r> {
        match self {
            CExpr::Col(i) => row.cell(*i).map_or_else(null, Cow::Borrowed),
            CExpr::Const(v) => Cow::Borrowed(v),
            CExpr::Binary(op, l, r) => binary(*op, l, r, row),
            CExpr::Neg(e) => owned(match &*e.eval(row) {
                Value::Int(i) => Value::Int(i.wrapping_neg()),
                Value::Real(r) => Value::Real(-r),
                Value::TimeSpan(d) => Value::TimeSpan(-*d),
                _ => Value::Null,
            }),
            CExpr::Str {
                kind,
                negated,
                cs,
                left,
                right,
            } => {
                let (l, r) = (left.eval(row), right.eval(row));
                let (h, n) = (to_text(&l), to_text(&r));
                b(*negated != str_op(*kind, &h, &n, *cs))
            }
            CExpr::HasList {
                all,
                negated,
                left,
                items,
            } => {
                let l = left.eval(row);
                let h = to_text(&l);
                let mut needles = Vec::new();
                for it in items {
                    flatten_text(&it.eval(row), &mut needles);
                }
                let hit = |n: &String| values::has_term(&h, n, true, true, false);
                let r = if *all {
                    needles.iter().all(hit)
                } else {
                    needles.iter().any(hit)
                };
                b(*negated != r)
            }
            CExpr::Regex { negated, left, re } => {
                let l = left.eval(row);
                let text = to_text(&l);
                let hit = match re {
                    Ok(re) => re.is_match(&text),
                    Err(p) => Regex::new(&to_text(&p.eval(row))).is_ok_and(|re| re.is_match(&text)),
                };
                b(*negated != hit)
            }
            CExpr::In {
                expr,
                negated,
                set,
                rows,
            } => {
                let v = expr.eval(row);
                if v.is_null() {
                    return b(*negated);
                }
                let mut hit = set.contains(&v);
                if !hit && !rows.is_empty() {
                    let mut extra = ValueSet {
                        ci: set.ci,
                        ..ValueSet::default()
                    };
                    for r in rows {
                        extra.insert(r.eval(row).into_owned());
                    }
                    hit = extra.contains(&v);
                }
                b(*negated != hit)
            }
            CExpr::Between {
                expr,
                negated,
                low,
                high,
            } => {
                let (v, lo, hi) = (expr.eval(row), low.eval(row), high.eval(row));
                match (compare(&v, &lo), compare(&v, &hi)) {
                    (Some(a), Some(c)) => {
                        b(*negated != (a != Ordering::Less && c != Ordering::Greater))
                    }
                    _ => null(),
                }
            }
            CExpr::Member(t, name) => owned(member(&t.eval(row), name)),
            CExpr::Index(t, i) => owned(index(&t.eval(row), &i.eval(row))),
            CExpr::Call(f, args) => call(*f, args, row),
            CExpr::Extract { re, group, text } => {
                let t = text.eval(row);
                let s = to_text(&t);
                owned(
                    re.captures(&s)
                        .and_then(|c| c.get(*group))
                        .map_or(Value::String(String::new()), |m| {
                            Value::String(m.as_str().to_owned())
                        }),
                )
            }
        }
    }
}

fn flatten_text(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Dynamic(serde_json::Value::Array(items)) => {
            out.extend(
                items
                    .iter()
                    .map(|j| to_text(&from_json_scalar(j)).into_owned()),
            );
        }
        other => out.push(to_text(other).into_owned()),
    }
}

pub(crate) fn str_op(kind: StrKind, h: &str, n: &str, cs: bool) -> bool {
    match kind {
        StrKind::Has => values::has_term(h, n, true, true, cs),
        StrKind::HasPrefix => values::has_term(h, n, true, false, cs),
        StrKind::HasSuffix => values::has_term(h, n, false, true, cs),
        StrKind::Contains => values::contains(h, n, cs),
        StrKind::StartsWith => values::starts_with(h, n, cs),
        StrKind::EndsWith => values::ends_with(h, n, cs),
    }
}

fn as_json(v: &Value) -> Option<Cow<'_, serde_json::Value>> {
    match v {
        Value::Dynamic(j) => Some(Cow::Borrowed(j)),
        Value::String(s) => serde_json::from_str(s).ok().map(Cow::Owned),
        _ => None,
    }
}

fn member(v: &Value, name: &str) -> Value {
    match as_json(v).as_deref().and_then(|j| j.get(name)) {
        Some(serde_json::Value::Null) | None => Value::Null,
        Some(j) => Value::Dynamic(j.clone()),
    }
}

fn index(v: &Value, i: &Value) -> Value {
    let Some(j) = as_json(v) else {
        return Value::Null;
    };
    let child = match (&*j, i) {
        (serde_json::Value::Array(a), Value::Int(k)) => {
            let k = if *k < 0 { a.len() as i64 + k } else { *k };
            usize::try_from(k).ok().and_then(|k| a.get(k))
        }
        (serde_json::Value::Object(o), Value::String(k)) => o.get(k),
        _ => None,
    };
    match child {
        Some(serde_json::Value::Null) | None => Value::Null,
        Some(c) => Value::Dynamic(c.clone()),
    }
}

fn logical<C: Cells + ?Sized>(op: BinOp, l: &CExpr, r: &CExpr, row: &C) -> Value {
    let lv = l.eval(row).as_bool();
    let short = if op == BinOp::And {
        Some(false)
    } else {
        Some(true)
    };
    if lv == short {
        return Value::Bool(lv == Some(true));
    }
    let rv = r.eval(row).as_bool();
    if rv == short {
        return Value::Bool(rv == Some(true));
    }
    match (lv, rv) {
        (Some(a), Some(c)) => Value::Bool(if op == BinOp::And { a && c } else { a || c }),
        _ => Value::Null,
    }
}

fn binary<'r, C: Cells + ?Sized>(op: BinOp, l: &'r CExpr, r: &'r CExpr, row: &'r C) -> V<'r> {
    if matches!(op, BinOp::And | BinOp::Or) {
        return owned(logical(op, l, r, row));
    }
    let (a, c) = (l.eval(row), r.eval(row));
    owned(binary_values(op, &a, &c))
}

/// `==`, `<`, `+`, ... on two values; null in, null out
/// (https://learn.microsoft.com/en-us/kusto/query/scalar-data-types/null-values).
pub(crate) fn binary_values(op: BinOp, a: &Value, c: &Value) -> Value {
    if is_comparison(op) {
        return compare_values(op, a, c).map_or(Value::Null, Value::Bool);
    }
    if a.is_null() || c.is_null() {
        return Value::Null;
    }
    arith(op, a, c)
}

fn is_comparison(op: BinOp) -> bool {
    matches!(
        op,
        BinOp::Eq
            | BinOp::Ne
            | BinOp::EqCi
            | BinOp::NeCi
            | BinOp::Lt
            | BinOp::Le
            | BinOp::Gt
            | BinOp::Ge
    )
}

/// A comparison's result; `None` (null) when either side is null or they do not compare.
fn compare_values(op: BinOp, a: &Value, c: &Value) -> Option<bool> {
    if a.is_null() || c.is_null() {
        return None;
    }
    Some(match op {
        BinOp::Eq => eq(a, c),
        BinOp::Ne => !eq(a, c),
        BinOp::EqCi => values::eq_ci(&to_text(a), &to_text(c)),
        BinOp::NeCi => !values::eq_ci(&to_text(a), &to_text(c)),
        _ => {
            let o = compare(a, c)?;
            match op {
                BinOp::Lt => o == Ordering::Less,
                BinOp::Le => o != Ordering::Greater,
                BinOp::Gt => o == Ordering::Greater,
                _ => o != Ordering::Less,
            }
        }
    })
}

fn eq(a: &Value, c: &Value) -> bool {
    match (a, c) {
        (Value::String(x), Value::String(y)) => x == y,
        _ => compare(a, c).map_or_else(|| key_eq(a, c), |o| o == Ordering::Equal),
    }
}

fn num(v: &Value) -> Option<Value> {
    match v {
        Value::Int(_) | Value::Real(_) => Some(v.clone()),
        Value::Dynamic(j) => match from_json_scalar(j) {
            n @ (Value::Int(_) | Value::Real(_)) => Some(n),
            _ => None,
        },
        _ => None,
    }
}

fn arith(op: BinOp, a: &Value, c: &Value) -> Value {
    use Value::{DateTime as Dt, Int, Real, TimeSpan as Ts};
    match (op, a, c) {
        (BinOp::Add, Dt(t), Ts(d)) | (BinOp::Add, Ts(d), Dt(t)) => Dt(*t + *d),
        (BinOp::Sub, Dt(t), Ts(d)) => Dt(*t - *d),
        (BinOp::Sub, Dt(x), Dt(y)) => Ts(*x - *y),
        (BinOp::Add, Ts(x), Ts(y)) => Ts(*x + *y),
        (BinOp::Sub, Ts(x), Ts(y)) => Ts(Duration(x.0.saturating_sub(y.0))),
        (BinOp::Div, Ts(x), Ts(y)) if y.0 != 0 => Real(x.0 as f64 / y.0 as f64),
        (BinOp::Mul, Ts(d), n) | (BinOp::Mul, n, Ts(d)) => match num(n) {
            Some(Int(i)) => Ts(Duration(d.0.saturating_mul(i))),
            Some(Real(r)) => Ts(Duration((d.0 as f64 * r) as i64)),
            _ => Value::Null,
        },
        (BinOp::Div, Ts(d), n) => match num(n) {
            Some(Int(i)) if i != 0 => Ts(Duration(d.0 / i)),
            Some(Real(r)) if r != 0.0 => Ts(Duration((d.0 as f64 / r) as i64)),
            _ => Value::Null,
        },
        _ => match (num(a), num(c)) {
            (Some(Int(x)), Some(Int(y))) => match op {
                BinOp::Add => Int(x.wrapping_add(y)),
                BinOp::Sub => Int(x.wrapping_sub(y)),
                BinOp::Mul => Int(x.wrapping_mul(y)),
                BinOp::Div => x.checked_div(y).map_or(Value::Null, Int),
                BinOp::Mod => x.checked_rem(y).map_or(Value::Null, Int),
                _ => Value::Null,
            },
            (Some(x), Some(y)) => {
                let (x, y) = (
                    x.as_f64().unwrap_or(f64::NAN),
                    y.as_f64().unwrap_or(f64::NAN),
                );
                Real(match op {
                    BinOp::Add => x + y,
                    BinOp::Sub => x - y,
                    BinOp::Mul => x * y,
                    BinOp::Div => x / y,
                    BinOp::Mod => x % y,
                    _ => return Value::Null,
                })
            }
            _ => Value::Null,
        },
    }
}

fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::String(s) => s.is_empty(),
        Value::Dynamic(serde_json::Value::String(s)) => s.is_empty(),
        Value::Dynamic(serde_json::Value::Null) => true,
        _ => false,
    }
}

pub(crate) fn to_long(v: &Value) -> Value {
    match v {
        Value::Int(i) => Value::Int(*i),
        Value::Real(r) if r.is_finite() => Value::Int(*r as i64),
        Value::Bool(x) => Value::Int(i64::from(*x)),
        Value::String(s) => s
            .trim()
            .parse::<i64>()
            .map(Value::Int)
            .or_else(|_| s.trim().parse::<f64>().map(|f| Value::Int(f as i64)))
            .unwrap_or(Value::Null),
        Value::DateTime(t) => Value::Int(t.0),
        Value::TimeSpan(d) => Value::Int(d.0),
        Value::Dynamic(j) => match from_json_scalar(j) {
            Value::Dynamic(_) => Value::Null,
            s => to_long(&s),
        },
        _ => Value::Null,
    }
}

fn to_real(v: &Value) -> Value {
    match v {
        Value::Int(i) => Value::Real(*i as f64),
        Value::Real(r) => Value::Real(*r),
        Value::Bool(x) => Value::Real(f64::from(u8::from(*x))),
        Value::String(s) => s
            .trim()
            .parse::<f64>()
            .map(Value::Real)
            .unwrap_or(Value::Null),
        Value::Dynamic(j) => match from_json_scalar(j) {
            Value::Dynamic(_) => Value::Null,
            s => to_real(&s),
        },
        _ => Value::Null,
    }
}

fn to_datetime(v: &Value) -> Value {
    match v {
        Value::DateTime(t) => Value::DateTime(*t),
        Value::String(s) | Value::Dynamic(serde_json::Value::String(s)) => {
            parse_datetime(s).map_or(Value::Null, Value::DateTime)
        }
        _ => Value::Null,
    }
}

fn to_timespan(v: &Value) -> Value {
    match v {
        Value::TimeSpan(d) => Value::TimeSpan(*d),
        Value::Int(i) => Value::TimeSpan(Duration(*i)),
        Value::String(s) | Value::Dynamic(serde_json::Value::String(s)) => {
            parse_timespan(s).map_or(Value::Null, Value::TimeSpan)
        }
        _ => Value::Null,
    }
}

fn to_bool(v: &Value) -> Value {
    match v {
        Value::Bool(x) => Value::Bool(*x),
        Value::Int(i) => Value::Bool(*i != 0),
        Value::Real(r) => Value::Bool(*r != 0.0),
        Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
            "true" | "1" => Value::Bool(true),
            "false" | "0" => Value::Bool(false),
            _ => Value::Null,
        },
        Value::Dynamic(j) => match from_json_scalar(j) {
            Value::Dynamic(_) => Value::Null,
            s => to_bool(&s),
        },
        _ => Value::Null,
    }
}

/// `parse_json`: strings holding JSON become dynamic; other strings stay strings in a dynamic.
pub(crate) fn parse_json(v: &Value) -> Value {
    match v {
        Value::Null => Value::Null,
        Value::Dynamic(j) => match j {
            serde_json::Value::String(s) => serde_json::from_str(s)
                .map(Value::Dynamic)
                .unwrap_or_else(|_| Value::Dynamic(j.clone())),
            _ => Value::Dynamic(j.clone()),
        },
        Value::String(s) => serde_json::from_str(s)
            .map(Value::Dynamic)
            .unwrap_or_else(|_| Value::Dynamic(serde_json::Value::String(s.clone()))),
        other => Value::Dynamic(to_json(other)),
    }
}

fn bin(v: &Value, size: &Value) -> Value {
    match (v, size) {
        (Value::DateTime(t), Value::TimeSpan(d)) if d.0 > 0 => {
            t.0.div_euclid(d.0)
                .checked_mul(d.0)
                .map_or(Value::Null, |x| Value::DateTime(Timestamp(x)))
        }
        (Value::TimeSpan(t), Value::TimeSpan(d)) if d.0 > 0 => {
            t.0.div_euclid(d.0)
                .checked_mul(d.0)
                .map_or(Value::Null, |x| Value::TimeSpan(Duration(x)))
        }
        (Value::Int(x), Value::Int(s)) if *s > 0 => x
            .div_euclid(*s)
            .checked_mul(*s)
            .map_or(Value::Null, Value::Int),
        _ => match (v.as_f64(), size.as_f64()) {
            (Some(x), Some(s)) if s > 0.0 && !matches!(v, Value::String(_)) => {
                Value::Real((x / s).floor() * s)
            }
            _ => Value::Null,
        },
    }
}

fn arr(v: &Value) -> Option<Cow<'_, [serde_json::Value]>> {
    match as_json(v)? {
        Cow::Borrowed(serde_json::Value::Array(a)) => Some(Cow::Borrowed(a.as_slice())),
        Cow::Owned(serde_json::Value::Array(a)) => Some(Cow::Owned(a)),
        _ => None,
    }
}

fn substring(s: &str, start: &Value, len: Option<&Value>) -> Value {
    let chars: Vec<char> = s.chars().collect();
    let n = chars.len() as i64;
    let st = start.as_i64().unwrap_or(0).clamp(0, n);
    let l = len
        .and_then(Value::as_i64)
        .unwrap_or(n - st)
        .clamp(0, n - st);
    Value::String(chars[st as usize..(st + l) as usize].iter().collect())
}

fn call<'r, C: Cells + ?Sized>(f: F, args: &'r [CExpr], row: &'r C) -> V<'r> {
    let arg = |i: usize| args.get(i).map_or_else(null, |a| a.eval(row));
    let text = |i: usize| to_text(&arg(i)).into_owned();
    owned(match f {
        F::Iff => {
            return if arg(0).as_bool() == Some(true) {
                arg(1)
            } else {
                arg(2)
            };
        }
        F::Case => {
            let mut i = 0;
            while i + 1 < args.len() {
                if arg(i).as_bool() == Some(true) {
                    return arg(i + 1);
                }
                i += 2;
            }
            return args.last().map_or_else(null, |a| a.eval(row));
        }
        F::Coalesce => {
            for a in args {
                let v = a.eval(row);
                if !is_empty(&v) {
                    return v;
                }
            }
            return null();
        }
        F::Bin => bin(&arg(0), &arg(1)),
        F::ToString => Value::String(text(0)),
        F::ToInt | F::ToLong => to_long(&arg(0)),
        F::ToReal => to_real(&arg(0)),
        F::ToDatetime => to_datetime(&arg(0)),
        F::ToTimespan => to_timespan(&arg(0)),
        F::ToBool => to_bool(&arg(0)),
        F::ParseJson => parse_json(&arg(0)),
        F::Strcat => Value::String((0..args.len()).map(text).collect()),
        F::StrcatDelim => {
            Value::String((1..args.len()).map(text).collect::<Vec<_>>().join(&text(0)))
        }
        F::Split => {
            let (s, d) = (text(0), text(1));
            let parts: Vec<serde_json::Value> = if d.is_empty() {
                vec![serde_json::Value::String(s.clone())]
            } else {
                s.split(d.as_str())
                    .map(|p| serde_json::Value::String(p.to_owned()))
                    .collect()
            };
            match args.get(2).map(|a| a.eval(row).as_i64()) {
                Some(Some(i)) => usize::try_from(i)
                    .ok()
                    .and_then(|i| parts.get(i).cloned())
                    .map_or(Value::Dynamic(serde_json::json!([])), |p| {
                        Value::Dynamic(serde_json::Value::Array(vec![p]))
                    }),
                Some(None) => Value::Null,
                None => Value::Dynamic(serde_json::Value::Array(parts)),
            }
        }
        F::ToLower => Value::String(text(0).to_lowercase()),
        F::ToUpper => Value::String(text(0).to_uppercase()),
        F::IsEmpty => Value::Bool(is_empty(&arg(0))),
        F::IsNotEmpty => Value::Bool(!is_empty(&arg(0))),
        F::IsNull => Value::Bool(matches!(
            &*arg(0),
            Value::Null | Value::Dynamic(serde_json::Value::Null)
        )),
        F::IsNotNull => Value::Bool(!matches!(
            &*arg(0),
            Value::Null | Value::Dynamic(serde_json::Value::Null)
        )),
        F::ArrayLength => arr(&arg(0)).map_or(Value::Null, |a| Value::Int(a.len() as i64)),
        F::PackArray => Value::Dynamic(serde_json::Value::Array(
            args.iter().map(|a| to_json(&a.eval(row))).collect(),
        )),
        F::Pack => {
            let mut m = serde_json::Map::new();
            for pair in args.chunks(2) {
                if let [k, v] = pair {
                    m.insert(to_text(&k.eval(row)).into_owned(), to_json(&v.eval(row)));
                }
            }
            Value::Dynamic(serde_json::Value::Object(m))
        }
        F::Not => arg(0).as_bool().map_or(Value::Null, |x| Value::Bool(!x)),
        F::Strlen => Value::Int(text(0).chars().count() as i64),
        F::Substring => substring(
            &text(0),
            &arg(1),
            args.get(2).map(|a| a.eval(row)).as_deref(),
        ),
        F::IndexOf => {
            let (s, n) = (text(0), text(1));
            Value::Int(s.find(&n).map_or(-1, |i| s[..i].chars().count() as i64))
        }
        F::ReplaceString => Value::String(text(0).replace(&text(1), &text(2))),
        F::Trim => {
            let (pat, s) = (text(0), text(1));
            match Regex::new(&format!("^(?:{pat})+|(?:{pat})+$")) {
                Ok(re) => Value::String(re.replace_all(&s, "").into_owned()),
                Err(_) => Value::Null,
            }
        }
        F::StartOfDay => match &*arg(0) {
            Value::DateTime(t) => {
                Value::DateTime(Timestamp(t.0.div_euclid(864_000_000_000) * 864_000_000_000))
            }
            _ => Value::Null,
        },
        F::Dayofweek => match &*arg(0) {
            // 1970-01-01 was a Thursday: day 4 counting from Sunday.
            Value::DateTime(t) => Value::TimeSpan(Duration::from_days(
                (t.0.div_euclid(864_000_000_000) + 4).rem_euclid(7),
            )),
            _ => Value::Null,
        },
        F::Abs => match &*arg(0) {
            Value::Int(i) => Value::Int(i.wrapping_abs()),
            Value::Real(r) => Value::Real(r.abs()),
            Value::TimeSpan(d) => Value::TimeSpan(d.abs()),
            _ => Value::Null,
        },
        F::Round => {
            let p = args
                .get(1)
                .and_then(|a| a.eval(row).as_i64())
                .unwrap_or(0)
                .clamp(-15, 15) as i32;
            match to_real(&arg(0)) {
                Value::Real(r) => Value::Real((r * 10f64.powi(p)).round() / 10f64.powi(p)),
                _ => Value::Null,
            }
        }
        F::Extract => {
            let group = arg(1)
                .as_i64()
                .and_then(|g| usize::try_from(g).ok())
                .unwrap_or(0);
            match Regex::new(&text(0)) {
                Ok(re) => re
                    .captures(&text(2))
                    .and_then(|c| c.get(group))
                    .map_or(Value::String(String::new()), |m| {
                        Value::String(m.as_str().to_owned())
                    }),
                Err(_) => Value::Null,
            }
        }
        F::SetHasElement => {
            let v = arg(1);
            arr(&arg(0)).map_or(Value::Null, |a| {
                Value::Bool(a.iter().any(|j| key_eq(&from_json_scalar(j), &v)))
            })
        }
        F::ArrayIndexOf => {
            let v = arg(1);
            arr(&arg(0)).map_or(Value::Null, |a| {
                Value::Int(
                    a.iter()
                        .position(|j| key_eq(&from_json_scalar(j), &v))
                        .map_or(-1, |i| i as i64),
                )
            })
        }
        F::ArrayConcat => {
            let mut out = Vec::new();
            for a in args {
                if let Some(x) = arr(&a.eval(row)) {
                    out.extend(x.iter().cloned());
                }
            }
            Value::Dynamic(serde_json::Value::Array(out))
        }
        F::BagKeys => match as_json(&arg(0)).as_deref() {
            Some(serde_json::Value::Object(m)) => Value::Dynamic(serde_json::Value::Array(
                m.keys()
                    .map(|k| serde_json::Value::String(k.clone()))
                    .collect(),
            )),
            _ => Value::Null,
        },
        F::DatetimeDiff => {
            let (unit, a, c) = (text(0), arg(1), arg(2));
            match (&*a, &*c) {
                (Value::DateTime(x), Value::DateTime(y)) => {
                    let per = match unit.to_ascii_lowercase().as_str() {
                        "day" => 864_000_000_000,
                        "hour" => 36_000_000_000,
                        "minute" => 600_000_000,
                        "second" => 10_000_000,
                        "millisecond" => 10_000,
                        _ => return null(),
                    };
                    Value::Int(x.0.div_euclid(per) - y.0.div_euclid(per))
                }
                _ => Value::Null,
            }
        }
        F::Hash => Value::Int((values::hash_one(&arg(0)) >> 1) as i64),
        F::Replace | F::ReplaceRegex => {
            // replace(regex, rewrite, text) and replace_regex(text, regex, rewrite); `\1` in the
            // rewrite names a group (https://learn.microsoft.com/en-us/kusto/query/replace-regex-function).
            let (text_i, re_i, rw_i) = if f == F::ReplaceRegex {
                (0, 1, 2)
            } else {
                (2, 0, 1)
            };
            let rewrite = Regex::new(r"\\(\d)").map_or_else(
                |_| text(rw_i),
                |g| g.replace_all(&text(rw_i), "$${$1}").into_owned(),
            );
            match Regex::new(&text(re_i)) {
                Ok(re) => {
                    Value::String(re.replace_all(&text(text_i), rewrite.as_str()).into_owned())
                }
                Err(_) => Value::Null,
            }
        }
        F::ParseUrl => parse_url(&text(0)),
        F::CountOf => {
            let (s, n) = (text(0), text(1));
            let regex_kind = args.len() > 2 && text(2) == "regex";
            if regex_kind {
                Regex::new(&n).map_or(
                    Value::Null,
                    |re| Value::Int(re.find_iter(&s).count() as i64),
                )
            } else if n.is_empty() {
                Value::Int(0)
            } else {
                Value::Int(s.matches(n.as_str()).count() as i64)
            }
        }
        F::DatetimeAdd => match (&*arg(1), &*arg(2)) {
            (amount, Value::DateTime(t)) => amount
                .as_i64()
                .and_then(|n| datetime_add(&text(0), n, *t))
                .map_or(Value::Null, Value::DateTime),
            _ => Value::Null,
        },
        F::Base64Decode => {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD
                .decode(text(0).trim())
                .map_or(Value::Null, |b| {
                    Value::String(String::from_utf8_lossy(&b).into_owned())
                })
        }
        F::ExtractJson => match serde_json::from_str::<serde_json::Value>(&text(1)) {
            Ok(j) => json_path(&j, &text(0)).map_or(Value::Null, |v| {
                Value::String(to_text(&from_json_scalar(v)).into_owned())
            }),
            Err(_) => Value::Null,
        },
    })
}

/// `(matches regex)` pattern compiled once when constant.
pub(crate) fn regex_for(pattern: &CExpr) -> Result<Option<Regex>, String> {
    match pattern {
        CExpr::Const(v) => Regex::new(&to_text(v)).map(Some).map_err(|e| e.to_string()),
        _ => Ok(None),
    }
}

/// `parse_url`: the parts of a URL as a bag
/// (https://learn.microsoft.com/en-us/kusto/query/parse-url-function).
fn parse_url(s: &str) -> Value {
    let Some((scheme, rest)) = s.split_once("://") else {
        return Value::Dynamic(serde_json::json!({}));
    };
    let (rest, fragment) = rest.split_once('#').unwrap_or((rest, ""));
    let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    let (userinfo, hostport) = authority.rsplit_once('@').unwrap_or(("", authority));
    let (user, pass) = userinfo.split_once(':').unwrap_or((userinfo, ""));
    let (host, port) = match hostport.strip_prefix('[') {
        Some(v6) => match v6.split_once(']') {
            Some((h, p)) => (h, p.strip_prefix(':').unwrap_or("")),
            None => (hostport, ""),
        },
        None => match hostport.rsplit_once(':') {
            Some((h, p)) if p.chars().all(|c| c.is_ascii_digit()) => (h, p),
            _ => (hostport, ""),
        },
    };
    let mut params = serde_json::Map::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        params.insert(k.to_owned(), serde_json::Value::String(v.to_owned()));
    }
    Value::Dynamic(serde_json::json!({
        "Scheme": scheme, "Host": host, "Port": port, "Path": path, "Username": user,
        "Password": pass, "Query Parameters": params, "Fragment": fragment,
    }))
}

/// A JSONPath of `$`, `.name`, `['name']` and `[index]` steps.
fn json_path<'j>(j: &'j serde_json::Value, path: &str) -> Option<&'j serde_json::Value> {
    let mut cur = j;
    let mut rest = path.trim().strip_prefix('$')?;
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix('.') {
            let end = r.find(['.', '[']).unwrap_or(r.len());
            cur = cur.get(&r[..end])?;
            rest = &r[end..];
        } else if let Some(r) = rest.strip_prefix('[') {
            let end = r.find(']')?;
            let key = r[..end].trim_matches(|c| c == '\'' || c == '"');
            cur = match key.parse::<usize>() {
                Ok(i) if cur.is_array() => cur.get(i)?,
                _ => cur.get(key)?,
            };
            rest = &r[end + 1..];
        } else {
            return None;
        }
    }
    Some(cur)
}

/// `datetime_add(part, n, t)` (https://learn.microsoft.com/en-us/kusto/query/datetime-add-function).
fn datetime_add(part: &str, n: i64, t: Timestamp) -> Option<Timestamp> {
    let fixed = match part.to_ascii_lowercase().as_str() {
        "week" => Some(Duration::from_days(7)),
        "day" => Some(Duration::from_days(1)),
        "hour" => Some(Duration::from_hours(1)),
        "minute" => Some(Duration::from_minutes(1)),
        "second" => Some(Duration::from_seconds(1)),
        "millisecond" => Some(Duration::from_millis(1)),
        "microsecond" => Some(Duration(10)),
        "nanosecond" => Some(Duration(0)),
        _ => None,
    };
    if let Some(d) = fixed {
        return Some(t + Duration(d.0.checked_mul(n)?));
    }
    let months = match part.to_ascii_lowercase().as_str() {
        "year" => n.checked_mul(12)?,
        "quarter" => n.checked_mul(3)?,
        "month" => n,
        _ => return None,
    };
    let odt = t.to_offset();
    let total = i64::from(odt.year()) * 12 + i64::from(u8::from(odt.month())) - 1 + months;
    let (year, month0) = (
        i32::try_from(total.div_euclid(12)).ok()?,
        total.rem_euclid(12),
    );
    let month = time::Month::try_from(u8::try_from(month0 + 1).ok()?).ok()?;
    let day = odt.day().min(month.length(year));
    let date = time::Date::from_calendar_date(year, month, day).ok()?;
    Some(Timestamp::from_offset(odt.replace_date(date)))
}
