//! The parse tree (`SubPattern` items) and `getwidth`.

use super::{MAXREPEAT, MAXWIDTH};

// ---------------------------------------------------------------------------
// Parse tree (`SubPattern` items)
// ---------------------------------------------------------------------------

/// `(lo, hi)` from `getwidth`.
pub(super) type Width = (u128, u128);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Cat {
    Digit,
    NotDigit,
    Space,
    NotSpace,
    Word,
    NotWord,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SetItem {
    Negate,
    Literal(u32),
    Range(u32, u32),
    Category(Cat),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum At {
    Beginning,
    BeginningString,
    Boundary,
    NonBoundary,
    End,
    EndString,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum RepeatKind {
    Max,
    Min,
    Possessive,
}

impl RepeatKind {
    pub(super) fn name(self) -> &'static str {
        match self {
            RepeatKind::Max => "MAX_REPEAT",
            RepeatKind::Min => "MIN_REPEAT",
            RepeatKind::Possessive => "POSSESSIVE_REPEAT",
        }
    }
}

#[derive(Debug, Clone)]
pub(super) enum Node {
    Literal(u32),
    NotLiteral(u32),
    Any,
    In(Vec<SetItem>),
    At(At),
    Branch(Vec<Vec<Node>>),
    Sub {
        group: Option<usize>,
        add: u32,
        del: u32,
        p: Vec<Node>,
    },
    Atomic(Vec<Node>),
    Repeat {
        kind: RepeatKind,
        min: u32,
        max: u32,
        item: Vec<Node>,
    },
    Assert {
        negate: bool,
        behind: bool,
        p: Vec<Node>,
    },
    GroupRef(usize),
    GroupRefExists {
        gid: usize,
        yes: Vec<Node>,
        no: Option<Vec<Node>>,
    },
}

/// `item[0] != prefix` in `_parse_sub`: Python compares `(op, av)` tuples,
/// and sub-patterns only by identity, so only leaf items can be equal.
pub(super) fn leaf_eq(a: &Node, b: &Node) -> bool {
    match (a, b) {
        (Node::Literal(x), Node::Literal(y)) | (Node::NotLiteral(x), Node::NotLiteral(y)) => x == y,
        (Node::Any, Node::Any) => true,
        (Node::In(x), Node::In(y)) => x == y,
        (Node::At(x), Node::At(y)) => x == y,
        (Node::GroupRef(x), Node::GroupRef(y)) => x == y,
        _ => false,
    }
}

pub(super) fn uniq(items: Vec<SetItem>) -> Vec<SetItem> {
    let mut out: Vec<SetItem> = Vec::with_capacity(items.len());
    for it in items {
        if !out.contains(&it) {
            out.push(it);
        }
    }
    out
}

/// `SubPattern.getwidth`.
pub(super) fn getwidth(nodes: &[Node], groupwidths: &[Option<Width>]) -> Width {
    let (mut lo, mut hi) = (0u128, 0u128);
    for node in nodes {
        match node {
            Node::Branch(items) => {
                let (mut i, mut j) = (MAXWIDTH, 0u128);
                for it in items {
                    let (l, h) = getwidth(it, groupwidths);
                    i = i.min(l);
                    j = j.max(h);
                }
                lo += i;
                hi += j;
            }
            Node::Atomic(p) | Node::Sub { p, .. } => {
                let (i, j) = getwidth(p, groupwidths);
                lo += i;
                hi += j;
            }
            Node::Repeat { min, max, item, .. } => {
                let (i, j) = getwidth(item, groupwidths);
                lo += i * u128::from(*min);
                if *max == MAXREPEAT && j != 0 {
                    hi = MAXWIDTH;
                } else {
                    hi += j * u128::from(*max);
                }
            }
            Node::Literal(_) | Node::NotLiteral(_) | Node::Any | Node::In(_) => {
                lo += 1;
                hi += 1;
            }
            Node::GroupRef(g) => {
                if let Some(Some((i, j))) = groupwidths.get(*g) {
                    lo += i;
                    hi += j;
                }
            }
            Node::GroupRefExists { yes, no, .. } => {
                let (mut i, mut j) = getwidth(yes, groupwidths);
                match no {
                    Some(no) => {
                        let (l, h) = getwidth(no, groupwidths);
                        i = i.min(l);
                        j = j.max(h);
                    }
                    None => i = 0,
                }
                lo += i;
                hi += j;
            }
            Node::At(_) | Node::Assert { .. } => {}
        }
    }
    (lo.min(MAXWIDTH), hi.min(MAXWIDTH))
}

/// The groups named by back-references and conditionals.
pub(super) fn referenced_groups(nodes: &[Node]) -> Vec<usize> {
    fn walk(nodes: &[Node], out: &mut Vec<usize>) {
        for n in nodes {
            match n {
                Node::GroupRef(g) => out.push(*g),
                Node::GroupRefExists { gid, yes, no } => {
                    out.push(*gid);
                    walk(yes, out);
                    if let Some(no) = no {
                        walk(no, out);
                    }
                }
                Node::Sub { p, .. } | Node::Atomic(p) | Node::Assert { p, .. } => walk(p, out),
                Node::Repeat { item, .. } => walk(item, out),
                Node::Branch(items) => items.iter().for_each(|i| walk(i, out)),
                _ => {}
            }
        }
    }
    let mut out = Vec::new();
    walk(nodes, &mut out);
    out
}

pub(super) fn contains_group(nodes: &[Node]) -> bool {
    nodes.iter().any(|n| match n {
        Node::Sub { group: Some(_), .. } => true,
        Node::Sub { p, .. } | Node::Atomic(p) | Node::Assert { p, .. } => contains_group(p),
        Node::Repeat { item, .. } => contains_group(item),
        Node::Branch(items) => items.iter().any(|i| contains_group(i)),
        Node::GroupRefExists { yes, no, .. } => {
            contains_group(yes) || no.as_deref().is_some_and(contains_group)
        }
        _ => false,
    })
}
