//! `re.error` texts and the tokenizer (`_parser.Tokenizer`), with the
//! small string helpers the parser shares.

use std::fmt::Write as _;

use crate::repr::repr_str;

use super::CompileError;
use super::casefold::in_ranges;
use super::tables::WORD;

// ---------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------

#[derive(Debug)]
pub(super) enum PErr {
    /// `re.error(msg, pattern, pos)`; `pos` is `None` for compiler errors.
    Re { msg: String, pos: Option<usize> },
    /// `OverflowError('the repetition number is too large')`.
    Overflow,
    /// `ValueError(msg)` from `fix_flags`.
    Value(String),
    /// A documented deviation.
    Unsupported(String),
}

impl PErr {
    pub(super) fn into_compile_error(self, pattern: &[char]) -> CompileError {
        match self {
            PErr::Re { msg, pos: None } => CompileError::Invalid(msg),
            PErr::Re {
                msg,
                pos: Some(pos),
            } => CompileError::Invalid(format_position(msg, pattern, pos)),
            PErr::Overflow => CompileError::Exception(
                "OverflowError('the repetition number is too large')".into(),
            ),
            PErr::Value(msg) => CompileError::Exception(format!("ValueError({})", repr_str(&msg))),
            PErr::Unsupported(msg) => CompileError::Unsupported(msg),
        }
    }
}

/// `re.error.__init__`: `msg at position N`, plus `(line L, column C)` when
/// the pattern contains a newline.
pub(super) fn format_position(msg: String, pattern: &[char], pos: usize) -> String {
    let mut out = format!("{msg} at position {pos}");
    if pattern.contains(&'\n') {
        let before = &pattern[..pos.min(pattern.len())];
        let lineno = before.iter().filter(|&&c| c == '\n').count() + 1;
        let colno = match before.iter().rposition(|&c| c == '\n') {
            Some(i) => pos - i,
            None => pos + 1,
        };
        let _ = write!(out, " (line {lineno}, column {colno})");
    }
    out
}

pub(super) fn re_err(msg: impl Into<String>, pos: usize) -> PErr {
    PErr::Re {
        msg: msg.into(),
        pos: Some(pos),
    }
}

// ---------------------------------------------------------------------------
// Tokenizer (`_parser.Tokenizer`)
// ---------------------------------------------------------------------------

/// One token: a character, or a backslash and the character after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Tok {
    C(char),
    E(char),
}

impl Tok {
    pub(super) fn len(self) -> usize {
        match self {
            Tok::C(_) => 1,
            Tok::E(_) => 2,
        }
    }

    pub(super) fn text(self) -> String {
        match self {
            Tok::C(c) => c.to_string(),
            Tok::E(c) => format!("\\{c}"),
        }
    }

    /// `tok in "<chars>"` for a one-character token.
    pub(super) fn is_one_of(self, chars: &str) -> bool {
        matches!(self, Tok::C(c) if chars.contains(c))
    }
}

pub(super) struct Tokenizer<'a> {
    pub(super) s: &'a [char],
    pub(super) index: usize,
    pub(super) next: Option<Tok>,
}

impl<'a> Tokenizer<'a> {
    pub(super) fn new(s: &'a [char]) -> Result<Self, PErr> {
        let mut t = Tokenizer {
            s,
            index: 0,
            next: None,
        };
        t.advance()?;
        Ok(t)
    }

    /// `__next`.
    pub(super) fn advance(&mut self) -> Result<(), PErr> {
        let index = self.index;
        let Some(&ch) = self.s.get(index) else {
            self.next = None;
            return Ok(());
        };
        if ch == '\\' {
            let Some(&esc) = self.s.get(index + 1) else {
                return Err(re_err(
                    "bad escape (end of pattern)",
                    self.s.len().saturating_sub(1),
                ));
            };
            self.next = Some(Tok::E(esc));
            self.index = index + 2;
        } else {
            self.next = Some(Tok::C(ch));
            self.index = index + 1;
        }
        Ok(())
    }

    pub(super) fn matches(&mut self, c: char) -> Result<bool, PErr> {
        if self.next == Some(Tok::C(c)) {
            self.advance()?;
            return Ok(true);
        }
        Ok(false)
    }

    pub(super) fn get(&mut self) -> Result<Option<Tok>, PErr> {
        let this = self.next;
        self.advance()?;
        Ok(this)
    }

    /// The next token if it is a plain character satisfying `pred`.
    pub(super) fn next_char_if(&self, pred: impl Fn(char) -> bool) -> Option<char> {
        match self.next {
            Some(Tok::C(c)) if pred(c) => Some(c),
            _ => None,
        }
    }

    pub(super) fn getwhile(
        &mut self,
        n: usize,
        pred: impl Fn(char) -> bool,
    ) -> Result<String, PErr> {
        let mut result = String::new();
        for _ in 0..n {
            let Some(c) = self.next_char_if(&pred) else {
                break;
            };
            result.push(c);
            self.advance()?;
        }
        Ok(result)
    }

    pub(super) fn getuntil(&mut self, terminator: char, name: &str) -> Result<String, PErr> {
        let mut result = String::new();
        let mut len = 0usize;
        loop {
            let c = self.next;
            self.advance()?;
            match c {
                None => {
                    if result.is_empty() {
                        return Err(self.error(format!("missing {name}"), 0));
                    }
                    return Err(self.error(format!("missing {terminator}, unterminated name"), len));
                }
                Some(Tok::C(t)) if t == terminator => {
                    if result.is_empty() {
                        return Err(self.error(format!("missing {name}"), 1));
                    }
                    break;
                }
                Some(tok) => {
                    result.push_str(&tok.text());
                    len += tok.len();
                }
            }
        }
        Ok(result)
    }

    pub(super) fn tell(&self) -> usize {
        self.index - self.next.map_or(0, Tok::len)
    }

    pub(super) fn seek(&mut self, index: usize) -> Result<(), PErr> {
        self.index = index;
        self.advance()
    }

    pub(super) fn error(&self, msg: impl Into<String>, offset: usize) -> PErr {
        re_err(msg, self.tell().saturating_sub(offset))
    }

    pub(super) fn checkgroupname(&self, name: &str, offset: usize) -> Result<(), PErr> {
        if !is_identifier(name) {
            return Err(self.error(
                format!("bad character in group name {}", repr_str(name)),
                name.chars().count() + offset,
            ));
        }
        Ok(())
    }
}

/// `str.isidentifier()`.
pub(super) fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    match chars.next() {
        Some(c) if c == '_' || unicode_ident::is_xid_start(c) => {}
        _ => return false,
    }
    chars.all(unicode_ident::is_xid_continue)
}

/// `str.isalpha()` for one character (general category L*): see
/// [`in_ranges`] for the word table this leans on.
pub(super) fn is_alpha(c: char) -> bool {
    c.is_alphabetic() && !c.is_numeric() && in_ranges(WORD, c as u32)
}

pub(super) fn is_ascii_decimal(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// `int(s)` for ASCII digits, saturating far above every limit it is
/// compared with.
pub(super) fn int_sat(s: &str) -> u128 {
    s.bytes().fold(0u128, |acc, b| {
        acc.saturating_mul(10)
            .saturating_add(u128::from(b.wrapping_sub(b'0')))
            .min(u128::from(u64::MAX))
    })
}

/// `"%d" % int(s)` for ASCII digits (leading zeros dropped).
pub(super) fn int_text(s: &str) -> String {
    let t = s.trim_start_matches('0');
    if t.is_empty() { "0".into() } else { t.into() }
}
