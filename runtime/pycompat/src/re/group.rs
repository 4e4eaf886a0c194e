//! The parser's `(` branch (groups, look-arounds, conditionals, inline
//! flags), character classes, `_parse_flags`, and the checks of
//! `_compiler.py`.

use crate::repr::repr_str;

use super::ast::{Node, SetItem, Width, getwidth, uniq};
use super::parser::{ClassCode, State, class_escape, parse_seq, parse_sub};
use super::tokenizer::{PErr, Tok, Tokenizer, int_sat, int_text, is_alpha, is_ascii_decimal};
use super::{FLAG_TEMPLATE, FLAG_VERBOSE, GLOBAL_FLAGS, MAXCODE, MAXGROUPS, TYPE_FLAGS, flag_of};

/// The `(` branch of `_parse`. Returns the new `verbose` after global flags.
#[allow(
    clippy::too_many_lines,
    reason = "a faithful port of CPython's `(` branch, kept in one piece so it can be compared line by line"
)]
#[inline(never)]
pub(super) fn parse_paren(
    source: &mut Tokenizer<'_>,
    state: &mut State,
    verbose: bool,
    nested: usize,
    first: bool,
    subpattern: &mut Vec<Node>,
) -> Result<Option<bool>, PErr> {
    let start = source.tell() - 1;
    let mut capture = true;
    let mut atomic = false;
    let mut name: Option<String> = None;
    let mut add_flags = 0u32;
    let mut del_flags = 0u32;
    if source.matches('?')? {
        let Some(ch) = source.get()? else {
            return Err(source.error("unexpected end of pattern", 0));
        };
        match ch {
            Tok::C('P') => {
                if source.matches('<')? {
                    let n = source.getuntil('>', "group name")?;
                    source.checkgroupname(&n, 1)?;
                    name = Some(n);
                } else if source.matches('=')? {
                    let n = source.getuntil(')', "group name")?;
                    source.checkgroupname(&n, 1)?;
                    let nlen = n.chars().count();
                    let Some(gid) = state.group_named(&n) else {
                        return Err(
                            source.error(format!("unknown group name {}", repr_str(&n)), nlen + 1)
                        );
                    };
                    if !state.checkgroup(gid) {
                        return Err(source.error("cannot refer to an open group", nlen + 1));
                    }
                    state.checklookbehindgroup(gid, source)?;
                    subpattern.push(Node::GroupRef(gid));
                    return Ok(None);
                } else {
                    let Some(ch) = source.get()? else {
                        return Err(source.error("unexpected end of pattern", 0));
                    };
                    return Err(
                        source.error(format!("unknown extension ?P{}", ch.text()), ch.len() + 2)
                    );
                }
            }
            Tok::C(':') => capture = false,
            Tok::C('#') => {
                loop {
                    if source.next.is_none() {
                        return Err(
                            source.error("missing ), unterminated comment", source.tell() - start)
                        );
                    }
                    if source.get()? == Some(Tok::C(')')) {
                        break;
                    }
                }
                return Ok(None);
            }
            Tok::C(la @ ('=' | '!' | '<')) => {
                let mut la = la;
                let mut behind = false;
                let mut saved_lookbehind = None;
                if la == '<' {
                    let Some(ch) = source.get()? else {
                        return Err(source.error("unexpected end of pattern", 0));
                    };
                    match ch {
                        Tok::C(c @ ('=' | '!')) => la = c,
                        _ => {
                            return Err(source.error(
                                format!("unknown extension ?<{}", ch.text()),
                                ch.len() + 2,
                            ));
                        }
                    }
                    behind = true;
                    saved_lookbehind = Some(state.lookbehindgroups);
                    if state.lookbehindgroups.is_none() {
                        state.lookbehindgroups = Some(state.groups());
                    }
                }
                let p = parse_sub(source, state, verbose, nested + 1)?;
                if let Some(None) = saved_lookbehind {
                    state.lookbehindgroups = None;
                }
                if !source.matches(')')? {
                    return Err(
                        source.error("missing ), unterminated subpattern", source.tell() - start)
                    );
                }
                subpattern.push(Node::Assert {
                    negate: la == '!',
                    behind,
                    p,
                });
                return Ok(None);
            }
            Tok::C('(') => {
                let condname = source.getuntil(')', "group name")?;
                let clen = condname.chars().count();
                let condgroup = if is_ascii_decimal(&condname) {
                    let g = int_sat(&condname);
                    if g == 0 {
                        return Err(source.error("bad group number", clen + 1));
                    }
                    if g >= MAXGROUPS {
                        return Err(source.error(
                            format!("invalid group reference {}", int_text(&condname)),
                            clen + 1,
                        ));
                    }
                    let g = g as usize;
                    if !state.grouprefpos.iter().any(|&(x, _)| x == g) {
                        state.grouprefpos.push((g, source.tell() - clen - 1));
                    }
                    g
                } else {
                    source.checkgroupname(&condname, 1)?;
                    match state.group_named(&condname) {
                        Some(g) => g,
                        None => {
                            return Err(source.error(
                                format!("unknown group name {}", repr_str(&condname)),
                                clen + 1,
                            ));
                        }
                    }
                };
                state.checklookbehindgroup(condgroup, source)?;
                let yes = parse_seq(source, state, verbose, nested + 1, false)?;
                let no = if source.matches('|')? {
                    let no = parse_seq(source, state, verbose, nested + 1, false)?;
                    if source.next == Some(Tok::C('|')) {
                        return Err(
                            source.error("conditional backref with more than two branches", 0)
                        );
                    }
                    Some(no)
                } else {
                    None
                };
                if !source.matches(')')? {
                    return Err(
                        source.error("missing ), unterminated subpattern", source.tell() - start)
                    );
                }
                subpattern.push(Node::GroupRefExists {
                    gid: condgroup,
                    yes,
                    no,
                });
                return Ok(None);
            }
            Tok::C('>') => {
                capture = false;
                atomic = true;
            }
            Tok::C(f) if flag_of(f).is_some() || f == '-' => match parse_flags(source, state, f)? {
                None => {
                    if !first || !subpattern.is_empty() {
                        return Err(source.error(
                            "global flags not at the start of the expression",
                            source.tell() - start,
                        ));
                    }
                    return Ok(Some(state.flags & FLAG_VERBOSE != 0));
                }
                Some((a, d)) => {
                    add_flags = a;
                    del_flags = d;
                    capture = false;
                }
            },
            other => {
                return Err(source.error(
                    format!("unknown extension ?{}", other.text()),
                    other.len() + 1,
                ));
            }
        }
    }
    let group = if capture {
        match state.opengroup(name.as_deref()) {
            Ok(g) => Some(g),
            Err(msg) => {
                let off = name.as_deref().map_or(0, |n| n.chars().count()) + 1;
                return Err(source.error(msg, off));
            }
        }
    } else {
        None
    };
    let sub_verbose = (verbose || add_flags & FLAG_VERBOSE != 0) && del_flags & FLAG_VERBOSE == 0;
    let p = parse_sub(source, state, sub_verbose, nested + 1)?;
    if !source.matches(')')? {
        return Err(source.error("missing ), unterminated subpattern", source.tell() - start));
    }
    if let Some(g) = group {
        state.groupwidths[g] = Some(getwidth(&p, &state.groupwidths));
    }
    if atomic {
        subpattern.push(Node::Atomic(p));
    } else {
        subpattern.push(Node::Sub {
            group,
            add: add_flags,
            del: del_flags,
            p,
        });
    }
    Ok(None)
}

/// The `[` branch of `_parse`.
#[inline(never)]
pub(super) fn parse_class(source: &mut Tokenizer<'_>) -> Result<Node, PErr> {
    let here = source.tell() - 1;
    let mut set: Vec<SetItem> = Vec::new();
    let negate = source.matches('^')?;
    loop {
        let Some(this) = source.get()? else {
            return Err(source.error("unterminated character set", source.tell() - here));
        };
        if this == Tok::C(']') && !set.is_empty() {
            break;
        }
        let code1 = match this {
            Tok::E(esc) => class_escape(source, esc)?,
            Tok::C(c) => ClassCode::Lit(c as u32),
        };
        if source.matches('-')? {
            let Some(that) = source.get()? else {
                return Err(source.error("unterminated character set", source.tell() - here));
            };
            if that == Tok::C(']') {
                set.push(class_item(code1));
                set.push(SetItem::Literal('-' as u32));
                break;
            }
            let code2 = match that {
                Tok::E(esc) => class_escape(source, esc)?,
                Tok::C(c) => ClassCode::Lit(c as u32),
            };
            let bad = || {
                source.error(
                    format!("bad character range {}-{}", this.text(), that.text()),
                    this.len() + 1 + that.len(),
                )
            };
            let (ClassCode::Lit(lo), ClassCode::Lit(hi)) = (code1, code2) else {
                return Err(bad());
            };
            if hi < lo {
                return Err(bad());
            }
            set.push(SetItem::Range(lo, hi));
        } else {
            set.push(class_item(code1));
        }
    }
    let mut set = uniq(set);
    if let [SetItem::Literal(c)] = set.as_slice() {
        return Ok(if negate {
            Node::NotLiteral(*c)
        } else {
            Node::Literal(*c)
        });
    }
    if negate {
        set.insert(0, SetItem::Negate);
    }
    Ok(Node::In(set))
}

pub(super) fn class_item(code: ClassCode) -> SetItem {
    match code {
        ClassCode::Lit(c) => SetItem::Literal(c),
        ClassCode::Cat(cat) => SetItem::Category(cat),
    }
}

/// `_parse_flags`: `None` for global flags, else the scoped `(add, del)`.
pub(super) fn parse_flags(
    source: &mut Tokenizer<'_>,
    state: &mut State,
    first: char,
) -> Result<Option<(u32, u32)>, PErr> {
    let mut add = 0u32;
    let mut del = 0u32;
    let mut ch = Tok::C(first);
    let flag_char = |t: Tok| match t {
        Tok::C(c) => flag_of(c).map(|f| (c, f)),
        Tok::E(_) => None,
    };
    let is_alpha_tok = |t: Tok| matches!(t, Tok::C(c) if is_alpha(c));
    if first != '-' {
        while let Some((c, flag)) = flag_char(ch) {
            if c == 'L' {
                return Err(source.error(
                    "bad inline flags: cannot use 'L' flag with a str pattern",
                    0,
                ));
            }
            add |= flag;
            if flag & TYPE_FLAGS != 0 && add & TYPE_FLAGS != flag {
                return Err(source.error(
                    "bad inline flags: flags 'a', 'u' and 'L' are incompatible",
                    0,
                ));
            }
            let Some(next) = source.get()? else {
                return Err(source.error("missing -, : or )", 0));
            };
            ch = next;
            if ch.is_one_of(")-:") {
                break;
            }
            if flag_char(ch).is_none() {
                let msg = if is_alpha_tok(ch) {
                    "unknown flag"
                } else {
                    "missing -, : or )"
                };
                return Err(source.error(msg, ch.len()));
            }
        }
    }
    if ch == Tok::C(')') {
        state.flags |= add;
        return Ok(None);
    }
    if add & GLOBAL_FLAGS != 0 {
        return Err(source.error("bad inline flags: cannot turn on global flag", 1));
    }
    if ch == Tok::C('-') {
        let Some(next) = source.get()? else {
            return Err(source.error("missing flag", 0));
        };
        ch = next;
        if flag_char(ch).is_none() {
            let msg = if is_alpha_tok(ch) {
                "unknown flag"
            } else {
                "missing flag"
            };
            return Err(source.error(msg, ch.len()));
        }
        while let Some((_, flag)) = flag_char(ch) {
            if flag & TYPE_FLAGS != 0 {
                return Err(source.error(
                    "bad inline flags: cannot turn off flags 'a', 'u' and 'L'",
                    0,
                ));
            }
            del |= flag;
            let Some(next) = source.get()? else {
                return Err(source.error("missing :", 0));
            };
            ch = next;
            if ch == Tok::C(':') {
                break;
            }
            if flag_char(ch).is_none() {
                let msg = if is_alpha_tok(ch) {
                    "unknown flag"
                } else {
                    "missing :"
                };
                return Err(source.error(msg, ch.len()));
            }
        }
    }
    if del & GLOBAL_FLAGS != 0 {
        return Err(source.error("bad inline flags: cannot turn off global flag", 1));
    }
    if add & del != 0 {
        return Err(source.error("bad inline flags: flag turned on and off", 1));
    }
    Ok(Some((add, del)))
}

/// `_compiler._combine_flags`.
pub(super) fn combine_flags(flags: u32, add: u32, del: u32) -> u32 {
    let flags = if add & TYPE_FLAGS != 0 {
        flags & !TYPE_FLAGS
    } else {
        flags
    };
    (flags | add) & !del
}

/// The errors `_compiler._compile` raises, in its traversal order.
pub(super) fn compile_checks(nodes: &[Node], flags: u32, gw: &[Option<Width>]) -> Result<(), PErr> {
    for node in nodes {
        match node {
            Node::Repeat { kind, item, .. } => {
                if flags & FLAG_TEMPLATE != 0 {
                    return Err(PErr::Re {
                        msg: format!("internal: unsupported template operator {}", kind.name()),
                        pos: None,
                    });
                }
                compile_checks(item, flags, gw)?;
            }
            Node::Sub { add, del, p, .. } => {
                compile_checks(p, combine_flags(flags, *add, *del), gw)?;
            }
            Node::Atomic(p) => compile_checks(p, flags, gw)?,
            Node::Assert { behind, p, .. } => {
                if *behind {
                    let (lo, hi) = getwidth(p, gw);
                    if lo > MAXCODE {
                        return Err(PErr::Re {
                            msg: "looks too much behind".into(),
                            pos: None,
                        });
                    }
                    if lo != hi {
                        return Err(PErr::Re {
                            msg: "look-behind requires fixed-width pattern".into(),
                            pos: None,
                        });
                    }
                }
                compile_checks(p, flags, gw)?;
            }
            Node::Branch(items) => {
                for it in items {
                    compile_checks(it, flags, gw)?;
                }
            }
            Node::GroupRefExists { yes, no, .. } => {
                compile_checks(yes, flags, gw)?;
                if let Some(no) = no {
                    compile_checks(no, flags, gw)?;
                }
            }
            _ => {}
        }
    }
    Ok(())
}
