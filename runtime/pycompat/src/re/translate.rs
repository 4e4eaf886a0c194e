//! The emitter: parse tree → `fancy-regex` syntax, exact or as the relaxed
//! prefilter.

use std::fmt::Write as _;

use super::ast::{At, Cat, Node, RepeatKind, contains_group, getwidth, referenced_groups};
use super::casefold::{CharSet, Fold, category_set, class_set};
use super::group::combine_flags;
use super::parser::Parsed;
use super::{FLAG_DOTALL, FLAG_IGNORECASE, FLAG_MULTILINE, MAX_CHAR, MAXREPEAT};

// ---------------------------------------------------------------------------
// Emitter: parse tree → fancy-regex syntax
// ---------------------------------------------------------------------------

pub(super) const SURROGATES: (u32, u32) = (0xD800, 0xDFFF);
pub(super) const NEVER: &str = r"[^\x{0}-\x{10FFFF}]";
pub(super) const ANY_CHAR: &str = "(?s:.)";

pub(super) struct Emitter<'a> {
    pub(super) parsed: &'a Parsed,
    /// Emit the relaxed prefilter instead of the exact pattern.
    pub(super) relaxed: bool,
    /// The exact pattern needs the backtracking VM.
    pub(super) hard: bool,
    /// Capture groups opened so far (in pattern order).
    pub(super) opened: usize,
    /// Capture groups currently open.
    pub(super) open: Vec<usize>,
    /// How many repeats enclose the current node.
    pub(super) repeats: usize,
    /// A construct the engine cannot express (see [`compile`](super::compile)).
    pub(super) unsupported: Option<String>,
    /// Groups used by back-references and conditionals.
    pub(super) referenced: Vec<usize>,
}

pub(super) fn push_char(out: &mut String, c: u32) {
    match char::from_u32(c) {
        Some(ch) if ch.is_ascii_alphanumeric() => out.push(ch),
        Some(_) => {
            let _ = write!(out, "\\x{{{c:X}}}");
        }
        None => out.push_str(NEVER),
    }
}

pub(super) fn push_set(out: &mut String, set: &CharSet) {
    let set = set.difference(&CharSet(vec![SURROGATES]));
    match set.0.as_slice() {
        [] => out.push_str(NEVER),
        [(a, b)] if a == b => push_char(out, *a),
        [(0, 0xD7FF), (0xE000, MAX_CHAR)] => out.push_str(ANY_CHAR),
        ranges => {
            out.push('[');
            for &(a, b) in ranges {
                let _ = write!(out, "\\x{{{a:X}}}");
                if b > a {
                    let _ = write!(out, "-\\x{{{b:X}}}");
                }
            }
            out.push(']');
        }
    }
}

impl<'a> Emitter<'a> {
    pub(super) fn new(parsed: &'a Parsed, relaxed: bool) -> Self {
        Emitter {
            parsed,
            relaxed,
            hard: false,
            opened: 0,
            open: Vec::new(),
            repeats: 0,
            unsupported: None,
            referenced: referenced_groups(&parsed.nodes),
        }
    }

    pub(super) fn seq(&mut self, nodes: &[Node], flags: u32) -> String {
        let mut out = String::new();
        for node in nodes {
            self.node(&mut out, node, flags);
        }
        out
    }

    pub(super) fn word_boundary(&mut self, out: &mut String, flags: u32, negated: bool) {
        if self.relaxed {
            return;
        }
        self.hard = true;
        let mut w = String::new();
        push_set(&mut w, &category_set(Cat::Word, flags));
        if negated {
            let _ = write!(
                out,
                "(?:(?<={w})(?={w})|(?<!{w})(?!{w})(?:(?<={ANY_CHAR})|(?={ANY_CHAR})))"
            );
        } else {
            let _ = write!(out, "(?:(?<={w})(?!{w})|(?<!{w})(?={w}))");
        }
    }

    #[allow(
        clippy::too_many_lines,
        reason = "one arm per parse-tree node keeps the translation table in one place"
    )]
    pub(super) fn node(&mut self, out: &mut String, node: &Node, flags: u32) {
        let ignore = flags & FLAG_IGNORECASE != 0;
        match node {
            Node::Literal(c) => {
                if ignore {
                    push_set(out, &Fold::of(flags).literal(*c));
                } else {
                    push_char(out, *c);
                }
            }
            Node::NotLiteral(c) => {
                let set = if ignore {
                    Fold::of(flags).literal(*c)
                } else {
                    CharSet::single(*c)
                };
                push_set(out, &set.complement());
            }
            Node::Any => out.push_str(if flags & FLAG_DOTALL != 0 {
                ANY_CHAR
            } else {
                "."
            }),
            Node::In(items) => push_set(out, &class_set(items, flags)),
            Node::At(at) => match at {
                At::Beginning if flags & FLAG_MULTILINE != 0 => out.push_str("(?m:^)"),
                At::Beginning => out.push('^'),
                At::BeginningString => out.push_str("\\A"),
                At::End if flags & FLAG_MULTILINE != 0 => out.push_str("(?m:$)"),
                At::End => out.push('$'),
                At::EndString => out.push_str("\\z"),
                At::Boundary => self.word_boundary(out, flags, false),
                At::NonBoundary => self.word_boundary(out, flags, true),
            },
            Node::Branch(items) => {
                out.push_str("(?:");
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push('|');
                    }
                    let s = self.seq(item, flags);
                    out.push_str(&s);
                }
                out.push(')');
            }
            Node::Sub { group, add, del, p } => {
                let inner_flags = combine_flags(flags, *add, *del);
                if let Some(g) = group {
                    self.opened += 1;
                    self.open.push(*g);
                    let inner = self.seq(p, inner_flags);
                    self.open.pop();
                    out.push('(');
                    if !self.relaxed && self.referenced.contains(g) {
                        // fancy-regex hands constant-width parts without
                        // look-arounds to the regex engine, which commits to
                        // its first way of matching them; an empty
                        // look-ahead keeps a referenced group (and any
                        // alternation around it) on the backtracking VM so
                        // another way to capture can still be tried.
                        out.push_str("(?=)");
                    }
                    out.push_str(&inner);
                    out.push(')');
                } else {
                    let inner = self.seq(p, inner_flags);
                    out.push_str(&inner);
                }
            }
            Node::Atomic(p) => {
                let inner = self.seq(p, flags);
                if self.relaxed {
                    let _ = write!(out, "(?:{inner})");
                } else {
                    self.hard = true;
                    let _ = write!(out, "(?>{inner})");
                }
            }
            Node::Repeat {
                kind,
                min,
                max,
                item,
            } => self.repeat(out, *kind, *min, *max, item, flags),
            Node::Assert { negate, behind, p } => {
                let inner = self.seq(p, flags);
                if !self.relaxed {
                    self.hard = true;
                    let open = match (behind, negate) {
                        (false, false) => "(?=",
                        (false, true) => "(?!",
                        (true, false) => "(?<=",
                        (true, true) => "(?<!",
                    };
                    out.push_str(open);
                    out.push_str(&inner);
                    out.push(')');
                }
            }
            Node::GroupRef(g) => {
                if self.relaxed {
                    out.push_str("(?s:.*)");
                } else {
                    self.hard = true;
                    let _ = write!(out, "\\k<{g}>");
                }
            }
            Node::GroupRefExists { gid, yes, no } => {
                // A group that opens later, or that encloses this test, has
                // not matched yet when the test runs (sre needs both of its
                // marks); fancy-regex cannot express either, so outside
                // repeats the test is decided here.
                let undecided = *gid > self.opened || self.open.contains(gid);
                let y = self.seq(yes, flags);
                let n = no.as_ref().map(|n| self.seq(n, flags)).unwrap_or_default();
                if self.relaxed {
                    let _ = write!(out, "(?:{y}|{n})");
                } else if undecided && self.repeats == 0 {
                    // The no-branch; the yes-branch stays (unreachable) so
                    // the group numbers after it do not move.
                    let _ = write!(out, "(?:{NEVER}{y}|{n})");
                } else if undecided {
                    self.unsupported = Some(format!(
                        "a conditional inside a repeat that tests group {gid} before the group closes is not supported"
                    ));
                } else if !(y.is_empty() && n.is_empty()) {
                    self.hard = true;
                    let _ = write!(out, "(?({gid}){y}|{n})");
                }
            }
        }
    }

    pub(super) fn repeat(
        &mut self,
        out: &mut String,
        kind: RepeatKind,
        min: u32,
        max: u32,
        item: &[Node],
        flags: u32,
    ) {
        if getwidth(item, &self.parsed.groupwidths).1 == 0 {
            // Repeating something that only asserts is the same as doing it
            // once, or optionally once; fancy-regex does not repeat
            // look-arounds, so spell that out.
            let s = self.seq(item, flags);
            if min > 0 {
                out.push_str(&s);
            } else if contains_group(item) && !s.is_empty() {
                let _ = match kind {
                    RepeatKind::Max => write!(out, "(?:{s}|)"),
                    RepeatKind::Min => write!(out, "(?:|{s})"),
                    RepeatKind::Possessive => write!(out, "(?>{s}|)"),
                };
            }
            return;
        }
        self.repeats += 1;
        let child = self.seq(item, flags);
        self.repeats -= 1;
        if child.is_empty() {
            return;
        }
        let atom = matches!(
            item,
            [Node::Literal(_)
                | Node::NotLiteral(_)
                | Node::Any
                | Node::In(_)
                | Node::Branch(_)
                | Node::Sub { group: Some(_), .. }]
        );
        let mut s = String::new();
        if atom {
            s.push_str(&child);
        } else {
            let _ = write!(s, "(?:{child})");
        }
        if max == MAXREPEAT {
            let _ = write!(s, "{{{min},}}");
        } else if min == max {
            let _ = write!(s, "{{{min}}}");
        } else {
            let _ = write!(s, "{{{min},{max}}}");
        }
        match kind {
            RepeatKind::Max => out.push_str(&s),
            RepeatKind::Min => {
                out.push_str(&s);
                out.push('?');
            }
            RepeatKind::Possessive if self.relaxed => out.push_str(&s),
            RepeatKind::Possessive => {
                // sre matches each iteration of a possessive repeat on its
                // own (first match, no backtracking into it) and never goes
                // back to an earlier iteration.
                self.hard = true;
                s.clear();
                let _ = write!(s, "(?>{child})");
                if max == MAXREPEAT {
                    let _ = write!(s, "{{{min},}}");
                } else if min == max {
                    let _ = write!(s, "{{{min}}}");
                } else {
                    let _ = write!(s, "{{{min},{max}}}");
                }
                let _ = write!(out, "(?>{s})");
            }
        }
    }
}
