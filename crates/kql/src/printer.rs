//! Prints an AST back to KQL text that parses to the same tree.

use std::fmt::Write;

use culprit_model::{Duration, Timestamp};

use crate::ast::*;
use crate::parser::KEYWORDS;

/// Prints a query: statements separated by `;` and a line break, operators one per line.
pub fn print(q: &Query) -> String {
    let mut out = String::new();
    statements(&mut out, q);
    out
}

/// Prints one tabular expression.
pub fn print_tabular(t: &TabularExpr) -> String {
    let mut out = String::new();
    tabular(&mut out, t);
    out
}

/// Prints one scalar expression.
pub fn print_expr(e: &Expr) -> String {
    let mut out = String::new();
    expr(&mut out, e, 0);
    out
}

fn statements(out: &mut String, q: &Query) {
    for (i, s) in q.statements.iter().enumerate() {
        if i > 0 {
            out.push_str(";\n");
        }
        statement(out, s);
    }
}

fn statement(out: &mut String, s: &Statement) {
    match s {
        Statement::Let { name, value, .. } => {
            let _ = write!(out, "let {} = ", ident(name));
            match value {
                LetValue::Expr(t) => tabular(out, t),
                LetValue::Function { params: ps, body } => {
                    params(out, ps);
                    out.push_str(" {\n");
                    statements(out, body);
                    out.push_str("\n}");
                }
            }
        }
        Statement::Set { name, value, .. } => {
            let _ = write!(out, "set {name}");
            if let Some(v) = value {
                out.push_str(" = ");
                expr(out, v, 0);
            }
        }
        Statement::Declare { params: ps, .. } => {
            out.push_str("declare query_parameters");
            params(out, ps);
        }
        Statement::Tabular(t) => tabular(out, t),
    }
}

fn params(out: &mut String, ps: &[Param]) {
    out.push('(');
    for (i, p) in ps.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        let _ = write!(out, "{}:", ident(&p.name));
        match &p.ty {
            ParamType::Scalar(t) => out.push_str(t),
            ParamType::Tabular { columns, wildcard } => {
                let mut parts: Vec<String> = columns
                    .iter()
                    .map(|(n, t)| format!("{}:{t}", ident(n)))
                    .collect();
                if *wildcard {
                    parts.push("*".into());
                }
                let _ = write!(out, "({})", parts.join(", "));
            }
        }
        if let Some(d) = &p.default {
            out.push_str(" = ");
            expr(out, d, 0);
        }
    }
    out.push(')');
}

fn tabular(out: &mut String, t: &TabularExpr) {
    source(out, &t.source);
    for op in &t.ops {
        out.push_str("\n| ");
        operator(out, op);
    }
}

/// A tabular expression where only a single source is allowed: parenthesised unless bare.
fn tabular_item(out: &mut String, t: &TabularExpr) {
    match (&t.source, t.ops.is_empty()) {
        (Source::Expr(e @ (Expr::Name(_) | Expr::Call { .. })), true) => match e {
            Expr::Name(n) if is_table_pattern(n) => out.push_str(n),
            e => expr(out, e, PREC_POSTFIX),
        },
        _ => {
            out.push('(');
            tabular(out, t);
            out.push(')');
        }
    }
}

fn is_table_pattern(n: &str) -> bool {
    n.contains('*')
        && n.chars()
            .all(|c| c == '*' || c == '_' || c.is_ascii_alphanumeric())
}

fn source(out: &mut String, s: &Source) {
    match s {
        Source::Expr(e) => expr(out, e, 0),
        Source::Union(u) => union(out, u),
        Source::Datatable {
            columns, values, ..
        } => {
            let cols: Vec<String> = columns
                .iter()
                .map(|(n, t)| format!("{}:{t}", ident(n)))
                .collect();
            let _ = write!(out, "datatable({}) [", cols.join(", "));
            expr_list(out, values);
            out.push(']');
        }
        Source::Print { exprs, .. } => {
            out.push_str("print ");
            named_exprs(out, exprs);
        }
        Source::Range {
            name,
            from,
            to,
            step,
            ..
        } => {
            let _ = write!(out, "range {} from ", ident(name));
            expr(out, from, 0);
            out.push_str(" to ");
            expr(out, to, 0);
            out.push_str(" step ");
            expr(out, step, 0);
        }
        Source::Other(raw) => raw_op(out, raw),
    }
}

fn union(out: &mut String, u: &Union) {
    out.push_str("union ");
    for (k, v) in &u.params {
        let _ = write!(out, "{k}={v} ");
    }
    if let Some(w) = &u.withsource {
        let _ = write!(out, "withsource={} ", ident(w));
    }
    for (i, t) in u.tables.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        tabular_item(out, t);
    }
}

fn raw_op(out: &mut String, raw: &RawOp) {
    out.push_str(&raw.name);
    for t in &raw.tokens {
        out.push(' ');
        match t {
            RawToken::Ident(s) | RawToken::Number(s) | RawToken::Punct(s) => out.push_str(s),
            RawToken::Str(s) => out.push_str(&quote_string(s)),
            RawToken::Lit(l) => literal(out, l),
        }
    }
}

fn names(out: &mut String, ns: &[String]) {
    let v: Vec<String> = ns
        .iter()
        .map(|n| if n.contains('*') { n.clone() } else { ident(n) })
        .collect();
    out.push_str(&v.join(", "));
}

fn operator(out: &mut String, op: &Operator) {
    match op {
        Operator::Where { pred, .. } => {
            out.push_str("where ");
            expr(out, pred, 0);
        }
        Operator::Project { exprs, .. } => {
            out.push_str("project ");
            named_exprs(out, exprs);
        }
        Operator::Extend { exprs, .. } => {
            out.push_str("extend ");
            named_exprs(out, exprs);
        }
        Operator::ProjectAway { columns, .. } => {
            out.push_str("project-away ");
            names(out, columns);
        }
        Operator::ProjectKeep { columns, .. } => {
            out.push_str("project-keep ");
            names(out, columns);
        }
        Operator::ProjectRename { renames, .. } => {
            out.push_str("project-rename ");
            let v: Vec<String> = renames
                .iter()
                .map(|(a, b)| format!("{} = {}", ident(a), ident(b)))
                .collect();
            out.push_str(&v.join(", "));
        }
        Operator::ProjectReorder { columns, .. } => {
            out.push_str("project-reorder ");
            let v: Vec<String> = columns
                .iter()
                .map(|(n, d)| {
                    let n = if n.contains('*') { n.clone() } else { ident(n) };
                    match d {
                        Some(true) => format!("{n} asc"),
                        Some(false) => format!("{n} desc"),
                        None => n,
                    }
                })
                .collect();
            out.push_str(&v.join(", "));
        }
        Operator::Summarize {
            hints, aggs, by, ..
        } => {
            out.push_str("summarize");
            for (k, v) in hints {
                let _ = write!(out, " {k}={v}");
            }
            if !aggs.is_empty() {
                out.push(' ');
                named_exprs(out, aggs);
            }
            if !by.is_empty() {
                out.push_str(" by ");
                named_exprs(out, by);
            }
        }
        Operator::Sort { keys, .. } => {
            out.push_str("order by ");
            for (i, k) in keys.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                sort_key(out, k);
            }
        }
        Operator::Top { count, key, .. } => {
            out.push_str("top ");
            expr(out, count, 0);
            out.push_str(" by ");
            sort_key(out, key);
        }
        Operator::Take { count, .. } => {
            out.push_str("take ");
            expr(out, count, 0);
        }
        Operator::Distinct { columns, .. } => {
            out.push_str("distinct ");
            expr_list(out, columns);
        }
        Operator::Count { .. } => out.push_str("count"),
        Operator::Join {
            kind,
            hints,
            right,
            on,
            ..
        } => {
            out.push_str("join ");
            if let Some(k) = kind {
                let _ = write!(out, "kind={} ", k.name());
            }
            for (k, v) in hints {
                let _ = write!(out, "{k}={v} ");
            }
            out.push('(');
            tabular(out, right);
            out.push_str(") on ");
            let v: Vec<String> = on
                .iter()
                .map(|c| match c {
                    JoinOn::Same(n) => ident(n),
                    JoinOn::Pair { left, right } => {
                        format!("$left.{} == $right.{}", ident(left), ident(right))
                    }
                })
                .collect();
            out.push_str(&v.join(", "));
        }
        Operator::Union(u) => union(out, u),
        Operator::MvExpand {
            params,
            items,
            limit,
            legacy,
            ..
        } => {
            out.push_str(if *legacy { "mvexpand" } else { "mv-expand" });
            for (k, v) in params {
                let _ = write!(out, " {k}={v}");
            }
            for (i, it) in items.iter().enumerate() {
                out.push_str(if i > 0 { ", " } else { " " });
                named_expr(
                    out,
                    &NamedExpr {
                        name: it.name.clone(),
                        expr: it.expr.clone(),
                    },
                );
                if let Some(t) = &it.to_type {
                    let _ = write!(out, " to typeof({})", ident(t));
                }
            }
            if let Some(l) = limit {
                out.push_str(" limit ");
                expr(out, l, 0);
            }
        }
        Operator::Serialize { exprs, .. } => {
            out.push_str("serialize");
            if !exprs.is_empty() {
                out.push(' ');
                named_exprs(out, exprs);
            }
        }
        Operator::As { name, .. } => {
            let _ = write!(out, "as {}", ident(name));
        }
        Operator::Other(raw) => raw_op(out, raw),
    }
}

fn sort_key(out: &mut String, k: &SortKey) {
    expr(out, &k.expr, 0);
    out.push_str(if k.asc { " asc" } else { " desc" });
    match k.nulls_first {
        Some(true) => out.push_str(" nulls first"),
        Some(false) => out.push_str(" nulls last"),
        None => {}
    }
}

fn named_exprs(out: &mut String, v: &[NamedExpr]) {
    for (i, n) in v.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        named_expr(out, n);
    }
}

fn named_expr(out: &mut String, n: &NamedExpr) {
    match &n.name {
        Some(name) if name.starts_with('(') => {
            let parts: Vec<String> = name
                .trim_matches(|c| c == '(' || c == ')')
                .split(", ")
                .map(ident)
                .collect();
            let _ = write!(out, "({}) = ", parts.join(", "));
        }
        Some(name) => {
            let _ = write!(out, "{} = ", ident(name));
        }
        None => {}
    }
    expr(out, &n.expr, 0);
}

fn expr_list(out: &mut String, v: &[Expr]) {
    for (i, e) in v.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        item(out, e);
    }
}

/// A list item or function argument: tabular expressions need no extra parentheses there.
fn item(out: &mut String, e: &Expr) {
    match e {
        Expr::Tabular(t) => tabular(out, t),
        e => expr(out, e, 0),
    }
}

const PREC_OR: u8 = 1;
const PREC_AND: u8 = 2;
const PREC_CMP: u8 = 3;
const PREC_ADD: u8 = 4;
const PREC_MUL: u8 = 5;
const PREC_UNARY: u8 = 6;
const PREC_POSTFIX: u8 = 7;

fn prec(e: &Expr) -> u8 {
    match e {
        Expr::Binary { op: BinOp::Or, .. } => PREC_OR,
        Expr::Binary { op: BinOp::And, .. } => PREC_AND,
        Expr::Binary {
            op: BinOp::Add | BinOp::Sub,
            ..
        } => PREC_ADD,
        Expr::Binary {
            op: BinOp::Mul | BinOp::Div | BinOp::Mod,
            ..
        } => PREC_MUL,
        Expr::Binary { .. } | Expr::StrOp { .. } | Expr::In { .. } | Expr::Between { .. } => {
            PREC_CMP
        }
        Expr::Unary { .. } => PREC_UNARY,
        Expr::Lit(Literal::Int(i)) if *i < 0 => PREC_UNARY,
        Expr::Lit(Literal::Real(r)) if r.is_sign_negative() => PREC_UNARY,
        Expr::Lit(Literal::TimeSpan(d)) if d.0 < 0 => PREC_UNARY,
        _ => PREC_POSTFIX,
    }
}

fn expr(out: &mut String, e: &Expr, min: u8) {
    let p = prec(e);
    if p < min {
        out.push('(');
        expr(out, e, 0);
        out.push(')');
        return;
    }
    match e {
        Expr::Lit(l) => literal(out, l),
        Expr::Name(n) => out.push_str(&ident(n)),
        Expr::Star => out.push('*'),
        Expr::Call { name, args, .. } => {
            // A call's name was read bare (even a keyword such as `and` or `in~`, `$`, or a
            // hyphenated operator name such as `parse-kv`); `["and"](...)` would not read back
            // as a call.
            let bare = !name.is_empty()
                && name
                    .chars()
                    .all(|c| !c.is_whitespace() && !"\"'()[]{},;|/".contains(c));
            // `h(` is a call; `datetime(` and the like are literals.
            if bare && (!is_literal_prefix(name) || matches!(name.as_str(), "h" | "H")) {
                let _ = write!(out, "{name}(");
            } else {
                let _ = write!(out, "{}(", ident(name));
            }
            expr_list(out, args);
            out.push(')');
        }
        Expr::Member { target, name } => {
            expr(out, target, PREC_POSTFIX);
            if is_plain_ident(name) {
                let _ = write!(out, ".{name}");
            } else {
                let _ = write!(out, ".[{}]", quote_string(name));
            }
        }
        Expr::Index { target, index } => {
            expr(out, target, PREC_POSTFIX);
            out.push('[');
            expr(out, index, 0);
            out.push(']');
        }
        Expr::Unary { op, expr: inner } => {
            out.push(if *op == UnaryOp::Neg { '-' } else { '+' });
            // `-(5)` keeps a negated literal distinct from a negative literal. A sign of a
            // sign is spaced, not bracketed: brackets would nest deeper than the parser allows
            // for a long chain it read.
            let min = match **inner {
                Expr::Lit(_) => PREC_POSTFIX + 1,
                Expr::Unary { .. } => {
                    out.push(' ');
                    PREC_UNARY
                }
                _ => PREC_UNARY,
            };
            expr(out, inner, min);
        }
        Expr::Binary {
            op, left, right, ..
        } => {
            expr(out, left, p);
            let _ = write!(out, " {} ", op.symbol());
            expr(out, right, p + 1);
        }
        Expr::StrOp {
            op, left, right, ..
        } => {
            expr(out, left, PREC_CMP);
            let _ = write!(out, " {op} ");
            match &**right {
                Expr::List(items) => {
                    out.push('(');
                    expr_list(out, items);
                    out.push(')');
                }
                r => expr(out, r, PREC_ADD),
            }
        }
        Expr::In {
            expr: inner,
            negated,
            case_insensitive,
            list,
            ..
        } => {
            expr(out, inner, PREC_CMP);
            let op = match (negated, case_insensitive) {
                (false, false) => "in",
                (true, false) => "!in",
                (false, true) => "in~",
                (true, true) => "!in~",
            };
            let _ = write!(out, " {op} (");
            expr_list(out, list);
            out.push(')');
        }
        Expr::Between {
            expr: inner,
            negated,
            low,
            high,
            ..
        } => {
            expr(out, inner, PREC_CMP);
            out.push_str(if *negated {
                " !between ("
            } else {
                " between ("
            });
            expr(out, low, PREC_ADD);
            out.push_str(" .. ");
            expr(out, high, PREC_ADD);
            out.push(')');
        }
        Expr::List(items) => {
            out.push('(');
            expr_list(out, items);
            out.push(')');
        }
        Expr::Tabular(t) => {
            out.push('(');
            tabular(out, t);
            out.push(')');
        }
    }
}

fn literal(out: &mut String, l: &Literal) {
    match l {
        Literal::Null => out.push_str("null"),
        Literal::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Literal::Int(i) => {
            let _ = write!(out, "{i}");
        }
        Literal::Real(r) if r.is_finite() => {
            let _ = write!(out, "{r:?}");
        }
        Literal::Real(r) if r.is_nan() => out.push_str("real(nan)"),
        // An infinite literal comes from a number too large for a double (`1e400`); `1e999`
        // reads back as the same literal, where `real(+inf)` would be a typed literal.
        Literal::Real(r) => out.push_str(if *r > 0.0 { "1e999" } else { "-1e999" }),
        Literal::String(s) => out.push_str(&quote_string(s)),
        Literal::DateTime(t) => out.push_str(&format_datetime(*t)),
        Literal::TimeSpan(d) => out.push_str(&format_timespan(*d)),
        Literal::Dynamic(v) => {
            let _ = write!(out, "dynamic({v})");
        }
        Literal::Typed { ty, raw } => {
            let _ = write!(out, "{ty}({raw})");
        }
    }
}

/// `datetime(2023-08-16T04:49:03.0000000Z)`.
pub fn format_datetime(t: Timestamp) -> String {
    format!("datetime({})", t.to_kusto_string())
}

/// A timespan literal in the largest unit that divides it (`1d`, `10m`, `1500ms`, `7tick`).
pub fn format_timespan(d: Duration) -> String {
    const UNITS: &[(i64, &str)] = &[
        (864_000_000_000, "d"),
        (36_000_000_000, "h"),
        (600_000_000, "m"),
        (10_000_000, "s"),
        (10_000, "ms"),
        (1, "tick"),
    ];
    let t = d.0;
    if t == 0 {
        return "0s".to_owned();
    }
    let &(per, unit) = UNITS
        .iter()
        .find(|(per, _)| t % per == 0)
        .unwrap_or(&(1, "tick"));
    format!("{}{unit}", t / per)
}

fn is_plain_ident(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_alphabetic() || c == '_' || c == '$')
        && chars.all(|c| c.is_alphanumeric() || c == '_')
        && !(s.starts_with('$') && s.len() == 1)
}

/// A name as written in a query: bare when it is a plain identifier, else `["..."]`.
pub fn ident(s: &str) -> String {
    if is_plain_ident(s) && !KEYWORDS.contains(&s) && !is_literal_prefix(s) {
        s.to_owned()
    } else {
        format!("[{}]", quote_string(s))
    }
}

/// Names the lexer reads specially (`h"..."`, `datetime(`): they need brackets.
fn is_literal_prefix(s: &str) -> bool {
    matches!(
        s,
        "h" | "H" | "datetime" | "time" | "timespan" | "guid" | "dynamic"
    )
}

/// A KQL string literal for `s`: double quotes, with `\\`, `\"` and control characters escaped.
pub fn quote_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A verbatim KQL string literal `@"..."`: only `"` needs escaping, by doubling it.
/// Line breaks cannot appear in one, so `None` for strings that hold any.
pub fn quote_verbatim(s: &str) -> Option<String> {
    if s.contains(['\n', '\r']) {
        return None;
    }
    Some(format!("@\"{}\"", s.replace('"', "\"\"")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_are_escaped() {
        assert_eq!(quote_string(r#"a"b\c"#), r#""a\"b\\c""#);
        assert_eq!(quote_string("line\nnext\ttab"), r#""line\nnext\ttab""#);
        assert_eq!(quote_verbatim(r#"C:\x "q""#).unwrap(), r#"@"C:\x ""q""""#);
        assert_eq!(quote_verbatim("a\nb"), None);
    }

    #[test]
    fn timespans_use_the_largest_exact_unit() {
        assert_eq!(format_timespan(Duration::from_days(1)), "1d");
        assert_eq!(format_timespan(Duration::from_minutes(90)), "90m");
        assert_eq!(format_timespan(Duration::from_millis(1500)), "1500ms");
        assert_eq!(format_timespan(Duration(-7)), "-7tick");
        assert_eq!(format_timespan(Duration(0)), "0s");
    }

    #[test]
    fn names_that_are_not_identifiers_are_bracketed() {
        assert_eq!(ident("DeviceId"), "DeviceId");
        assert_eq!(ident("my col"), r#"["my col"]"#);
        assert_eq!(ident("by"), r#"["by"]"#);
        assert_eq!(ident("9lives"), r#"["9lives"]"#);
    }

    #[test]
    fn precedence_is_kept_with_parentheses() {
        let q = crate::parse("T | where (a or b) and c | extend x = (1 + 2) * 3, y = 1 - (2 - 3)")
            .unwrap();
        let printed = print(&q);
        assert!(printed.contains("(a or b) and c"), "{printed}");
        assert!(printed.contains("(1 + 2) * 3"), "{printed}");
        assert!(printed.contains("1 - (2 - 3)"), "{printed}");
        assert_eq!(crate::parse(&printed).unwrap(), q);
    }
}
