//! The KQL syntax tree. Positions are carried for error messages but compare equal, so that
//! `parse(print(q)) == q` holds whatever layout the printer chose.

use culprit_model::{Duration, Timestamp};

/// A 1-based line and column in the query text.
#[derive(Clone, Copy, Debug, Default, Eq)]
pub struct Pos {
    pub line: u32,
    pub column: u32,
}

impl PartialEq for Pos {
    /// Positions never make two trees differ: they are layout, not meaning.
    fn eq(&self, _other: &Pos) -> bool {
        true
    }
}

/// A whole query: statements separated by `;`, usually ending with a tabular expression.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Query {
    pub statements: Vec<Statement>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Statement {
    /// `let name = value`
    Let {
        name: String,
        value: LetValue,
        pos: Pos,
    },
    /// `set option [= value]`
    Set {
        name: String,
        value: Option<Expr>,
        pos: Pos,
    },
    /// `declare query_parameters(name:type [= default], ...)`
    Declare { params: Vec<Param>, pos: Pos },
    /// A tabular expression whose result is the query's output.
    Tabular(TabularExpr),
}

#[derive(Clone, Debug, PartialEq)]
pub enum LetValue {
    /// A scalar or tabular expression; which one is decided when it is evaluated.
    Expr(TabularExpr),
    /// A user-defined function `(params) { body }`.
    Function { params: Vec<Param>, body: Query },
}

#[derive(Clone, Debug, PartialEq)]
pub struct Param {
    pub name: String,
    pub ty: ParamType,
    pub default: Option<Expr>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum ParamType {
    /// A scalar type name (`string`, `long`, ...).
    Scalar(String),
    /// A tabular parameter: `(*)` when `columns` is empty, else its declared columns.
    Tabular {
        columns: Vec<(String, String)>,
        wildcard: bool,
    },
}

/// A source followed by piped operators.
#[derive(Clone, Debug, PartialEq)]
pub struct TabularExpr {
    pub source: Source,
    pub ops: Vec<Operator>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Source {
    /// A table, a `let` name, a function call, `materialize(...)`, or a parenthesised pipeline.
    Expr(Expr),
    Union(Union),
    Datatable {
        columns: Vec<(String, String)>,
        values: Vec<Expr>,
        pos: Pos,
    },
    Print {
        exprs: Vec<NamedExpr>,
        pos: Pos,
    },
    Range {
        name: String,
        from: Expr,
        to: Expr,
        step: Expr,
        pos: Pos,
    },
    /// A source the evaluator does not run (`externaldata`, `find`, `search`, ...), kept as tokens.
    Other(RawOp),
}

#[derive(Clone, Debug, PartialEq)]
pub struct Union {
    /// `kind=`, `isfuzzy=` and other `name=value` parameters other than `withsource`.
    pub params: Vec<(String, String)>,
    pub withsource: Option<String>,
    pub tables: Vec<TabularExpr>,
    pub pos: Pos,
}

/// An expression with an optional output name (`Name = expr`).
#[derive(Clone, Debug, PartialEq)]
pub struct NamedExpr {
    pub name: Option<String>,
    pub expr: Expr,
}

#[derive(Clone, Debug, PartialEq)]
pub struct SortKey {
    pub expr: Expr,
    /// `true` for `asc`; Kusto's default is descending.
    pub asc: bool,
    /// `Some(true)` for `nulls first`, `Some(false)` for `nulls last`.
    pub nulls_first: Option<bool>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JoinKind {
    InnerUnique,
    Inner,
    LeftOuter,
    RightOuter,
    FullOuter,
    LeftAnti,
    RightAnti,
    LeftSemi,
    RightSemi,
}

impl JoinKind {
    pub fn name(self) -> &'static str {
        match self {
            JoinKind::InnerUnique => "innerunique",
            JoinKind::Inner => "inner",
            JoinKind::LeftOuter => "leftouter",
            JoinKind::RightOuter => "rightouter",
            JoinKind::FullOuter => "fullouter",
            JoinKind::LeftAnti => "leftanti",
            JoinKind::RightAnti => "rightanti",
            JoinKind::LeftSemi => "leftsemi",
            JoinKind::RightSemi => "rightsemi",
        }
    }
    pub fn from_name(s: &str) -> Option<JoinKind> {
        Some(match s.to_ascii_lowercase().as_str() {
            "innerunique" => JoinKind::InnerUnique,
            "inner" => JoinKind::Inner,
            "leftouter" => JoinKind::LeftOuter,
            "rightouter" => JoinKind::RightOuter,
            "fullouter" | "outer" => JoinKind::FullOuter,
            "leftanti" | "anti" | "leftantisemi" => JoinKind::LeftAnti,
            "rightanti" | "rightantisemi" => JoinKind::RightAnti,
            "leftsemi" | "semi" => JoinKind::LeftSemi,
            "rightsemi" => JoinKind::RightSemi,
            _ => return None,
        })
    }
}

/// One `on` condition: `Col` or `$left.A == $right.B`.
#[derive(Clone, Debug, PartialEq)]
pub enum JoinOn {
    Same(String),
    Pair { left: String, right: String },
}

#[derive(Clone, Debug, PartialEq)]
pub struct MvExpandItem {
    pub name: Option<String>,
    pub expr: Expr,
    /// `to typeof(T)`
    pub to_type: Option<String>,
}

/// A tabular operator after `|`.
#[derive(Clone, Debug, PartialEq)]
pub enum Operator {
    Where {
        pred: Expr,
        pos: Pos,
    },
    Project {
        exprs: Vec<NamedExpr>,
        pos: Pos,
    },
    ProjectAway {
        columns: Vec<String>,
        pos: Pos,
    },
    ProjectKeep {
        columns: Vec<String>,
        pos: Pos,
    },
    ProjectRename {
        renames: Vec<(String, String)>,
        pos: Pos,
    },
    ProjectReorder {
        columns: Vec<(String, Option<bool>)>,
        pos: Pos,
    },
    Extend {
        exprs: Vec<NamedExpr>,
        pos: Pos,
    },
    Summarize {
        hints: Vec<(String, String)>,
        aggs: Vec<NamedExpr>,
        by: Vec<NamedExpr>,
        pos: Pos,
    },
    Sort {
        keys: Vec<SortKey>,
        pos: Pos,
    },
    Top {
        count: Expr,
        key: SortKey,
        pos: Pos,
    },
    Take {
        count: Expr,
        pos: Pos,
    },
    Distinct {
        columns: Vec<Expr>,
        pos: Pos,
    },
    Count {
        pos: Pos,
    },
    Join {
        kind: Option<JoinKind>,
        hints: Vec<(String, String)>,
        right: TabularExpr,
        on: Vec<JoinOn>,
        pos: Pos,
    },
    Union(Union),
    MvExpand {
        params: Vec<(String, String)>,
        items: Vec<MvExpandItem>,
        limit: Option<Expr>,
        legacy: bool,
        pos: Pos,
    },
    /// `serialize [Name = expr, ...]`
    Serialize {
        exprs: Vec<NamedExpr>,
        pos: Pos,
    },
    /// `as [hint=value] Name`
    As {
        name: String,
        pos: Pos,
    },
    /// `render`, `lookup`, `parse`, `make-series`, `evaluate`, ...: accepted, kept as tokens.
    Other(RawOp),
}

/// An operator the parser accepts but keeps as its name and balanced tokens.
#[derive(Clone, Debug, PartialEq)]
pub struct RawOp {
    pub name: String,
    pub tokens: Vec<RawToken>,
    pub pos: Pos,
}

/// A lexical token of a [`RawOp`], enough to print it back.
#[derive(Clone, Debug, PartialEq)]
pub enum RawToken {
    Ident(String),
    Str(String),
    Number(String),
    Punct(String),
    /// A literal with a typed form (`datetime(...)`, `dynamic(...)`, `5m`).
    Lit(Literal),
}

#[derive(Clone, Debug, PartialEq)]
pub enum Literal {
    Null,
    Bool(bool),
    Int(i64),
    Real(f64),
    String(String),
    DateTime(Timestamp),
    TimeSpan(Duration),
    Dynamic(serde_json::Value),
    /// `long(null)`, `datetime(null)`, `real(nan)`: a typed literal with no ordinary value.
    Typed {
        ty: String,
        raw: String,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnaryOp {
    Neg,
    Plus,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinOp {
    Or,
    And,
    Add,
    Sub,
    Mul,
    Div,
    Mod,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    /// `=~`
    EqCi,
    /// `!~`
    NeCi,
}

impl BinOp {
    pub fn symbol(self) -> &'static str {
        match self {
            BinOp::Or => "or",
            BinOp::And => "and",
            BinOp::Add => "+",
            BinOp::Sub => "-",
            BinOp::Mul => "*",
            BinOp::Div => "/",
            BinOp::Mod => "%",
            BinOp::Eq => "==",
            BinOp::Ne => "!=",
            BinOp::Lt => "<",
            BinOp::Le => "<=",
            BinOp::Gt => ">",
            BinOp::Ge => ">=",
            BinOp::EqCi => "=~",
            BinOp::NeCi => "!~",
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum Expr {
    Lit(Literal),
    /// A column, a `let` name, or a table name.
    Name(String),
    /// `*` (as in `count(*)`, `arg_max(T, *)`).
    Star,
    Call {
        name: String,
        args: Vec<Expr>,
        pos: Pos,
    },
    Member {
        target: Box<Expr>,
        name: String,
    },
    Index {
        target: Box<Expr>,
        index: Box<Expr>,
    },
    Unary {
        op: UnaryOp,
        expr: Box<Expr>,
    },
    Binary {
        op: BinOp,
        left: Box<Expr>,
        right: Box<Expr>,
        pos: Pos,
    },
    /// String operators by their KQL name: `has`, `!contains_cs`, `startswith`, `matches regex`,
    /// `has_any`, `has_all`, ... The right side of list operators is [`Expr::List`].
    StrOp {
        op: String,
        left: Box<Expr>,
        right: Box<Expr>,
        pos: Pos,
    },
    /// `in`, `!in`, `in~`, `!in~` with a list (each item an expression or tabular expression).
    In {
        expr: Box<Expr>,
        negated: bool,
        case_insensitive: bool,
        list: Vec<Expr>,
        pos: Pos,
    },
    Between {
        expr: Box<Expr>,
        negated: bool,
        low: Box<Expr>,
        high: Box<Expr>,
        pos: Pos,
    },
    /// A parenthesised list `(a, b, c)` on the right of `has_any` and friends.
    List(Vec<Expr>),
    /// A tabular expression in scalar position (`toscalar(T | ...)`, `in (T | ...)`), printed
    /// in parentheses. Grouping parentheses are not kept: the printer adds those it needs.
    Tabular(Box<TabularExpr>),
}
