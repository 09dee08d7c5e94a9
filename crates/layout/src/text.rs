//! A small tokenizer and cursor shared by the register- and shared-layout parsers.
//!
//! Whitespace between tokens is ignored. Every error carries the byte offset of the offending
//! token and says what was expected there; nothing here panics on any input.

use crate::ParseLayoutError;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Tok<'a> {
    Ident(&'a str),
    Number(usize),
    Punct(u8),
    End,
}

#[derive(Clone, Copy, Debug)]
pub(crate) struct Token<'a> {
    pub tok: Tok<'a>,
    pub pos: usize,
}

const PUNCTUATION: &[u8] = b"()[],.=:";

pub(crate) fn lex(text: &str) -> Result<Vec<Token<'_>>, ParseLayoutError> {
    let bytes = text.as_bytes();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let byte = bytes[i];
        if byte.is_ascii_whitespace() {
            i += 1;
        } else if byte.is_ascii_alphabetic() || byte == b'_' {
            let start = i;
            while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
                i += 1;
            }
            // Only ASCII bytes were consumed, so both ends are char boundaries.
            tokens.push(Token {
                tok: Tok::Ident(&text[start..i]),
                pos: start,
            });
        } else if byte.is_ascii_digit() {
            let start = i;
            let mut value: usize = 0;
            let mut overflow = false;
            while i < bytes.len() && bytes[i].is_ascii_digit() {
                let digit = usize::from(bytes[i] - b'0');
                match value.checked_mul(10).and_then(|v| v.checked_add(digit)) {
                    Some(v) => value = v,
                    None => overflow = true,
                }
                i += 1;
            }
            if overflow {
                return Err(ParseLayoutError::new(start, "number too large"));
            }
            tokens.push(Token {
                tok: Tok::Number(value),
                pos: start,
            });
        } else if PUNCTUATION.contains(&byte) {
            tokens.push(Token {
                tok: Tok::Punct(byte),
                pos: i,
            });
            i += 1;
        } else {
            // `i` only ever advances over ASCII bytes, so it is on a char boundary.
            let found = text[i..].chars().next().unwrap_or('?');
            return Err(ParseLayoutError::new(
                i,
                format!("unexpected character {found:?}"),
            ));
        }
    }
    tokens.push(Token {
        tok: Tok::End,
        pos: text.len(),
    });
    Ok(tokens)
}

pub(crate) fn describe(tok: Tok<'_>) -> String {
    match tok {
        Tok::Ident(name) => format!("'{name}'"),
        Tok::Number(n) => format!("number {n}"),
        Tok::Punct(p) => format!("'{}'", char::from(p)),
        Tok::End => "end of input".to_string(),
    }
}

pub(crate) struct Cursor<'a> {
    tokens: Vec<Token<'a>>,
    index: usize,
}

impl<'a> Cursor<'a> {
    pub fn new(text: &'a str) -> Result<Self, ParseLayoutError> {
        Ok(Cursor {
            tokens: lex(text)?,
            index: 0,
        })
    }

    pub fn peek(&self) -> Token<'a> {
        // `lex` always ends the list with `End`, and `next` never moves past it.
        self.tokens
            .get(self.index)
            .or(self.tokens.last())
            .copied()
            .unwrap_or(Token {
                tok: Tok::End,
                pos: 0,
            })
    }

    pub fn next(&mut self) -> Token<'a> {
        let token = self.peek();
        if self.index + 1 < self.tokens.len() {
            self.index += 1;
        }
        token
    }

    pub fn error_here(&self, expected: &str) -> ParseLayoutError {
        let token = self.peek();
        ParseLayoutError::new(
            token.pos,
            format!("expected {expected}, found {}", describe(token.tok)),
        )
    }

    /// Consumes `punct` if it is next.
    pub fn eat(&mut self, punct: u8) -> bool {
        if self.peek().tok == Tok::Punct(punct) {
            self.next();
            true
        } else {
            false
        }
    }

    pub fn expect(&mut self, punct: u8, expected: &str) -> Result<usize, ParseLayoutError> {
        let token = self.peek();
        if token.tok == Tok::Punct(punct) {
            self.next();
            Ok(token.pos)
        } else {
            Err(self.error_here(expected))
        }
    }

    pub fn expect_number(&mut self, expected: &str) -> Result<(usize, usize), ParseLayoutError> {
        let token = self.peek();
        match token.tok {
            Tok::Number(n) => {
                self.next();
                Ok((n, token.pos))
            }
            _ => Err(self.error_here(expected)),
        }
    }

    /// A number that must be at least 1 (a size or a count).
    pub fn expect_size(&mut self, expected: &str) -> Result<usize, ParseLayoutError> {
        let (n, pos) = self.expect_number(expected)?;
        if n == 0 {
            return Err(ParseLayoutError::new(pos, "sizes must be at least 1"));
        }
        Ok(n)
    }

    pub fn expect_ident(&mut self, expected: &str) -> Result<(&'a str, usize), ParseLayoutError> {
        let token = self.peek();
        match token.tok {
            Tok::Ident(name) => {
                self.next();
                Ok((name, token.pos))
            }
            _ => Err(self.error_here(expected)),
        }
    }

    /// Consumes the identifier `keyword` followed by `=`.
    pub fn expect_key(&mut self, keyword: &str) -> Result<(), ParseLayoutError> {
        let token = self.peek();
        if token.tok == Tok::Ident(keyword) {
            self.next();
            self.expect(b'=', &format!("'=' after '{keyword}'"))?;
            Ok(())
        } else {
            Err(self.error_here(&format!("'{keyword}='")))
        }
    }

    /// `size (',' size)*` up to (not including) `close`; empty lists are allowed.
    pub fn size_list(&mut self, close: u8) -> Result<Vec<usize>, ParseLayoutError> {
        let mut sizes = Vec::new();
        if self.peek().tok == Tok::Punct(close) {
            return Ok(sizes);
        }
        loop {
            sizes.push(self.expect_size("a size (a number at least 1)")?);
            if !self.eat(b',') {
                return Ok(sizes);
            }
        }
    }

    pub fn expect_end(&mut self) -> Result<(), ParseLayoutError> {
        if self.peek().tok == Tok::End {
            Ok(())
        } else {
            Err(self.error_here("end of input"))
        }
    }
}
