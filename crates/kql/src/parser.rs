//! A recursive-descent parser for KQL queries.

use culprit_model::{Duration, Timestamp};

use crate::KqlError;
use crate::ast::*;
use crate::lexer::{Tok, Token, lex};

/// Deeper nesting than this is refused rather than risking the stack.
const MAX_DEPTH: u32 = 150;

/// Operators accepted and kept as tokens; the evaluator reports them as unsupported.
const RAW_OPERATORS: &[&str] = &[
    "render",
    "lookup",
    "parse",
    "parse-where",
    "parse-kv",
    "make-series",
    "evaluate",
    "invoke",
    "mv-apply",
    "top-nested",
    "top-hitters",
    "sample",
    "sample-distinct",
    "getschema",
    "fork",
    "facet",
    "partition",
    "scan",
    "reduce",
    "consume",
    "project-smart",
    "search",
    "find",
    "make-graph",
    "graph-match",
    "graph-merge",
    "externaldata",
    "assert-schema",
];

/// Sources accepted and kept as tokens.
const RAW_SOURCES: &[&str] = &[
    "externaldata",
    "external_table",
    "find",
    "search",
    "evaluate",
    "cluster",
    "database",
];

/// Words that end an expression list or cannot name a column without brackets.
pub(crate) const KEYWORDS: &[&str] = &[
    "and",
    "or",
    "by",
    "on",
    "in",
    "!in",
    "in~",
    "!in~",
    "has",
    "!has",
    "contains",
    "!contains",
    "between",
    "!between",
    "let",
    "asc",
    "desc",
    "nulls",
    "with",
    "to",
    "kind",
    "step",
    "from",
    "startswith",
    "endswith",
    "matches",
    "like",
    "has_any",
    "has_all",
    "true",
    "false",
    "null",
];

pub(crate) fn parse_query(text: &str) -> Result<Query, KqlError> {
    let toks = lex(text)?;
    let mut p = Parser {
        toks,
        i: 0,
        depth: 0,
    };
    let q = p.statements(false)?;
    if !p.at_eof() {
        return Err(p.err_expected("';' or end of query"));
    }
    Ok(q)
}

struct Parser {
    toks: Vec<Token>,
    i: usize,
    depth: u32,
}

type R<T> = Result<T, KqlError>;

fn describe(t: &Tok) -> String {
    match t {
        Tok::Ident(s) => format!("'{s}'"),
        Tok::Str(_) => "a string".into(),
        Tok::Number(n) => format!("'{n}'"),
        Tok::Typed(t, _) => format!("{t}(...)"),
        Tok::Punct(p) => format!("'{p}'"),
        Tok::Eof => "end of query".into(),
    }
}

impl Parser {
    fn tok(&self) -> &Tok {
        self.peek_at(0)
    }
    fn peek_at(&self, k: usize) -> &Tok {
        self.toks
            .get(self.i + k)
            .or(self.toks.last())
            .map_or(&Tok::Eof, |t| &t.tok)
    }
    fn pos(&self) -> Pos {
        self.toks
            .get(self.i)
            .or(self.toks.last())
            .map_or(Pos { line: 1, column: 1 }, |t| Pos {
                line: t.line,
                column: t.column,
            })
    }
    fn at_eof(&self) -> bool {
        *self.tok() == Tok::Eof
    }
    fn advance(&mut self) -> Tok {
        let t = self.tok().clone();
        if self.i < self.toks.len() {
            self.i += 1;
        }
        t
    }
    fn err(&self, message: impl Into<String>) -> KqlError {
        let p = self.pos();
        KqlError::Syntax {
            line: p.line,
            column: p.column,
            message: message.into(),
        }
    }
    fn err_expected(&self, what: &str) -> KqlError {
        self.err(format!("expected {what}, found {}", describe(self.tok())))
    }
    fn is_punct(&self, p: &str) -> bool {
        matches!(self.tok(), Tok::Punct(q) if *q == p)
    }
    fn is_punct_at(&self, k: usize, p: &str) -> bool {
        matches!(self.peek_at(k), Tok::Punct(q) if *q == p)
    }
    fn eat_punct(&mut self, p: &str) -> bool {
        let yes = self.is_punct(p);
        if yes {
            self.advance();
        }
        yes
    }
    fn expect_punct(&mut self, p: &str) -> R<()> {
        if self.eat_punct(p) {
            Ok(())
        } else {
            Err(self.err_expected(&format!("'{p}'")))
        }
    }
    fn is_word(&self, w: &str) -> bool {
        matches!(self.tok(), Tok::Ident(s) if s == w)
    }
    fn is_word_at(&self, k: usize, w: &str) -> bool {
        matches!(self.peek_at(k), Tok::Ident(s) if s == w)
    }
    fn eat_word(&mut self, w: &str) -> bool {
        let yes = self.is_word(w);
        if yes {
            self.advance();
        }
        yes
    }
    fn expect_word(&mut self, w: &str) -> R<()> {
        if self.eat_word(w) {
            Ok(())
        } else {
            Err(self.err_expected(&format!("'{w}'")))
        }
    }

    fn enter(&mut self) -> R<()> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.err("query nested too deeply"));
        }
        Ok(())
    }
    fn leave(&mut self) {
        self.depth = self.depth.saturating_sub(1);
    }

    /// Counts one more link of a left-deep chain (`a + b + c`, `a.b.c`) against the nesting
    /// limit: such chains become nested trees.
    fn link(&mut self, links: &mut u32) -> R<()> {
        *links += 1;
        self.enter()
    }

    fn unlink(&mut self, links: u32) {
        self.depth = self.depth.saturating_sub(links);
    }

    /// A name: an identifier or a bracketed `['name']`.
    fn name(&mut self) -> R<String> {
        match self.tok().clone() {
            Tok::Ident(s) if !s.starts_with('!') => {
                self.advance();
                Ok(s)
            }
            Tok::Punct("[")
                if matches!(self.peek_at(1), Tok::Str(_)) && self.is_punct_at(2, "]") =>
            {
                self.advance();
                let Tok::Str(s) = self.advance() else {
                    return Err(self.err_expected("a name"));
                };
                self.advance();
                Ok(s)
            }
            _ => Err(self.err_expected("a name")),
        }
    }

    /// A column name that may hold `*` wildcards (`project-away Initiating*`).
    fn name_pattern(&mut self) -> R<String> {
        let mut out = String::new();
        loop {
            if self.eat_punct("*") {
                out.push('*');
            } else if matches!(self.tok(), Tok::Ident(_)) || self.is_punct("[") {
                if out.ends_with(|c: char| c != '*') {
                    break;
                }
                out.push_str(&self.name()?);
            } else {
                break;
            }
        }
        if out.is_empty() {
            Err(self.err_expected("a column name"))
        } else {
            Ok(out)
        }
    }

    // ---- statements ----

    fn statements(&mut self, in_braces: bool) -> R<Query> {
        let mut statements = Vec::new();
        loop {
            while self.eat_punct(";") {}
            if self.at_eof() || (in_braces && self.is_punct("}")) {
                break;
            }
            statements.push(self.statement()?);
            // Collections often separate queries by blank lines instead of `;`: a statement that
            // ends where a new line starts another is taken as separate.
            if !self.eat_punct(";") && !self.starts_new_line() {
                break;
            }
        }
        Ok(Query { statements })
    }

    fn statement(&mut self) -> R<Statement> {
        let pos = self.pos();
        if self.is_word("let") && !self.is_punct_at(1, "(") {
            self.advance();
            let name = self.name()?;
            self.expect_punct("=")?;
            let value = self.let_value()?;
            return Ok(Statement::Let { name, value, pos });
        }
        if self.is_word("set") && matches!(self.peek_at(1), Tok::Ident(_)) {
            self.advance();
            let mut name = self.name()?;
            while self.eat_punct(".") {
                name.push('.');
                name.push_str(&self.name()?);
            }
            let value = if self.eat_punct("=") {
                Some(self.expr()?)
            } else {
                None
            };
            return Ok(Statement::Set { name, value, pos });
        }
        if self.is_word("declare") && self.is_word_at(1, "query_parameters") {
            self.advance();
            self.advance();
            self.expect_punct("(")?;
            let params = self.params()?;
            return Ok(Statement::Declare { params, pos });
        }
        Ok(Statement::Tabular(self.tabular()?))
    }

    fn starts_new_line(&self) -> bool {
        let (Some(prev), Some(cur)) = (
            self.i.checked_sub(1).and_then(|p| self.toks.get(p)),
            self.toks.get(self.i),
        ) else {
            return false;
        };
        cur.line > prev.line && matches!(cur.tok, Tok::Ident(_) | Tok::Punct("("))
    }

    fn let_value(&mut self) -> R<LetValue> {
        self.eat_word("view");
        if self.is_punct("(") && self.looks_like_params() {
            self.advance();
            let params = self.params()?;
            self.expect_punct("{")?;
            self.enter()?;
            let body = self.statements(true)?;
            self.leave();
            self.expect_punct("}")?;
            return Ok(LetValue::Function { params, body });
        }
        Ok(LetValue::Expr(self.tabular()?))
    }

    fn looks_like_params(&self) -> bool {
        (self.is_punct_at(1, ")") && self.is_punct_at(2, "{"))
            || (matches!(self.peek_at(1), Tok::Ident(_)) && self.is_punct_at(2, ":"))
    }

    /// Parameters after `(`, through the closing `)`.
    fn params(&mut self) -> R<Vec<Param>> {
        let mut params = Vec::new();
        while !self.eat_punct(")") {
            if !params.is_empty() {
                self.expect_punct(",")?;
            }
            let name = self.name()?;
            self.expect_punct(":")?;
            let ty = if self.eat_punct("(") {
                let mut columns = Vec::new();
                let mut wildcard = false;
                while !self.eat_punct(")") {
                    if !columns.is_empty() || wildcard {
                        self.expect_punct(",")?;
                    }
                    if self.eat_punct("*") {
                        wildcard = true;
                        continue;
                    }
                    columns.push(self.column_decl()?);
                }
                ParamType::Tabular { columns, wildcard }
            } else {
                ParamType::Scalar(self.name()?)
            };
            let default = if self.eat_punct("=") {
                Some(self.expr()?)
            } else {
                None
            };
            params.push(Param { name, ty, default });
        }
        Ok(params)
    }

    fn column_decl(&mut self) -> R<(String, String)> {
        let name = self.name()?;
        self.expect_punct(":")?;
        Ok((name, self.name()?))
    }

    // ---- tabular expressions ----

    fn tabular(&mut self) -> R<TabularExpr> {
        self.enter()?;
        let source = self.source()?;
        let mut ops = Vec::new();
        while self.eat_punct("|") {
            ops.push(self.operator()?);
        }
        self.leave();
        Ok(TabularExpr { source, ops })
    }

    fn source(&mut self) -> R<Source> {
        let pos = self.pos();
        let Tok::Ident(word) = self.tok().clone() else {
            return Ok(Source::Expr(self.expr()?));
        };
        match word.as_str() {
            "union" if !self.is_punct_at(1, "(") || self.union_paren_is_table() => {
                self.advance();
                Ok(Source::Union(self.union_body(pos)?))
            }
            "datatable" => {
                self.advance();
                self.datatable(pos)
            }
            "print" => {
                self.advance();
                Ok(Source::Print {
                    exprs: self.named_exprs()?,
                    pos,
                })
            }
            "range" if matches!(self.peek_at(1), Tok::Ident(_)) && self.is_word_at(2, "from") => {
                self.advance();
                let name = self.name()?;
                self.expect_word("from")?;
                let from = self.expr()?;
                self.expect_word("to")?;
                let to = self.expr()?;
                self.expect_word("step")?;
                let step = self.expr()?;
                Ok(Source::Range {
                    name,
                    from,
                    to,
                    step,
                    pos,
                })
            }
            w if RAW_SOURCES.contains(&w) && !self.is_punct_at(1, ".") => {
                self.advance();
                Ok(Source::Other(RawOp {
                    name: word,
                    tokens: self.raw_tokens()?,
                    pos,
                }))
            }
            _ => Ok(Source::Expr(self.expr()?)),
        }
    }

    /// `union (T | ...)` is a union of one table; `union(...)` is never a function call.
    fn union_paren_is_table(&self) -> bool {
        true
    }

    fn union_body(&mut self, pos: Pos) -> R<Union> {
        let mut params = Vec::new();
        let mut withsource = None;
        while let Tok::Ident(w) = self.tok().clone() {
            if !(self.is_punct_at(1, "=") || w == "hint" && self.is_punct_at(1, ".")) {
                break;
            }
            let key = self.dotted_name()?;
            self.expect_punct("=")?;
            if key.eq_ignore_ascii_case("withsource") || key.eq_ignore_ascii_case("source") {
                withsource = Some(self.name()?);
            } else {
                params.push((key, self.param_value()?));
            }
        }
        let mut tables = vec![self.union_item()?];
        while self.eat_punct(",") {
            tables.push(self.union_item()?);
        }
        Ok(Union {
            params,
            withsource,
            tables,
            pos,
        })
    }

    fn dotted_name(&mut self) -> R<String> {
        let mut key = self.name()?;
        while self.eat_punct(".") {
            key.push('.');
            key.push_str(&self.name()?);
        }
        Ok(key)
    }

    /// The value of a `name=value` operator parameter, kept as text.
    fn param_value(&mut self) -> R<String> {
        match self.advance() {
            Tok::Ident(s) | Tok::Number(s) => Ok(s),
            Tok::Str(s) => Ok(crate::printer::quote_string(&s)),
            t => Err(self.err(format!(
                "expected a parameter value, found {}",
                describe(&t)
            ))),
        }
    }

    fn union_item(&mut self) -> R<TabularExpr> {
        if self.is_punct("(") {
            return self.paren_tabular();
        }
        let pos = self.pos();
        let is_call = matches!(self.tok(), Tok::Ident(_)) && self.is_punct_at(1, "(");
        let expr = if is_call {
            self.postfix()?
        } else {
            Expr::Name(self.name_pattern()?)
        };
        let _ = pos;
        Ok(TabularExpr {
            source: Source::Expr(expr),
            ops: Vec::new(),
        })
    }

    /// `( tabular )`; a parenthesised bare source is the source itself.
    fn paren_tabular(&mut self) -> R<TabularExpr> {
        self.expect_punct("(")?;
        let t = self.tabular()?;
        self.expect_punct(")")?;
        Ok(match t {
            TabularExpr {
                source: Source::Expr(Expr::Tabular(inner)),
                ops,
            } if ops.is_empty() => *inner,
            t => t,
        })
    }

    fn datatable(&mut self, pos: Pos) -> R<Source> {
        self.expect_punct("(")?;
        let mut columns = Vec::new();
        while !self.eat_punct(")") {
            if !columns.is_empty() {
                self.expect_punct(",")?;
            }
            columns.push(self.column_decl()?);
        }
        self.expect_punct("[")?;
        let mut values = Vec::new();
        while !self.eat_punct("]") {
            if !values.is_empty() {
                self.expect_punct(",")?;
                if self.eat_punct("]") {
                    break;
                }
            }
            values.push(self.expr()?);
        }
        Ok(Source::Datatable {
            columns,
            values,
            pos,
        })
    }

    /// Tokens up to the next `|` or `;` outside brackets, or an unmatched closing bracket.
    fn raw_tokens(&mut self) -> R<Vec<RawToken>> {
        let mut out = Vec::new();
        let mut stack: Vec<&'static str> = Vec::new();
        loop {
            let t = self.tok().clone();
            match &t {
                Tok::Eof => break,
                Tok::Punct("|" | ";") if stack.is_empty() => break,
                Tok::Punct(p @ (")" | "]" | "}")) => {
                    let Some(open) = stack.pop() else { break };
                    let want = match open {
                        "(" => ")",
                        "[" => "]",
                        _ => "}",
                    };
                    if *p != want {
                        return Err(self.err_expected(&format!("'{want}'")));
                    }
                }
                Tok::Punct(p @ ("(" | "[" | "{")) => {
                    stack.push(p);
                    if stack.len() as u32 > MAX_DEPTH {
                        return Err(self.err("query nested too deeply"));
                    }
                }
                _ => {}
            }
            out.push(self.raw_token(t)?);
            self.advance();
        }
        if let Some(open) = stack.last() {
            return Err(self.err(format!("unclosed '{open}'")));
        }
        Ok(out)
    }

    fn raw_token(&self, t: Tok) -> R<RawToken> {
        Ok(match t {
            Tok::Ident(s) => RawToken::Ident(s),
            Tok::Str(s) => RawToken::Str(s),
            Tok::Number(n) => RawToken::Number(n),
            Tok::Punct(p) => RawToken::Punct(p.to_owned()),
            Tok::Typed(ty, raw) => RawToken::Lit(self.typed_literal(&ty, &raw)?),
            Tok::Eof => return Err(self.err_expected("a token")),
        })
    }

    // ---- operators ----

    fn operator(&mut self) -> R<Operator> {
        let pos = self.pos();
        let Tok::Ident(word) = self.tok().clone() else {
            return Err(self.err_expected("an operator name"));
        };
        self.advance();
        Ok(match word.as_str() {
            "where" | "filter" => Operator::Where {
                pred: self.expr()?,
                pos,
            },
            "project" => Operator::Project {
                exprs: self.named_exprs()?,
                pos,
            },
            "extend" => Operator::Extend {
                exprs: self.named_exprs()?,
                pos,
            },
            "project-away" => Operator::ProjectAway {
                columns: self.pattern_list()?,
                pos,
            },
            "project-keep" => Operator::ProjectKeep {
                columns: self.pattern_list()?,
                pos,
            },
            "project-rename" => Operator::ProjectRename {
                renames: self.renames()?,
                pos,
            },
            "project-reorder" => Operator::ProjectReorder {
                columns: self.reorder_list()?,
                pos,
            },
            "summarize" => self.summarize(pos)?,
            "order" | "sort" => {
                self.expect_word("by")?;
                Operator::Sort {
                    keys: self.sort_keys()?,
                    pos,
                }
            }
            "top" => {
                let count = self.expr()?;
                self.expect_word("by")?;
                Operator::Top {
                    count,
                    key: self.sort_key()?,
                    pos,
                }
            }
            "take" | "limit" => Operator::Take {
                count: self.expr()?,
                pos,
            },
            "distinct" => Operator::Distinct {
                columns: self.distinct_list()?,
                pos,
            },
            "count" => Operator::Count { pos },
            "join" => self.join(pos)?,
            "union" => Operator::Union(self.union_body(pos)?),
            "mv-expand" | "mvexpand" => self.mv_expand(word == "mvexpand", pos)?,
            "serialize" => Operator::Serialize {
                exprs: self.named_exprs_opt()?,
                pos,
            },
            "as" => {
                while self.is_word("hint") && self.is_punct_at(1, ".") {
                    self.dotted_name()?;
                    self.expect_punct("=")?;
                    self.param_value()?;
                }
                Operator::As {
                    name: self.name()?,
                    pos,
                }
            }
            w if RAW_OPERATORS.contains(&w) => Operator::Other(RawOp {
                name: word,
                tokens: self.raw_tokens()?,
                pos,
            }),
            _ => {
                return Err(KqlError::Syntax {
                    line: pos.line,
                    column: pos.column,
                    message: format!("unknown operator '{word}'"),
                });
            }
        })
    }

    fn pattern_list(&mut self) -> R<Vec<String>> {
        let mut v = vec![self.name_pattern()?];
        while self.eat_punct(",") {
            v.push(self.name_pattern()?);
        }
        Ok(v)
    }

    fn renames(&mut self) -> R<Vec<(String, String)>> {
        let mut v = Vec::new();
        loop {
            let new = self.name()?;
            self.expect_punct("=")?;
            v.push((new, self.name()?));
            if !self.eat_punct(",") {
                return Ok(v);
            }
        }
    }

    fn reorder_list(&mut self) -> R<Vec<(String, Option<bool>)>> {
        let mut v = Vec::new();
        loop {
            let name = self.name_pattern()?;
            let dir = if self.eat_word("asc") {
                Some(true)
            } else if self.eat_word("desc") {
                Some(false)
            } else {
                None
            };
            v.push((name, dir));
            if !self.eat_punct(",") {
                return Ok(v);
            }
        }
    }

    fn hints(&mut self) -> R<Vec<(String, String)>> {
        let mut hints = Vec::new();
        while self.is_word("hint") && self.is_punct_at(1, ".") {
            let key = self.dotted_name()?;
            self.expect_punct("=")?;
            hints.push((key, self.param_value()?));
        }
        Ok(hints)
    }

    fn summarize(&mut self, pos: Pos) -> R<Operator> {
        let hints = self.hints()?;
        let aggs = if self.is_word("by") {
            Vec::new()
        } else {
            self.named_exprs_opt()?
        };
        let by = if self.eat_word("by") {
            self.named_exprs()?
        } else {
            Vec::new()
        };
        Ok(Operator::Summarize {
            hints,
            aggs,
            by,
            pos,
        })
    }

    fn sort_keys(&mut self) -> R<Vec<SortKey>> {
        let mut keys = vec![self.sort_key()?];
        while self.eat_punct(",") {
            keys.push(self.sort_key()?);
        }
        Ok(keys)
    }

    fn sort_key(&mut self) -> R<SortKey> {
        let expr = self.expr()?;
        let asc = if self.eat_word("asc") {
            true
        } else {
            self.eat_word("desc");
            false
        };
        let nulls_first = if self.eat_word("nulls") {
            if self.eat_word("first") {
                Some(true)
            } else {
                self.expect_word("last")?;
                Some(false)
            }
        } else {
            None
        };
        Ok(SortKey {
            expr,
            asc,
            nulls_first,
        })
    }

    fn distinct_list(&mut self) -> R<Vec<Expr>> {
        if self.eat_punct("*") {
            return Ok(vec![Expr::Star]);
        }
        let mut v = vec![self.expr()?];
        while self.eat_punct(",") {
            v.push(self.expr()?);
        }
        Ok(v)
    }

    fn join(&mut self, pos: Pos) -> R<Operator> {
        let mut kind = None;
        let mut hints = Vec::new();
        while let Tok::Ident(w) = self.tok().clone() {
            if w == "kind" && self.is_punct_at(1, "=") {
                self.advance();
                self.advance();
                let k = self.name()?;
                kind = Some(
                    JoinKind::from_name(&k)
                        .ok_or_else(|| self.err(format!("unknown join kind '{k}'")))?,
                );
            } else if (w == "hint" && self.is_punct_at(1, "."))
                || (self.is_punct_at(1, "=") && w.contains("hint"))
            {
                let key = self.dotted_name()?;
                self.expect_punct("=")?;
                hints.push((key, self.param_value()?));
            } else {
                break;
            }
        }
        let right = if self.is_punct("(") {
            self.paren_tabular()?
        } else {
            TabularExpr {
                source: Source::Expr(self.postfix()?),
                ops: Vec::new(),
            }
        };
        self.expect_word("on")?;
        let mut on = Vec::new();
        loop {
            on.push(self.join_on()?);
            if !(self.eat_punct(",") || self.eat_word("and")) {
                break;
            }
        }
        Ok(Operator::Join {
            kind,
            hints,
            right,
            on,
            pos,
        })
    }

    fn join_on(&mut self) -> R<JoinOn> {
        if self.is_word("$left") || self.is_word("$right") {
            let (a_side, a) = self.side_column()?;
            self.expect_punct("==")?;
            let (_, b) = self.side_column()?;
            return Ok(if a_side == "$left" {
                JoinOn::Pair { left: a, right: b }
            } else {
                JoinOn::Pair { left: b, right: a }
            });
        }
        Ok(JoinOn::Same(self.name()?))
    }

    fn side_column(&mut self) -> R<(String, String)> {
        let side = self.name()?;
        if side != "$left" && side != "$right" {
            return Err(self.err("expected $left or $right"));
        }
        self.expect_punct(".")?;
        Ok((side, self.name()?))
    }

    fn mv_expand(&mut self, legacy: bool, pos: Pos) -> R<Operator> {
        let mut params = Vec::new();
        while let Tok::Ident(w) = self.tok().clone() {
            if !self.is_punct_at(1, "=")
                || !matches!(w.as_str(), "bagexpansion" | "with_itemindex" | "kind")
                    && !w.starts_with("hint")
            {
                break;
            }
            let key = self.dotted_name()?;
            self.expect_punct("=")?;
            params.push((key, self.param_value()?));
        }
        let mut items = Vec::new();
        loop {
            let NamedExpr { name, expr } = self.named_expr()?;
            let to_type = if self.eat_word("to") {
                self.expect_word("typeof")?;
                self.expect_punct("(")?;
                let t = self.name()?;
                self.expect_punct(")")?;
                Some(t)
            } else {
                None
            };
            items.push(MvExpandItem {
                name,
                expr,
                to_type,
            });
            if !self.eat_punct(",") {
                break;
            }
        }
        let limit = if self.eat_word("limit") {
            Some(self.expr()?)
        } else {
            None
        };
        Ok(Operator::MvExpand {
            params,
            items,
            limit,
            legacy,
            pos,
        })
    }

    fn named_exprs_opt(&mut self) -> R<Vec<NamedExpr>> {
        if self.at_eof()
            || self.is_punct("|")
            || self.is_punct(";")
            || self.is_punct(")")
            || self.is_word("by")
        {
            return Ok(Vec::new());
        }
        self.named_exprs()
    }

    fn named_exprs(&mut self) -> R<Vec<NamedExpr>> {
        let mut v = vec![self.named_expr()?];
        while self.eat_punct(",") {
            v.push(self.named_expr()?);
        }
        Ok(v)
    }

    /// `(A, B) = expr`: names for the several columns of `arg_max` and friends, kept as the
    /// text `(A, B)`.
    fn tuple_names(&mut self) -> R<Option<String>> {
        if !self.is_punct("(") {
            return Ok(None);
        }
        let mut k = 1;
        loop {
            let name_ok = matches!(self.peek_at(k), Tok::Ident(_));
            if !name_ok {
                return Ok(None);
            }
            k += 1;
            if self.is_punct_at(k, ")") {
                break;
            }
            if !self.is_punct_at(k, ",") {
                return Ok(None);
            }
            k += 1;
        }
        if !self.is_punct_at(k + 1, "=") || self.is_punct_at(k + 2, "=") {
            return Ok(None);
        }
        self.advance();
        let mut names = vec![self.name()?];
        while self.eat_punct(",") {
            names.push(self.name()?);
        }
        self.expect_punct(")")?;
        self.expect_punct("=")?;
        Ok(Some(format!("({})", names.join(", "))))
    }

    fn named_expr(&mut self) -> R<NamedExpr> {
        if let Some(names) = self.tuple_names()? {
            return Ok(NamedExpr {
                name: Some(names),
                expr: self.expr()?,
            });
        }
        let simple = matches!(self.tok(), Tok::Ident(_)) && self.is_punct_at(1, "=");
        let bracketed = self.is_punct("[")
            && matches!(self.peek_at(1), Tok::Str(_))
            && self.is_punct_at(2, "]")
            && self.is_punct_at(3, "=");
        if simple || bracketed {
            let name = self.name()?;
            self.expect_punct("=")?;
            return Ok(NamedExpr {
                name: Some(name),
                expr: self.expr()?,
            });
        }
        Ok(NamedExpr {
            name: None,
            expr: self.expr()?,
        })
    }

    // ---- scalar expressions ----

    pub(crate) fn expr(&mut self) -> R<Expr> {
        self.enter()?;
        let r = self.or_expr();
        self.leave();
        r
    }

    fn or_expr(&mut self) -> R<Expr> {
        let mut left = self.and_expr()?;
        let mut links = 0;
        while self.is_word("or") {
            self.link(&mut links)?;
            let pos = self.pos();
            self.advance();
            let right = self.and_expr()?;
            left = Expr::Binary {
                op: BinOp::Or,
                left: Box::new(left),
                right: Box::new(right),
                pos,
            };
        }
        self.unlink(links);
        Ok(left)
    }

    fn and_expr(&mut self) -> R<Expr> {
        let mut left = self.cmp_expr()?;
        let mut links = 0;
        while self.is_word("and") {
            self.link(&mut links)?;
            let pos = self.pos();
            self.advance();
            let right = self.cmp_expr()?;
            left = Expr::Binary {
                op: BinOp::And,
                left: Box::new(left),
                right: Box::new(right),
                pos,
            };
        }
        self.unlink(links);
        Ok(left)
    }

    fn cmp_expr(&mut self) -> R<Expr> {
        let mut left = self.add_expr()?;
        let mut links = 0;
        let r = loop {
            self.link(&mut links)?;
            let pos = self.pos();
            let op = match self.tok() {
                Tok::Punct("==") => BinOp::Eq,
                Tok::Punct("!=" | "<>") => BinOp::Ne,
                Tok::Punct("<") => BinOp::Lt,
                Tok::Punct("<=") => BinOp::Le,
                Tok::Punct(">") => BinOp::Gt,
                Tok::Punct(">=") => BinOp::Ge,
                Tok::Punct("=~") => BinOp::EqCi,
                Tok::Punct("!~") => BinOp::NeCi,
                Tok::Ident(w) => {
                    let w = w.clone();
                    match self.word_operator(&w, left, pos)? {
                        Ok(e) => {
                            left = e;
                            continue;
                        }
                        Err(l) => break l,
                    }
                }
                _ => break left,
            };
            self.advance();
            let right = self.add_expr()?;
            left = Expr::Binary {
                op,
                left: Box::new(left),
                right: Box::new(right),
                pos,
            };
        };
        self.unlink(links);
        Ok(r)
    }

    /// A word operator (`has`, `in`, `between`, ...) applied to `left`; `Err(left)` when the
    /// word is not one.
    fn word_operator(&mut self, w: &str, left: Expr, pos: Pos) -> R<Result<Expr, Expr>> {
        let left = Box::new(left);
        match w {
            "in" | "!in" | "in~" | "!in~" => {
                self.advance();
                let list = self.list()?;
                Ok(Ok(Expr::In {
                    expr: left,
                    negated: w.starts_with('!'),
                    case_insensitive: w.ends_with('~'),
                    list,
                    pos,
                }))
            }
            "between" | "!between" => {
                self.advance();
                self.expect_punct("(")?;
                let low = self.add_expr()?;
                self.expect_punct("..")?;
                let high = self.add_expr()?;
                self.expect_punct(")")?;
                Ok(Ok(Expr::Between {
                    expr: left,
                    negated: w.starts_with('!'),
                    low: Box::new(low),
                    high: Box::new(high),
                    pos,
                }))
            }
            "matches" | "!matches" if self.is_word_at(1, "regex") => {
                self.advance();
                self.advance();
                let right = self.add_expr()?;
                Ok(Ok(Expr::StrOp {
                    op: format!("{w} regex"),
                    left,
                    right: Box::new(right),
                    pos,
                }))
            }
            _ if is_list_string_op(w) => {
                self.advance();
                let right = if self.is_punct("(") {
                    Expr::List(self.list()?)
                } else {
                    self.add_expr()?
                };
                Ok(Ok(Expr::StrOp {
                    op: w.to_owned(),
                    left,
                    right: Box::new(right),
                    pos,
                }))
            }
            _ if is_string_op(w) => {
                self.advance();
                let right = self.add_expr()?;
                Ok(Ok(Expr::StrOp {
                    op: w.to_owned(),
                    left,
                    right: Box::new(right),
                    pos,
                }))
            }
            _ => Ok(Err(*left)),
        }
    }

    /// `( item, ... )` where each item may be a tabular expression; or one bare expression.
    fn list(&mut self) -> R<Vec<Expr>> {
        if !self.eat_punct("(") {
            return Ok(vec![self.add_expr()?]);
        }
        let mut items = Vec::new();
        while !self.eat_punct(")") {
            if !items.is_empty() {
                self.expect_punct(",")?;
            }
            items.push(self.arg()?);
        }
        Ok(items)
    }

    /// A function argument or list item: an expression, or a tabular expression.
    fn arg(&mut self) -> R<Expr> {
        if self.is_punct("*") && (self.is_punct_at(1, ")") || self.is_punct_at(1, ",")) {
            self.advance();
            return Ok(Expr::Star);
        }
        let t = self.tabular()?;
        Ok(tabular_to_expr(t))
    }

    fn add_expr(&mut self) -> R<Expr> {
        let mut left = self.mul_expr()?;
        let mut links = 0;
        loop {
            self.link(&mut links)?;
            let pos = self.pos();
            let op = match self.tok() {
                Tok::Punct("+") => BinOp::Add,
                Tok::Punct("-") => BinOp::Sub,
                _ => {
                    self.unlink(links);
                    return Ok(left);
                }
            };
            self.advance();
            let right = self.mul_expr()?;
            left = Expr::Binary {
                op,
                left: Box::new(left),
                right: Box::new(right),
                pos,
            };
        }
    }

    fn mul_expr(&mut self) -> R<Expr> {
        let mut left = self.unary()?;
        let mut links = 0;
        loop {
            self.link(&mut links)?;
            let pos = self.pos();
            let op = match self.tok() {
                Tok::Punct("*") => BinOp::Mul,
                Tok::Punct("/") => BinOp::Div,
                Tok::Punct("%") => BinOp::Mod,
                _ => {
                    self.unlink(links);
                    return Ok(left);
                }
            };
            self.advance();
            let right = self.unary()?;
            left = Expr::Binary {
                op,
                left: Box::new(left),
                right: Box::new(right),
                pos,
            };
        }
    }

    fn unary(&mut self) -> R<Expr> {
        self.enter()?;
        let r = self.unary_inner();
        self.leave();
        r
    }

    fn unary_inner(&mut self) -> R<Expr> {
        let op = match self.tok() {
            Tok::Punct("-") => UnaryOp::Neg,
            Tok::Punct("+") => UnaryOp::Plus,
            _ => return self.postfix(),
        };
        self.advance();
        // A sign directly before a number is part of the literal.
        if op == UnaryOp::Neg
            && let Tok::Number(n) = self.tok().clone()
        {
            self.advance();
            let lit = self.number_literal(&n, true)?;
            return self.postfix_ops(Expr::Lit(lit));
        }
        Ok(Expr::Unary {
            op,
            expr: Box::new(self.unary()?),
        })
    }

    fn postfix(&mut self) -> R<Expr> {
        let e = self.primary()?;
        self.postfix_ops(e)
    }

    fn postfix_ops(&mut self, mut e: Expr) -> R<Expr> {
        let mut links = 0;
        loop {
            self.link(&mut links)?;
            if self.is_punct(".") {
                self.advance();
                let name = self.name()?;
                e = Expr::Member {
                    target: Box::new(e),
                    name,
                };
            } else if self.is_punct("[") {
                self.advance();
                let index = self.expr()?;
                self.expect_punct("]")?;
                e = Expr::Index {
                    target: Box::new(e),
                    index: Box::new(index),
                };
            } else {
                self.unlink(links);
                return Ok(e);
            }
        }
    }

    fn primary(&mut self) -> R<Expr> {
        let pos = self.pos();
        match self.tok().clone() {
            Tok::Number(n) => {
                self.advance();
                Ok(Expr::Lit(self.number_literal(&n, false)?))
            }
            Tok::Str(s) => {
                self.advance();
                // Adjacent string literals are one string.
                let mut s = s;
                while let Tok::Str(more) = self.tok().clone() {
                    self.advance();
                    s.push_str(&more);
                }
                Ok(Expr::Lit(Literal::String(s)))
            }
            Tok::Typed(ty, raw) => {
                self.advance();
                Ok(Expr::Lit(self.typed_literal(&ty, &raw)?))
            }
            Tok::Punct("(") => {
                self.advance();
                let t = self.tabular()?;
                self.expect_punct(")")?;
                Ok(tabular_to_expr(t))
            }
            Tok::Punct("[") => Ok(Expr::Name(self.name()?)),
            Tok::Punct("*") => {
                self.advance();
                Ok(Expr::Star)
            }
            Tok::Ident(w) => self.word_primary(w, pos),
            t => Err(self.err(format!("expected an expression, found {}", describe(&t)))),
        }
    }

    fn word_primary(&mut self, w: String, pos: Pos) -> R<Expr> {
        if w.starts_with('!') {
            return Err(self.err(format!("expected an expression, found '{w}'")));
        }
        self.advance();
        if !self.is_punct("(") {
            return Ok(match w.as_str() {
                "true" => Expr::Lit(Literal::Bool(true)),
                "false" => Expr::Lit(Literal::Bool(false)),
                "null" => Expr::Lit(Literal::Null),
                _ => Expr::Name(w),
            });
        }
        match w.as_str() {
            "dynamic" => {
                self.advance();
                let v = self.json_value()?;
                self.expect_punct(")")?;
                return Ok(Expr::Lit(Literal::Dynamic(v)));
            }
            "bool" | "boolean" | "int" | "long" | "real" | "double" | "decimal" => {
                if let Some(lit) = self.scalar_typed(&w)? {
                    return Ok(Expr::Lit(lit));
                }
            }
            _ => {}
        }
        self.advance();
        let mut args = Vec::new();
        while !self.eat_punct(")") {
            if !args.is_empty() {
                self.expect_punct(",")?;
            }
            args.push(self.arg()?);
        }
        Ok(Expr::Call { name: w, args, pos })
    }

    /// `long(null)`, `real(nan)`, `bool(true)`, `int(5)`: literals when the argument is one.
    fn scalar_typed(&mut self, ty: &str) -> R<Option<Literal>> {
        let (inner, close) = (self.peek_at(1).clone(), self.is_punct_at(2, ")"));
        let raw = match (&inner, close) {
            (Tok::Ident(w), true)
                if matches!(w.as_str(), "null" | "nan" | "true" | "false" | "inf") =>
            {
                w.clone()
            }
            (Tok::Punct(s @ ("+" | "-")), false)
                if self.is_word_at(2, "inf") && self.is_punct_at(3, ")") =>
            {
                format!("{s}inf")
            }
            _ => return Ok(None),
        };
        let n = if raw.starts_with(['+', '-']) { 4 } else { 3 };
        for _ in 0..n {
            self.advance();
        }
        Ok(Some(match raw.as_str() {
            "true" => Literal::Bool(true),
            "false" => Literal::Bool(false),
            _ => Literal::Typed {
                ty: ty.to_owned(),
                raw,
            },
        }))
    }

    fn json_value(&mut self) -> R<serde_json::Value> {
        self.enter()?;
        let r = self.json_value_inner();
        self.leave();
        r
    }

    fn json_value_inner(&mut self) -> R<serde_json::Value> {
        use serde_json::Value as J;
        match self.advance() {
            Tok::Punct("[") => {
                let mut items = Vec::new();
                while !self.eat_punct("]") {
                    if !items.is_empty() {
                        self.expect_punct(",")?;
                    }
                    items.push(self.json_value()?);
                }
                Ok(J::Array(items))
            }
            Tok::Punct("{") => {
                let mut map = serde_json::Map::new();
                while !self.eat_punct("}") {
                    if !map.is_empty() {
                        self.expect_punct(",")?;
                    }
                    let key = match self.advance() {
                        Tok::Str(s) | Tok::Ident(s) => s,
                        t => {
                            return Err(self.err(format!("expected a key, found {}", describe(&t))));
                        }
                    };
                    self.expect_punct(":")?;
                    map.insert(key, self.json_value()?);
                }
                Ok(J::Object(map))
            }
            Tok::Str(s) => Ok(J::String(s)),
            Tok::Ident(w) if w == "true" || w == "false" => Ok(J::Bool(w == "true")),
            Tok::Ident(w) if w == "null" => Ok(J::Null),
            Tok::Number(n) => self.json_number(&n, false),
            Tok::Punct("-") => match self.advance() {
                Tok::Number(n) => self.json_number(&n, true),
                t => Err(self.err(format!("expected a number, found {}", describe(&t)))),
            },
            Tok::Typed(ty, raw) => match self.typed_literal(&ty, &raw)? {
                Literal::DateTime(t) => Ok(J::String(t.to_kusto_string())),
                Literal::TimeSpan(d) => Ok(J::String(culprit_model::table::format_timespan(d))),
                _ => Ok(J::String(raw)),
            },
            t => Err(self.err(format!("expected a dynamic value, found {}", describe(&t)))),
        }
    }

    fn json_number(&self, n: &str, neg: bool) -> R<serde_json::Value> {
        match self.number_literal(n, neg)? {
            Literal::Int(i) => Ok(serde_json::Value::from(i)),
            Literal::Real(r) => Ok(serde_json::Number::from_f64(r)
                .map_or(serde_json::Value::Null, serde_json::Value::Number)),
            Literal::TimeSpan(d) => Ok(serde_json::Value::String(
                culprit_model::table::format_timespan(d),
            )),
            _ => Err(self.err("invalid number in dynamic literal")),
        }
    }

    fn number_literal(&self, raw: &str, neg: bool) -> R<Literal> {
        number_literal(raw, neg).ok_or_else(|| self.err(format!("invalid number '{raw}'")))
    }

    fn typed_literal(&self, ty: &str, raw: &str) -> R<Literal> {
        let inner = raw.trim().trim_matches(|c| c == '"' || c == '\'');
        if inner.eq_ignore_ascii_case("null") {
            return Ok(Literal::Typed {
                ty: ty.to_owned(),
                raw: "null".to_owned(),
            });
        }
        match ty {
            "datetime" => parse_datetime_literal(inner)
                .map(Literal::DateTime)
                .map_err(|e| self.err(format!("invalid datetime literal: {e}"))),
            "time" | "timespan" => parse_timespan_literal(inner)
                .map(Literal::TimeSpan)
                .ok_or_else(|| self.err(format!("invalid timespan literal '{inner}'"))),
            _ => Ok(Literal::Typed {
                ty: ty.to_owned(),
                raw: inner.to_owned(),
            }),
        }
    }
}

fn tabular_to_expr(t: TabularExpr) -> Expr {
    match t {
        TabularExpr {
            source: Source::Expr(e),
            ops,
        } if ops.is_empty() => e,
        t => Expr::Tabular(Box::new(t)),
    }
}

pub(crate) fn is_string_op(w: &str) -> bool {
    const OPS: &[&str] = &[
        "has",
        "has_cs",
        "hasprefix",
        "hasprefix_cs",
        "hassuffix",
        "hassuffix_cs",
        "contains",
        "contains_cs",
        "startswith",
        "startswith_cs",
        "endswith",
        "endswith_cs",
        "like",
        "notlike",
        "likecs",
        "notlikecs",
    ];
    let base = w.strip_prefix('!').unwrap_or(w);
    OPS.contains(&base)
}

pub(crate) fn is_list_string_op(w: &str) -> bool {
    matches!(
        w,
        "has_any" | "has_all" | "!has_any" | "has_any_cs" | "has_all_cs"
    )
}

/// Ticks in one unit of a timespan suffix.
fn unit_ticks(unit: &str) -> Option<i64> {
    Some(match unit {
        "d" | "day" | "days" => 864_000_000_000,
        "h" | "hr" | "hrs" | "hour" | "hours" => 36_000_000_000,
        "m" | "min" | "mins" | "minute" | "minutes" => 600_000_000,
        "s" | "sec" | "secs" | "second" | "seconds" => 10_000_000,
        "ms" | "milli" | "millis" | "millisecond" | "milliseconds" => 10_000,
        "microsecond" | "microseconds" => 10,
        "tick" | "ticks" => 1,
        _ => return None,
    })
}

pub(crate) fn number_literal(raw: &str, neg: bool) -> Option<Literal> {
    let sign = if neg { -1 } else { 1 };
    if let Some(hex) = raw.strip_prefix("0x").or_else(|| raw.strip_prefix("0X")) {
        return i64::from_str_radix(hex, 16)
            .ok()
            .map(|v| Literal::Int(sign * v));
    }
    let split = raw
        .find(|c: char| c.is_ascii_alphabetic() && c != 'e' && c != 'E')
        .unwrap_or(raw.len());
    // `1e5` has an exponent, `1m` a unit: a trailing alphabetic run after digits is a unit.
    let (num, unit) = match raw.find(|c: char| c.is_ascii_alphabetic()) {
        Some(i) if raw[i..].chars().all(|c| c.is_ascii_alphabetic()) => (&raw[..i], &raw[i..]),
        _ => (&raw[..split], &raw[split..]),
    };
    if unit.is_empty() {
        if !num.contains(['.', 'e', 'E']) {
            let v: i128 = num.parse().ok()?;
            return i64::try_from(sign as i128 * v).ok().map(Literal::Int);
        }
        return num
            .parse::<f64>()
            .ok()
            .map(|f| Literal::Real(sign as f64 * f));
    }
    if unit == "L" || unit == "l" {
        return num.parse::<i64>().ok().map(|v| Literal::Int(sign * v));
    }
    let per = unit_ticks(unit)?;
    let ticks = match num.parse::<i64>() {
        Ok(v) => v.checked_mul(per)?,
        Err(_) => {
            let f = num.parse::<f64>().ok()? * per as f64;
            if !f.is_finite() || f.abs() > i64::MAX as f64 {
                return None;
            }
            f.round() as i64
        }
    };
    Some(Literal::TimeSpan(Duration(sign * ticks)))
}

/// `time(1.02:00:00)`, `time(5m)`, `timespan(2d)`.
fn parse_timespan_literal(s: &str) -> Option<Duration> {
    if s.contains(':') {
        return crate::values::parse_timespan(s);
    }
    let (neg, body) = match s.strip_prefix('-') {
        Some(b) => (true, b),
        None => (false, s),
    };
    match number_literal(body, neg)? {
        Literal::TimeSpan(d) => Some(d),
        // A bare number in time() counts days.
        Literal::Int(i) => i.checked_mul(864_000_000_000).map(Duration),
        _ => None,
    }
}

/// The forms `datetime(...)` accepts: ISO 8601 (seconds optional) and `MM/DD/YYYY [hh:mm[:ss]]`
/// (https://learn.microsoft.com/en-us/kusto/query/scalar-data-types/datetime).
fn parse_datetime_literal(s: &str) -> Result<Timestamp, String> {
    if !s.is_ascii() {
        return Err(format!("{s:?} is not a date"));
    }
    let first = Timestamp::parse(s).map_err(|e| e.to_string());
    if first.is_ok() {
        return first;
    }
    let (date, time) = s.split_once([' ', 'T']).unwrap_or((s, ""));
    let date = match date.split('/').collect::<Vec<_>>().as_slice() {
        [m, d, y] if y.len() == 4 => format!("{y}-{m:0>2}-{d:0>2}"),
        _ => date.to_owned(),
    };
    let mut time = time.trim_end_matches('Z').to_owned();
    if time.is_empty() {
        time = "00:00:00".to_owned();
    } else if time.matches(':').count() == 1 {
        time.push_str(":00");
    }
    let (h, rest) = time.split_once(':').unwrap_or((&time, ""));
    let retry = format!("{date}T{h:0>2}:{rest}Z");
    Timestamp::parse(&retry)
        .map_err(|e| e.to_string())
        .or(first)
}
