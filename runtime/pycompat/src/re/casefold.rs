//! Character sets: the classes `\w`, `\d`, `\s` and `[…]` stand for,
//! and sre's `IGNORECASE` folding.

use super::ast::{Cat, SetItem};
use super::tables::{DIGIT, EXTRA_CASES, LOWER, UPPER, WORD};
use super::{FLAG_ASCII, FLAG_IGNORECASE, MAX_CHAR};

// ---------------------------------------------------------------------------
// Character sets
// ---------------------------------------------------------------------------

/// A set of code points as sorted, disjoint, non-adjacent inclusive ranges.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct CharSet(pub(super) Vec<(u32, u32)>);

impl CharSet {
    pub(super) fn from_ranges(mut v: Vec<(u32, u32)>) -> Self {
        v.sort_unstable();
        let mut out: Vec<(u32, u32)> = Vec::with_capacity(v.len());
        for (a, b) in v {
            match out.last_mut() {
                Some(last) if a <= last.1.saturating_add(1) => last.1 = last.1.max(b),
                _ => out.push((a, b)),
            }
        }
        CharSet(out)
    }

    pub(super) fn from_table(table: &[(u32, u32)]) -> Self {
        CharSet(table.to_vec())
    }

    pub(super) fn single(c: u32) -> Self {
        CharSet(vec![(c, c)])
    }

    pub(super) fn contains(&self, c: u32) -> bool {
        in_ranges(&self.0, c)
    }

    pub(super) fn union(&self, other: &CharSet) -> CharSet {
        let mut v = self.0.clone();
        v.extend_from_slice(&other.0);
        CharSet::from_ranges(v)
    }

    pub(super) fn complement(&self) -> CharSet {
        let mut out = Vec::with_capacity(self.0.len() + 1);
        let mut next = 0u32;
        for &(a, b) in &self.0 {
            if a > next {
                out.push((next, a - 1));
            }
            next = b.saturating_add(1);
        }
        if next <= MAX_CHAR {
            out.push((next, MAX_CHAR));
        }
        CharSet(out)
    }

    pub(super) fn difference(&self, other: &CharSet) -> CharSet {
        self.intersection(&other.complement())
    }

    pub(super) fn intersection(&self, other: &CharSet) -> CharSet {
        let (mut i, mut j) = (0, 0);
        let mut out = Vec::new();
        while i < self.0.len() && j < other.0.len() {
            let (a1, b1) = self.0[i];
            let (a2, b2) = other.0[j];
            let (lo, hi) = (a1.max(a2), b1.min(b2));
            if lo <= hi {
                out.push((lo, hi));
            }
            if b1 < b2 {
                i += 1;
            } else {
                j += 1;
            }
        }
        CharSet(out)
    }
}

/// Binary search in a sorted range table.
pub(super) fn in_ranges(table: &[(u32, u32)], c: u32) -> bool {
    let i = table.partition_point(|&(_, b)| b < c);
    table.get(i).is_some_and(|&(a, _)| a <= c)
}

/// Looks `c` up in a `(first, last, delta, stride)` case table.
pub(super) fn case_map(table: &[(u32, u32, i32, u32)], c: u32) -> u32 {
    let i = table.partition_point(|&(_, last, _, _)| last < c);
    match table.get(i) {
        Some(&(first, _, delta, stride)) if first <= c && (c - first).is_multiple_of(stride) => {
            c.wrapping_add_signed(delta)
        }
        _ => c,
    }
}

pub(super) fn for_each_case_pair(table: &[(u32, u32, i32, u32)], mut f: impl FnMut(u32, u32)) {
    for &(first, last, delta, stride) in table {
        let mut c = first;
        while c <= last {
            f(c, c.wrapping_add_signed(delta));
            c += stride;
        }
    }
}

/// Which lowercase mapping `IGNORECASE` uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Fold {
    /// `_sre.unicode_tolower` plus `_casefix` extras.
    Unicode,
    /// `_sre.ascii_tolower`, no extras.
    Ascii,
}

impl Fold {
    pub(super) fn of(flags: u32) -> Fold {
        if flags & FLAG_ASCII != 0 {
            Fold::Ascii
        } else {
            Fold::Unicode
        }
    }

    pub(super) fn lower(self, c: u32) -> u32 {
        match self {
            Fold::Unicode => case_map(LOWER, c),
            Fold::Ascii if (0x41..=0x5A).contains(&c) => c + 32,
            Fold::Ascii => c,
        }
    }

    /// Every `(c, lower(c))` with `lower(c) != c`.
    pub(super) fn for_each_pair(self, mut f: impl FnMut(u32, u32)) {
        match self {
            Fold::Unicode => for_each_case_pair(LOWER, f),
            Fold::Ascii => (0x41..=0x5A).for_each(|c| f(c, c + 32)),
        }
    }

    pub(super) fn fixes(self, lower: u32) -> &'static [u32] {
        match self {
            Fold::Unicode => EXTRA_CASES
                .binary_search_by_key(&lower, |&(k, _)| k)
                .map_or(&[], |i| EXTRA_CASES[i].1),
            Fold::Ascii => &[],
        }
    }

    /// `{c : lower(c) ∈ s}`.
    pub(super) fn preimage(self, s: &CharSet) -> CharSet {
        let mut add = Vec::new();
        let mut remove = Vec::new();
        self.for_each_pair(|c, l| {
            if s.contains(l) {
                add.push((c, c));
            } else if s.contains(c) {
                remove.push((c, c));
            }
        });
        if add.is_empty() && remove.is_empty() {
            return s.clone();
        }
        s.difference(&CharSet::from_ranges(remove))
            .union(&CharSet::from_ranges(add))
    }

    /// `{lower(c) : c ∈ [a, b]}`.
    pub(super) fn image(self, a: u32, b: u32) -> CharSet {
        let mut add = Vec::new();
        let mut remove = Vec::new();
        self.for_each_pair(|c, l| {
            if (a..=b).contains(&c) {
                remove.push((c, c));
                add.push((l, l));
            }
        });
        CharSet(vec![(a, b)])
            .difference(&CharSet::from_ranges(remove))
            .union(&CharSet::from_ranges(add))
    }

    /// The set a literal matches under `IGNORECASE` (`LITERAL_UNI_IGNORE`,
    /// or `IN_UNI_IGNORE` over the `_casefix` extras; ASCII: `LITERAL_IGNORE`).
    pub(super) fn literal(self, c: u32) -> CharSet {
        let lo = self.lower(c);
        let mut v = vec![(lo, lo)];
        v.extend(self.fixes(lo).iter().map(|&k| (k, k)));
        self.preimage(&CharSet::from_ranges(v))
    }
}

pub(super) const SPACE: &[(u32, u32)] = &[
    (0x9, 0xD),
    (0x1C, 0x20),
    (0x85, 0x85),
    (0xA0, 0xA0),
    (0x1680, 0x1680),
    (0x2000, 0x200A),
    (0x2028, 0x2029),
    (0x202F, 0x202F),
    (0x205F, 0x205F),
    (0x3000, 0x3000),
];
pub(super) const ASCII_SPACE: &[(u32, u32)] = &[(0x9, 0xD), (0x20, 0x20)];
pub(super) const ASCII_DIGIT: &[(u32, u32)] = &[(0x30, 0x39)];
pub(super) const ASCII_WORD: &[(u32, u32)] =
    &[(0x30, 0x39), (0x41, 0x5A), (0x5F, 0x5F), (0x61, 0x7A)];

/// `\d`, `\s`, `\w` and their negations under `flags` (`CH_UNICODE` or the
/// ASCII categories).
pub(super) fn category_set(cat: Cat, flags: u32) -> CharSet {
    let ascii = flags & FLAG_ASCII != 0;
    let base = |t_uni: &[(u32, u32)], t_ascii: &[(u32, u32)]| {
        CharSet::from_table(if ascii { t_ascii } else { t_uni })
    };
    match cat {
        Cat::Digit => base(DIGIT, ASCII_DIGIT),
        Cat::NotDigit => base(DIGIT, ASCII_DIGIT).complement(),
        Cat::Space => base(SPACE, ASCII_SPACE),
        Cat::NotSpace => base(SPACE, ASCII_SPACE).complement(),
        Cat::Word => base(WORD, ASCII_WORD),
        Cat::NotWord => base(WORD, ASCII_WORD).complement(),
    }
}

/// The code points an `IN` set matches under `flags`, following
/// `_compiler._optimize_charset` and the `IN`/`IN_IGNORE`/`IN_UNI_IGNORE`
/// matchers.
pub(super) fn class_set(items: &[SetItem], flags: u32) -> CharSet {
    let negate = items.first() == Some(&SetItem::Negate);
    let set = if flags & FLAG_IGNORECASE == 0 {
        let mut v = Vec::new();
        let mut cats = CharSet::default();
        for item in items {
            match *item {
                SetItem::Literal(c) => v.push((c, c)),
                SetItem::Range(a, b) => v.push((a, b)),
                SetItem::Category(cat) => cats = cats.union(&category_set(cat, flags)),
                SetItem::Negate => {}
            }
        }
        CharSet::from_ranges(v).union(&cats)
    } else {
        let fold = Fold::of(flags);
        // The BMP "charmap" of lowered items, then the "tail".
        let mut charmap = Vec::new();
        let mut direct = CharSet::default();
        let mut tail_literals = Vec::new();
        let mut tail_ranges = Vec::new();
        for item in items {
            match *item {
                SetItem::Literal(av) => {
                    let lo = fold.lower(av);
                    if lo <= 0xFFFF {
                        charmap.push((lo, lo));
                        charmap.extend(fold.fixes(lo).iter().map(|&k| (k, k)));
                    } else {
                        tail_literals.push(av);
                    }
                }
                SetItem::Range(a, b) => {
                    if a <= 0xFFFF {
                        let img = fold.image(a, b.min(0xFFFF));
                        for &(k, extra) in EXTRA_CASES {
                            if fold == Fold::Unicode && img.contains(k) {
                                charmap.extend(extra.iter().map(|&e| (e, e)));
                            }
                        }
                        charmap.extend_from_slice(&img.0);
                    }
                    if b > 0xFFFF {
                        tail_ranges.push((a, b));
                    }
                }
                SetItem::Category(cat) => direct = direct.union(&category_set(cat, flags)),
                SetItem::Negate => {}
            }
        }
        let mut m = fold.preimage(&CharSet::from_ranges(charmap)).union(&direct);
        for av in tail_literals {
            m = m.union(&fold.preimage(&CharSet::single(av)));
        }
        for (a, b) in tail_ranges {
            // RANGE_UNI_IGNORE: lower(ch) in [a, b] or upper(lower(ch)) in [a, b].
            m = m.union(&fold.preimage(&CharSet(vec![(a, b)])));
            let mut ups = Vec::new();
            for_each_case_pair(UPPER, |c, u| {
                if (a..=b).contains(&u) {
                    ups.push((c, c));
                }
            });
            m = m.union(&fold.preimage(&CharSet::from_ranges(ups)));
        }
        m
    };
    if negate { set.complement() } else { set }
}
