//! Tokens of KQL text, with 1-based line and column.

use crate::KqlError;

#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Tok {
    Ident(String),
    Str(String),
    /// A number as written, unit suffix included (`5`, `1.5`, `1e3`, `5m`, `0x1f`).
    Number(String),
    /// `datetime(...)`, `time(...)`, `timespan(...)`, `guid(...)`: type and raw text inside.
    Typed(String, String),
    Punct(&'static str),
    Eof,
}

#[derive(Clone, Debug)]
pub(crate) struct Token {
    pub tok: Tok,
    pub line: u32,
    pub column: u32,
}

const PUNCTS: &[&str] = &[
    "..", "==", "!=", "<>", "<=", ">=", "=~", "!~", "=>", "|", "(", ")", "[", "]", "{", "}", ",",
    ";", ".", "=", "<", ">", "+", "-", "*", "/", "%", ":", "?", "~",
];

/// Operator names written with a hyphen.
const HYPHENATED: &[&str] = &[
    "project-away",
    "project-keep",
    "project-rename",
    "project-reorder",
    "project-smart",
    "mv-expand",
    "mv-apply",
    "make-series",
    "make-graph",
    "parse-where",
    "parse-kv",
    "top-nested",
    "top-hitters",
    "sample-distinct",
    "graph-match",
    "graph-merge",
];

/// Names whose `(...)` holds raw literal text rather than an expression.
const TYPED_RAW: &[&str] = &["datetime", "time", "timespan", "guid"];

struct Lexer<'a> {
    src: &'a str,
    chars: Vec<(usize, char)>,
    i: usize,
    line: u32,
    column: u32,
}

pub(crate) fn lex(src: &str) -> Result<Vec<Token>, KqlError> {
    let mut lx = Lexer {
        src,
        chars: src.char_indices().collect(),
        i: 0,
        line: 1,
        column: 1,
    };
    let mut out = Vec::new();
    loop {
        lx.skip_trivia();
        let (line, column) = (lx.line, lx.column);
        let tok = lx.next_token()?;
        let done = tok == Tok::Eof;
        out.push(Token { tok, line, column });
        if done {
            return Ok(out);
        }
    }
}

fn is_ident_start(c: char) -> bool {
    c.is_alphabetic() || c == '_' || c == '$'
}
fn is_ident_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

impl Lexer<'_> {
    fn peek(&self, k: usize) -> Option<char> {
        self.chars.get(self.i + k).map(|&(_, c)| c)
    }
    fn bump(&mut self) -> Option<char> {
        let c = self.peek(0)?;
        self.i += 1;
        if c == '\n' {
            self.line += 1;
            self.column = 1;
        } else {
            self.column += 1;
        }
        Some(c)
    }
    fn offset(&self) -> usize {
        self.chars.get(self.i).map_or(self.src.len(), |&(o, _)| o)
    }
    fn err(&self, message: impl Into<String>) -> KqlError {
        KqlError::Syntax {
            line: self.line,
            column: self.column,
            message: message.into(),
        }
    }
    fn rest_starts_with(&self, s: &str) -> bool {
        self.src[self.offset()..].starts_with(s)
    }

    fn skip_trivia(&mut self) {
        loop {
            match self.peek(0) {
                // Zero-width spaces and byte-order marks come with queries pasted from web pages.
                Some(c)
                    if c.is_whitespace()
                        || matches!(c, '\u{200b}' | '\u{feff}' | '\u{200c}' | '\u{200d}') =>
                {
                    self.bump();
                }
                Some('/') if self.peek(1) == Some('/') => {
                    while let Some(c) = self.peek(0) {
                        if c == '\n' {
                            break;
                        }
                        self.bump();
                    }
                }
                _ => return,
            }
        }
    }

    fn next_token(&mut self) -> Result<Tok, KqlError> {
        let Some(c) = self.peek(0) else {
            return Ok(Tok::Eof);
        };
        if c == '"' || c == '\'' {
            return self.string(c);
        }
        if c == '@' && matches!(self.peek(1), Some('"' | '\'')) {
            self.bump();
            return self.verbatim();
        }
        if self.rest_starts_with("```") {
            return self.multiline();
        }
        // Obfuscated strings (h"...", H@"...") are ordinary strings to the engine.
        if (c == 'h' || c == 'H') && matches!(self.peek(1), Some('"' | '\'')) {
            self.bump();
            let q = self.peek(0).unwrap_or('"');
            return self.string(q);
        }
        if (c == 'h' || c == 'H')
            && self.peek(1) == Some('@')
            && matches!(self.peek(2), Some('"' | '\''))
        {
            self.bump();
            self.bump();
            return self.verbatim();
        }
        if c.is_ascii_digit()
            || (c == '.'
                && self.peek(1).is_some_and(|d| d.is_ascii_digit())
                && self.peek(1) != Some('.'))
        {
            return Ok(self.number());
        }
        if c == '!' && self.peek(1).is_some_and(|d| d.is_alphabetic()) {
            self.bump();
            let Tok::Ident(word) = self.ident() else {
                return Err(self.err("expected a word after '!'"));
            };
            return Ok(Tok::Ident(format!("!{word}")));
        }
        if is_ident_start(c) {
            return self.word();
        }
        for p in PUNCTS {
            if self.rest_starts_with(p) {
                for _ in 0..p.chars().count() {
                    self.bump();
                }
                return Ok(Tok::Punct(p));
            }
        }
        Err(self.err(format!("unexpected character {c:?}")))
    }

    fn ident(&mut self) -> Tok {
        let start = self.offset();
        if self.peek(0) == Some('$') {
            self.bump();
        }
        while self.peek(0).is_some_and(is_ident_char) {
            self.bump();
        }
        let mut word = self.src[start..self.offset()].to_owned();
        if word == "in" && self.peek(0) == Some('~') {
            self.bump();
            word.push('~');
        }
        Tok::Ident(word)
    }

    fn word(&mut self) -> Result<Tok, KqlError> {
        let Tok::Ident(word) = self.ident() else {
            return Err(self.err("expected a name"));
        };
        if self.peek(0) == Some('-') {
            let rest = &self.src[self.offset()..];
            if let Some(h) = HYPHENATED.iter().find(|h| {
                let (Some(head), Some(tail)) = (h.get(..word.len()), h.get(word.len()..)) else {
                    return false;
                };
                head.eq_ignore_ascii_case(&word)
                    && !tail.is_empty()
                    && rest
                        .get(..tail.len())
                        .is_some_and(|r| r.eq_ignore_ascii_case(tail))
                    && !rest
                        .get(tail.len()..)
                        .is_some_and(|r| r.starts_with(is_ident_char))
            }) {
                for _ in word.len()..h.len() {
                    self.bump();
                }
                return Ok(Tok::Ident((*h).to_owned()));
            }
        }
        if TYPED_RAW.contains(&word.as_str()) {
            let save = (self.i, self.line, self.column);
            self.skip_trivia();
            if self.peek(0) == Some('(') {
                self.bump();
                let start = self.offset();
                while let Some(c) = self.peek(0) {
                    if c == ')' {
                        let raw = self.src[start..self.offset()].trim().to_owned();
                        self.bump();
                        return Ok(Tok::Typed(word, raw));
                    }
                    if c == '(' || c == '\n' {
                        break;
                    }
                    self.bump();
                }
                return Err(self.err(format!("unterminated {word}( literal")));
            }
            (self.i, self.line, self.column) = save;
        }
        Ok(Tok::Ident(word))
    }

    fn number(&mut self) -> Tok {
        let start = self.offset();
        if self.rest_starts_with("0x") || self.rest_starts_with("0X") {
            self.bump();
            self.bump();
            while self.peek(0).is_some_and(|c| c.is_ascii_hexdigit()) {
                self.bump();
            }
            return Tok::Number(self.src[start..self.offset()].to_owned());
        }
        while self.peek(0).is_some_and(|c| c.is_ascii_digit()) {
            self.bump();
        }
        if self.peek(0) == Some('.') && self.peek(1) != Some('.') {
            self.bump();
            while self.peek(0).is_some_and(|c| c.is_ascii_digit()) {
                self.bump();
            }
        }
        if matches!(self.peek(0), Some('e' | 'E'))
            && (self.peek(1).is_some_and(|c| c.is_ascii_digit())
                || (matches!(self.peek(1), Some('+' | '-'))
                    && self.peek(2).is_some_and(|c| c.is_ascii_digit())))
        {
            self.bump();
            self.bump();
            while self.peek(0).is_some_and(|c| c.is_ascii_digit()) {
                self.bump();
            }
        }
        // A unit suffix (`5m`, `1tick`) or a type suffix (`10L`).
        while self.peek(0).is_some_and(|c| c.is_ascii_alphabetic()) {
            self.bump();
        }
        Tok::Number(self.src[start..self.offset()].to_owned())
    }

    fn string(&mut self, quote: char) -> Result<Tok, KqlError> {
        let (line, column) = (self.line, self.column);
        self.bump();
        let mut out = String::new();
        loop {
            match self.bump() {
                None | Some('\n') => {
                    return Err(KqlError::Syntax {
                        line,
                        column,
                        message: "unterminated string literal".into(),
                    });
                }
                Some(c) if c == quote => return Ok(Tok::Str(out)),
                Some('\\') => {
                    let e = self.bump().ok_or_else(|| self.err("unterminated escape"))?;
                    match e {
                        'n' => out.push('\n'),
                        't' => out.push('\t'),
                        'r' => out.push('\r'),
                        'b' => out.push('\u{8}'),
                        'f' => out.push('\u{c}'),
                        '0' => out.push('\0'),
                        'u' => out.push(self.unicode_escape()?),
                        '\\' | '"' | '\'' | '/' => out.push(e),
                        other => return Err(self.err(format!("unknown escape \\{other}"))),
                    }
                }
                Some(c) => out.push(c),
            }
        }
    }

    fn unicode_escape(&mut self) -> Result<char, KqlError> {
        let mut code = 0u32;
        for _ in 0..4 {
            let d = self
                .bump()
                .and_then(|c| c.to_digit(16))
                .ok_or_else(|| self.err("bad \\u escape"))?;
            code = code * 16 + d;
        }
        // A surrogate pair, as JSON writes characters beyond the BMP.
        if (0xD800..0xDC00).contains(&code) && self.rest_starts_with("\\u") {
            self.bump();
            self.bump();
            let mut low = 0u32;
            for _ in 0..4 {
                let d = self
                    .bump()
                    .and_then(|c| c.to_digit(16))
                    .ok_or_else(|| self.err("bad \\u escape"))?;
                low = low * 16 + d;
            }
            code = 0x10000 + ((code - 0xD800) << 10) + (low.wrapping_sub(0xDC00) & 0x3FF);
        }
        char::from_u32(code).ok_or_else(|| self.err("invalid \\u escape"))
    }

    fn verbatim(&mut self) -> Result<Tok, KqlError> {
        let (line, column) = (self.line, self.column);
        let quote = self.bump().unwrap_or('"');
        let mut out = String::new();
        loop {
            match self.bump() {
                None | Some('\n') => {
                    return Err(KqlError::Syntax {
                        line,
                        column,
                        message: "unterminated verbatim string literal".into(),
                    });
                }
                Some(c) if c == quote => {
                    if self.peek(0) == Some(quote) {
                        self.bump();
                        out.push(quote);
                    } else {
                        return Ok(Tok::Str(out));
                    }
                }
                Some(c) => out.push(c),
            }
        }
    }

    fn multiline(&mut self) -> Result<Tok, KqlError> {
        let (line, column) = (self.line, self.column);
        for _ in 0..3 {
            self.bump();
        }
        let start = self.offset();
        while self.peek(0).is_some() {
            if self.rest_starts_with("```") {
                let s = self.src[start..self.offset()].to_owned();
                for _ in 0..3 {
                    self.bump();
                }
                return Ok(Tok::Str(s));
            }
            self.bump();
        }
        Err(KqlError::Syntax {
            line,
            column,
            message: "unterminated ``` string literal".into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(s: &str) -> Vec<Tok> {
        lex(s).unwrap().into_iter().map(|t| t.tok).collect()
    }

    #[test]
    fn hyphenated_operators_and_negated_words_are_single_tokens() {
        assert_eq!(toks("project-away a")[0], Tok::Ident("project-away".into()));
        assert_eq!(toks("mv-expand x")[0], Tok::Ident("mv-expand".into()));
        // `a-b` stays a subtraction.
        assert_eq!(toks("project-x").len(), 4);
        assert_eq!(toks("x !has y")[1], Tok::Ident("!has".into()));
        assert_eq!(toks("x in~ (y)")[1], Tok::Ident("in~".into()));
    }

    #[test]
    fn literals_and_comments() {
        assert_eq!(toks("5m // five minutes\n")[0], Tok::Number("5m".into()));
        assert_eq!(toks("1..2")[1], Tok::Punct(".."));
        assert_eq!(toks(r#"@"a""b""#)[0], Tok::Str(r#"a"b"#.into()));
        assert_eq!(toks(r#"h'secret'"#)[0], Tok::Str("secret".into()));
        assert_eq!(
            toks("datetime(2023-01-01 10:00)")[0],
            Tok::Typed("datetime".into(), "2023-01-01 10:00".into())
        );
        assert_eq!(toks("```multi\nline```")[0], Tok::Str("multi\nline".into()));
        let e = lex("x = 'open").unwrap_err();
        assert!(
            matches!(
                e,
                KqlError::Syntax {
                    line: 1,
                    column: 5,
                    ..
                }
            ),
            "{e:?}"
        );
    }
}
