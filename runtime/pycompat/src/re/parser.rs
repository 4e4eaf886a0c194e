//! The parser (`_parser.py`): parser state, escapes, `_parse_sub`,
//! `_parse` and repeats.

use crate::repr::repr_str;

use super::ast::{At, Cat, Node, RepeatKind, SetItem, Width, leaf_eq, uniq};
use super::group::{parse_class, parse_paren};
use super::tokenizer::{PErr, Tok, Tokenizer, int_sat, re_err};
use super::{
    FLAG_ASCII, FLAG_LOCALE, FLAG_UNICODE, FLAG_VERBOSE, MAX_CHAR, MAX_NESTING, MAX_PARSE_FRAMES,
    MAXGROUPS, MAXREPEAT,
};

// ---------------------------------------------------------------------------
// Parser (`_parser.py`)
// ---------------------------------------------------------------------------

pub(super) struct State {
    pub(super) flags: u32,
    pub(super) groupdict: Vec<(String, usize)>,
    pub(super) groupwidths: Vec<Option<Width>>,
    pub(super) lookbehindgroups: Option<usize>,
    pub(super) grouprefpos: Vec<(usize, usize)>,
    pub(super) frames: usize,
}

impl State {
    pub(super) fn groups(&self) -> usize {
        self.groupwidths.len()
    }

    pub(super) fn group_named(&self, name: &str) -> Option<usize> {
        self.groupdict
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, g)| *g)
    }

    pub(super) fn opengroup(&mut self, name: Option<&str>) -> Result<usize, String> {
        let gid = self.groups();
        self.groupwidths.push(None);
        if self.groups() as u128 > MAXGROUPS {
            return Err("too many groups".into());
        }
        if let Some(name) = name {
            if let Some(ogid) = self.group_named(name) {
                return Err(format!(
                    "redefinition of group name {} as group {gid}; was group {ogid}",
                    repr_str(name)
                ));
            }
            self.groupdict.push((name.to_string(), gid));
        }
        Ok(gid)
    }

    pub(super) fn checkgroup(&self, gid: usize) -> bool {
        gid < self.groups() && self.groupwidths[gid].is_some()
    }

    pub(super) fn checklookbehindgroup(
        &self,
        gid: usize,
        source: &Tokenizer<'_>,
    ) -> Result<(), PErr> {
        if let Some(lb) = self.lookbehindgroups {
            if !self.checkgroup(gid) {
                return Err(source.error("cannot refer to an open group", 0));
            }
            if gid >= lb {
                return Err(source.error(
                    "cannot refer to group defined in the same lookbehind subpattern",
                    0,
                ));
            }
        }
        Ok(())
    }

    pub(super) fn enter(&mut self) -> Result<(), PErr> {
        self.frames += 1;
        if self.frames > MAX_PARSE_FRAMES {
            return Err(PErr::Unsupported(format!(
                "groups nested more than {MAX_NESTING} deep are not supported"
            )));
        }
        Ok(())
    }

    pub(super) fn leave(&mut self) {
        self.frames -= 1;
    }
}

pub(super) struct Parsed {
    pub(super) nodes: Vec<Node>,
    pub(super) flags: u32,
    pub(super) groupwidths: Vec<Option<Width>>,
}

pub(super) fn is_hex(c: char) -> bool {
    c.is_ascii_hexdigit()
}

pub(super) fn is_oct(c: char) -> bool {
    ('0'..='7').contains(&c)
}

pub(super) fn hex_value(s: &str) -> u32 {
    u32::from_str_radix(s, 16).unwrap_or(u32::MAX)
}

pub(super) fn oct_value(s: &str) -> u32 {
    u32::from_str_radix(s, 8).unwrap_or(u32::MAX)
}

pub(super) fn simple_escape(c: char) -> Option<u32> {
    Some(match c {
        'a' => 7,
        'b' => 8,
        'f' => 12,
        'n' => 10,
        'r' => 13,
        't' => 9,
        'v' => 11,
        '\\' => 92,
        _ => return None,
    })
}

pub(super) fn category_escape(c: char) -> Option<Cat> {
    Some(match c {
        'd' => Cat::Digit,
        'D' => Cat::NotDigit,
        's' => Cat::Space,
        'S' => Cat::NotSpace,
        'w' => Cat::Word,
        'W' => Cat::NotWord,
        _ => return None,
    })
}

/// `\x`, `\u`, `\U` and `\N` (shared by `_escape` and `_class_escape`).
/// Returns `None` for other escapes.
pub(super) fn unicode_escape(source: &mut Tokenizer<'_>, esc: char) -> Result<Option<u32>, PErr> {
    let digits = match esc {
        'x' => 2,
        'u' => 4,
        'U' => 8,
        'N' => {
            if !source.matches('{')? {
                return Err(source.error("missing {", 0));
            }
            let start = source.tell();
            let charname = source.getuntil('}', "character name")?;
            return Err(PErr::Unsupported(format!(
                "\\N{{{charname}}} named character escapes are not supported at position {}",
                start.saturating_sub(3)
            )));
        }
        _ => return Ok(None),
    };
    let mut escape = format!("\\{esc}");
    escape.push_str(&source.getwhile(digits, is_hex)?);
    let len = escape.chars().count();
    if len != digits + 2 {
        return Err(source.error(format!("incomplete escape {escape}"), len));
    }
    let value = hex_value(&escape[2..]);
    if value > MAX_CHAR {
        // `chr(c)` raises ValueError, reported as a bad escape.
        return Err(source.error(format!("bad escape {escape}"), len));
    }
    Ok(Some(value))
}

pub(super) enum ClassCode {
    Lit(u32),
    Cat(Cat),
}

/// `_class_escape`.
pub(super) fn class_escape(source: &mut Tokenizer<'_>, esc: char) -> Result<ClassCode, PErr> {
    if let Some(v) = simple_escape(esc) {
        return Ok(ClassCode::Lit(v));
    }
    if let Some(cat) = category_escape(esc) {
        return Ok(ClassCode::Cat(cat));
    }
    if let Some(v) = unicode_escape(source, esc)? {
        return Ok(ClassCode::Lit(v));
    }
    let mut escape = format!("\\{esc}");
    if is_oct(esc) {
        escape.push_str(&source.getwhile(2, is_oct)?);
        let c = oct_value(&escape[1..]);
        let len = escape.chars().count();
        if c > 0o377 {
            return Err(source.error(
                format!("octal escape value {escape} outside of range 0-0o377"),
                len,
            ));
        }
        return Ok(ClassCode::Lit(c));
    }
    if esc.is_ascii_digit() || esc.is_ascii_alphabetic() {
        return Err(source.error(format!("bad escape {escape}"), 2));
    }
    Ok(ClassCode::Lit(esc as u32))
}

/// `_escape`.
#[inline(never)]
pub(super) fn escape(source: &mut Tokenizer<'_>, esc: char, state: &State) -> Result<Node, PErr> {
    match esc {
        'A' => return Ok(Node::At(At::BeginningString)),
        'b' => return Ok(Node::At(At::Boundary)),
        'B' => return Ok(Node::At(At::NonBoundary)),
        'Z' => return Ok(Node::At(At::EndString)),
        _ => {}
    }
    if let Some(cat) = category_escape(esc) {
        return Ok(Node::In(vec![SetItem::Category(cat)]));
    }
    if let Some(v) = simple_escape(esc) {
        return Ok(Node::Literal(v));
    }
    if let Some(v) = unicode_escape(source, esc)? {
        return Ok(Node::Literal(v));
    }
    let mut escape = format!("\\{esc}");
    if esc == '0' {
        escape.push_str(&source.getwhile(2, is_oct)?);
        return Ok(Node::Literal(oct_value(&escape[1..])));
    }
    if esc.is_ascii_digit() {
        if let Some(d) = source.next_char_if(|c| c.is_ascii_digit()) {
            source.advance()?;
            escape.push(d);
            if is_oct(esc)
                && is_oct(d)
                && let Some(d3) = source.next_char_if(is_oct)
            {
                source.advance()?;
                escape.push(d3);
                let c = oct_value(&escape[1..]);
                if c > 0o377 {
                    return Err(source.error(
                        format!("octal escape value {escape} outside of range 0-0o377"),
                        4,
                    ));
                }
                return Ok(Node::Literal(c));
            }
        }
        let len = escape.chars().count();
        let group = int_sat(&escape[1..]) as usize;
        if group < state.groups() {
            if !state.checkgroup(group) {
                return Err(source.error("cannot refer to an open group", len));
            }
            state.checklookbehindgroup(group, source)?;
            return Ok(Node::GroupRef(group));
        }
        return Err(source.error(format!("invalid group reference {group}"), len - 1));
    }
    if esc.is_ascii_alphabetic() {
        return Err(source.error(format!("bad escape {escape}"), 2));
    }
    Ok(Node::Literal(esc as u32))
}

pub(super) fn parse(pattern: &[char]) -> Result<Parsed, PErr> {
    let mut source = Tokenizer::new(pattern)?;
    let mut state = State {
        flags: 0,
        groupdict: Vec::new(),
        groupwidths: vec![None],
        lookbehindgroups: None,
        grouprefpos: Vec::new(),
        frames: 0,
    };
    let nodes = parse_sub(&mut source, &mut state, false, 0)?;
    // fix_flags
    let mut flags = state.flags;
    if flags & FLAG_LOCALE != 0 {
        return Err(PErr::Value(
            "cannot use LOCALE flag with a str pattern".into(),
        ));
    }
    if flags & FLAG_ASCII == 0 {
        flags |= FLAG_UNICODE;
    } else if flags & FLAG_UNICODE != 0 {
        return Err(PErr::Value(
            "ASCII and UNICODE flags are incompatible".into(),
        ));
    }
    if source.next.is_some() {
        return Err(source.error("unbalanced parenthesis", 0));
    }
    for &(g, pos) in &state.grouprefpos {
        if g >= state.groups() {
            return Err(re_err(format!("invalid group reference {g}"), pos));
        }
    }
    Ok(Parsed {
        nodes,
        flags,
        groupwidths: state.groupwidths,
    })
}

/// `_parse_sub`: an alternation.
pub(super) fn parse_sub(
    source: &mut Tokenizer<'_>,
    state: &mut State,
    verbose: bool,
    nested: usize,
) -> Result<Vec<Node>, PErr> {
    state.enter()?;
    let r = parse_sub_inner(source, state, verbose, nested);
    state.leave();
    r
}

pub(super) fn parse_sub_inner(
    source: &mut Tokenizer<'_>,
    state: &mut State,
    mut verbose: bool,
    nested: usize,
) -> Result<Vec<Node>, PErr> {
    let mut items: Vec<Vec<Node>> = Vec::new();
    loop {
        let first = nested == 0 && items.is_empty();
        items.push(parse_seq(source, state, verbose, nested + 1, first)?);
        if !source.matches('|')? {
            break;
        }
        if nested == 0 {
            verbose = state.flags & FLAG_VERBOSE != 0;
        }
    }
    if items.len() == 1 {
        return Ok(items.pop().unwrap_or_default());
    }
    let mut subpattern = Vec::new();
    // Common prefix.
    loop {
        let mut prefix: Option<&Node> = None;
        let mut all = true;
        for item in &items {
            let Some(first) = item.first() else {
                all = false;
                break;
            };
            match prefix {
                None => prefix = Some(first),
                Some(p) if leaf_eq(p, first) => {}
                Some(_) => {
                    all = false;
                    break;
                }
            }
        }
        if !all {
            break;
        }
        let Some(prefix) = prefix.cloned() else {
            break;
        };
        for item in &mut items {
            item.remove(0);
        }
        subpattern.push(prefix);
    }
    // Branch of single characters → character set.
    let mut set = Vec::new();
    let mut all_sets = true;
    for item in &items {
        match item.as_slice() {
            [Node::Literal(c)] => set.push(SetItem::Literal(*c)),
            [Node::In(av)] if av.first() != Some(&SetItem::Negate) => {
                set.extend(av.iter().copied())
            }
            _ => {
                all_sets = false;
                break;
            }
        }
    }
    if all_sets {
        subpattern.push(Node::In(uniq(set)));
        return Ok(subpattern);
    }
    subpattern.push(Node::Branch(items));
    Ok(subpattern)
}

/// `_parse`: a sequence.
pub(super) fn parse_seq(
    source: &mut Tokenizer<'_>,
    state: &mut State,
    verbose: bool,
    nested: usize,
    first: bool,
) -> Result<Vec<Node>, PErr> {
    state.enter()?;
    let r = parse_seq_inner(source, state, verbose, nested, first);
    state.leave();
    r
}

pub(super) fn parse_seq_inner(
    source: &mut Tokenizer<'_>,
    state: &mut State,
    mut verbose: bool,
    nested: usize,
    first: bool,
) -> Result<Vec<Node>, PErr> {
    let mut subpattern: Vec<Node> = Vec::new();
    while let Some(this) = source.next {
        if this.is_one_of("|)") {
            break;
        }
        source.advance()?;

        if verbose {
            if this.is_one_of(" \t\n\r\u{b}\u{c}") {
                continue;
            }
            if this == Tok::C('#') {
                loop {
                    match source.get()? {
                        None | Some(Tok::C('\n')) => break,
                        _ => {}
                    }
                }
                continue;
            }
        }

        let c = match this {
            Tok::E(esc) => {
                subpattern.push(escape(source, esc, state)?);
                continue;
            }
            Tok::C(c) => c,
        };
        match c {
            '[' => subpattern.push(parse_class(source)?),
            '?' | '*' | '+' | '{' => parse_repeat(source, &mut subpattern, c)?,
            '.' => subpattern.push(Node::Any),
            '(' => {
                if let Some(v) =
                    parse_paren(source, state, verbose, nested, first, &mut subpattern)?
                {
                    verbose = v;
                }
            }
            '^' => subpattern.push(Node::At(At::Beginning)),
            '$' => subpattern.push(Node::At(At::End)),
            other => subpattern.push(Node::Literal(other as u32)),
        }
    }
    // Unpack non-capturing groups without flags.
    let mut out = Vec::with_capacity(subpattern.len());
    for node in subpattern {
        match node {
            Node::Sub {
                group: None,
                add: 0,
                del: 0,
                p,
            } => out.extend(p),
            other => out.push(other),
        }
    }
    Ok(out)
}

/// The repeat branch of `_parse` (`?`, `*`, `+`, `{m,n}`), kept out of
/// [`parse_seq_inner`] so the recursion through groups uses small frames.
#[inline(never)]
pub(super) fn parse_repeat(
    source: &mut Tokenizer<'_>,
    subpattern: &mut Vec<Node>,
    c: char,
) -> Result<(), PErr> {
    let here = source.tell();
    let (min, max) = match c {
        '?' => (0, 1),
        '*' => (0, MAXREPEAT),
        '+' => (1, MAXREPEAT),
        _ => {
            if source.next == Some(Tok::C('}')) {
                subpattern.push(Node::Literal('{' as u32));
                return Ok(());
            }
            let (mut min, mut max) = (0u32, MAXREPEAT);
            let mut lo = String::new();
            let mut hi = String::new();
            while let Some(d) = source.next_char_if(|c| c.is_ascii_digit()) {
                source.advance()?;
                lo.push(d);
            }
            if source.matches(',')? {
                while let Some(d) = source.next_char_if(|c| c.is_ascii_digit()) {
                    source.advance()?;
                    hi.push(d);
                }
            } else {
                hi.clone_from(&lo);
            }
            if !source.matches('}')? {
                subpattern.push(Node::Literal('{' as u32));
                source.seek(here)?;
                return Ok(());
            }
            if !lo.is_empty() {
                let v = int_sat(&lo);
                if v >= u128::from(MAXREPEAT) {
                    return Err(PErr::Overflow);
                }
                min = v as u32;
            }
            if !hi.is_empty() {
                let v = int_sat(&hi);
                if v >= u128::from(MAXREPEAT) {
                    return Err(PErr::Overflow);
                }
                max = v as u32;
                if max < min {
                    return Err(
                        source.error("min repeat greater than max repeat", source.tell() - here)
                    );
                }
            }
            (min, max)
        }
    };
    let offset = source.tell() - here + 1;
    let item = match subpattern.last() {
        None | Some(Node::At(_)) => {
            return Err(source.error("nothing to repeat", offset));
        }
        Some(Node::Repeat { .. }) => {
            return Err(source.error("multiple repeat", offset));
        }
        Some(Node::Sub {
            group: None,
            add: 0,
            del: 0,
            p,
        }) => p.clone(),
        Some(last) => vec![last.clone()],
    };
    let kind = if source.matches('?')? {
        RepeatKind::Min
    } else if source.matches('+')? {
        RepeatKind::Possessive
    } else {
        RepeatKind::Max
    };
    subpattern.pop();
    subpattern.push(Node::Repeat {
        kind,
        min,
        max,
        item,
    });
    Ok(())
}
