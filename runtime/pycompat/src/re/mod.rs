//! Python `re` compatibility on top of `fancy-regex`.
//!
//! The reference grep walker compiles the model's pattern with CPython 3.12's
//! `re.compile` and keeps a line when `pattern.search(line)` finds a match;
//! glob matches every path segment with `re.compile(fnmatch.translate(seg))`.
//! This module reproduces both:
//!
//! 1. **Parsing** is a port of CPython 3.12's `re/_parser.py` (tokenizer,
//!    `_parse_sub`, `_parse`, `_escape`, `_class_escape`, `_parse_flags`) and
//!    of the checks in `re/_compiler.py` (template flag, look-behind width), so
//!    an invalid pattern fails with Python's exact `re.error` text
//!    (`missing ), unterminated subpattern at position 0`, with
//!    `(line L, column C)` when the pattern has a newline), in the same order
//!    of precedence, and the non-`re.error` exceptions come back as Python's
//!    `repr` (`OverflowError('the repetition number is too large')`,
//!    `ValueError('ASCII and UNICODE flags are incompatible')`). Positions count
//!    code points, like Python.
//! 2. **Matching** translates the parsed tree to `fancy-regex` syntax with
//!    Python's semantics spelled out explicitly instead of relying on the
//!    engine's defaults: `\w`, `\d` and `\s` are emitted as explicit classes
//!    built from CPython 3.12's Unicode 15.0 tables (`str.isalnum()`,
//!    `str.isdecimal()`, `str.isspace()`), or the ASCII sets under `(?a)`;
//!    `\b`/`\B` become look-arounds over that word class (with 3.12's rule that
//!    `\B` never matches an empty string); `IGNORECASE` is expanded into
//!    explicit classes using sre's rule (a character matches when its
//!    *simple lowercase* is in the pattern's lowercased set, plus
//!    `re._casefix` extras, plus the astral-range quirk of
//!    `RANGE_UNI_IGNORE` and the astral-literal-in-class quirk); every literal
//!    is escaped, so Python-only spellings (`{` that is not a quantifier,
//!    `\0`, octal, `\x`, `\u`, `\U`, `(?P<n>…)`, `(?P=n)`, possessive
//!    quantifiers, atomic groups, conditionals, scoped and global inline
//!    flags, verbose mode) all map onto plain constructs.
//! 3. **Speed**: a pattern that needs `fancy-regex`'s backtracking VM (look-
//!    arounds, including the ones `\b` becomes, back-references, atomic groups,
//!    conditionals) is paired with a *relaxed* prefilter (the same tree with
//!    assertions dropped, back-references as `.*`, atomic/possessive as plain,
//!    conditionals as alternations). The prefilter accepts a superset of what
//!    the pattern matches and runs on the linear-time `regex` engine, so the
//!    VM only sees the lines that can match. Everything else runs entirely on
//!    the `regex` engine.
//!
//! # Deviations from CPython 3.12 (for the project's deviation docs)
//!
//! * `\N{NAME}` escapes: the Unicode name database is not bundled. After
//!   Python's own syntax checks (`missing {`, `missing character name`, …) such
//!   a pattern fails with `grep: invalid regex: \N{…} named character escapes
//!   are not supported at position N`, also for names Python knows.
//! * Back-references under `IGNORECASE` compare case-sensitively (Python
//!   compares simple lowercases).
//! * When an iteration of a repeat matches the empty string, sre still counts
//!   it (recording its captures) and then stops; `fancy-regex` discards such
//!   an iteration. Only a later back-reference or conditional on a group
//!   that can match empty inside a repeat can tell (for example
//!   `(a|)*S(?(1)x|y)` on `Sx`: Python matches, this does not); whether a
//!   pattern matches is otherwise unaffected.
//! * Look-behind containing a back-reference (which Python accepts when the
//!   group has a fixed width) is rejected by the engine.
//! * Groups nested deeper than `fancy-regex`'s limit (about 60 levels), and
//!   patterns whose compiled automaton exceeds the engine's size limit (for
//!   example `a{100000}`), fail with `grep: invalid regex: <engine message>`.
//!   Python accepts up to about 490 levels (then `RecursionError('maximum
//!   recursion depth exceeded')`, 491 levels in the SDK called from a shallow
//!   asyncio stack). To keep the parser's stack small it stops at 100 levels
//!   (`groups nested more than 100 deep are not supported`), so a deeper
//!   pattern, valid or not, gets that message instead of Python's.
//! * A conditional `(?(n)…)` inside a repeat that tests a group which opens
//!   later or encloses it is rejected (outside repeats it is decided
//!   statically, exactly).
//! * A single search that needs more than [`BACKTRACK_LIMIT`] backtracking
//!   steps is reported by the caller as the 30 s timeout instead of running on
//!   (Python's `sre` would run until its CPU timer fires).
//! * `$` (without `MULTILINE`) matches only at the very end: Python also
//!   matches before a final `\n`. grep's lines never contain `\n`, and
//!   `fnmatch` uses `\Z`, so no caller can observe it.
//! * Classes come from CPython's Unicode 15.0 tables below, not from the
//!   engine's. Group names are checked for `str.isidentifier()` with
//!   `unicode-ident` (Unicode 16), and `str.isalpha()` (which picks between
//!   two flag error messages) with the standard library's tables, so
//!   characters added after Unicode 15.0 can differ there.
//! * `IGNORECASE` classes reaching past U+FFFF use the simple uppercase of a
//!   code point taken from `str.upper()`; for the ~100 characters whose full
//!   uppercase is several code points the simple mapping is treated as absent.
//! * Lone surrogates cannot occur in a Rust string, so a pattern's surrogate
//!   escapes (`\ud800`) never match (in Python they could only match
//!   surrogates, which decoded file lines never contain).
//!
//! # Tables
//!
//! The tables (`tables.rs`) were generated from CPython 3.12.1
//! (`unicodedata.unidata_version == "15.0.0"`): `WORD` is the ranges of
//! `c.isalnum() or c == "_"`, `DIGIT` of `c.isdecimal()`, `LOWER` the runs
//! `(first, last, delta, stride)` of `_sre.unicode_tolower(c) != c`, `UPPER`
//! the same for `str.upper()` where that is one code point, and
//! `EXTRA_CASES` is `re._casefix._EXTRA_CASES`. The tests spot-check them
//! against that interpreter.

use fancy_regex::{Regex, RegexBuilder};

mod ast;
mod casefold;
mod group;
mod parser;
mod tables;
mod tokenizer;
mod translate;

#[cfg(test)]
mod tests;

use ast::{Node, SetItem, getwidth};
use casefold::{CharSet, Fold, case_map, class_set};
use group::{combine_flags, compile_checks};
use parser::{Parsed, parse};
use tables::UPPER;
use translate::{Emitter, push_set};

// ---------------------------------------------------------------------------
// Public API
// ---------------------------------------------------------------------------

/// Backtracking steps one search may take in `fancy-regex`'s VM before it is
/// abandoned (see the module docs).
pub const BACKTRACK_LIMIT: usize = 50_000_000;

/// Size limit for each automaton compiled by the `regex` engine.
const DELEGATE_SIZE_LIMIT: usize = 64 << 20;

/// A compiled Python pattern.
#[derive(Debug)]
pub struct PyPattern {
    exact: Regex,
    prefilter: Option<Regex>,
    vm: bool,
}

/// Why a pattern did not compile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CompileError {
    /// Python raises `re.error`; the string is `str(exc)`.
    Invalid(String),
    /// Python raises another exception; the string is its `repr`.
    Exception(String),
    /// A valid Python pattern this engine cannot run (a documented deviation).
    Unsupported(String),
}

/// A search that ran past [`BACKTRACK_LIMIT`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BacktrackLimitExceeded;

impl PyPattern {
    /// `bool(pattern.search(haystack))`.
    pub fn search(&self, haystack: &str) -> Result<bool, BacktrackLimitExceeded> {
        if let Some(pre) = &self.prefilter
            && !pre.is_match(haystack).map_err(|_| BacktrackLimitExceeded)?
        {
            return Ok(false);
        }
        self.exact
            .is_match(haystack)
            .map_err(|_| BacktrackLimitExceeded)
    }

    /// Whether the pattern needs the backtracking VM (for tests).
    pub fn uses_vm(&self) -> bool {
        self.vm
    }
}

/// `re.compile(pattern)` for a `str` pattern with no flags.
pub fn compile(pattern: &str) -> Result<PyPattern, CompileError> {
    let t = translate(pattern)?;
    Ok(PyPattern {
        exact: build(&t.exact)?,
        prefilter: t.prefilter.as_deref().map(build).transpose()?,
        vm: t.vm,
    })
}

/// The `fancy-regex` sources a pattern translates to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Translation {
    /// The exact pattern.
    pub exact: String,
    /// The relaxed prefilter, when the exact pattern needs the VM.
    pub prefilter: Option<String>,
    /// Whether the exact pattern needs the backtracking VM.
    pub vm: bool,
}

/// Parses `pattern` like `re.compile` and translates it (see the module
/// docs); [`compile`] builds the result.
pub fn translate(pattern: &str) -> Result<Translation, CompileError> {
    let chars: Vec<char> = pattern.chars().collect();
    let parsed = parse(&chars).map_err(|e| e.into_compile_error(&chars))?;
    compile_checks(&parsed.nodes, parsed.flags, &parsed.groupwidths)
        .map_err(|e| e.into_compile_error(&chars))?;
    let mut exact = Emitter::new(&parsed, false);
    let mut exact_src = exact.seq(&parsed.nodes, parsed.flags);
    if let Some(msg) = exact.unsupported {
        return Err(CompileError::Unsupported(msg));
    }
    if let Some(guard) = info_charset_guard(&parsed) {
        let mut g = String::from("(?=");
        push_set(&mut g, &guard);
        g.push(')');
        exact_src.insert_str(0, &g);
        exact.hard = true;
    }
    let prefilter = if exact.hard {
        let mut relaxed = Emitter::new(&parsed, true);
        let src = relaxed.seq(&parsed.nodes, parsed.flags);
        (!src.is_empty()).then_some(src)
    } else {
        None
    };
    Ok(Translation {
        exact: exact_src,
        prefilter,
        vm: exact.hard,
    })
}

/// sre's search skips start positions whose character is not in the
/// pattern's leading character set (`_compile_info`), and compiles that set
/// with the *global* flags even when a leading `(?a:…)`/`(?u:…)` group
/// changes how `\w`, `\d` and `\s` read. Returns that set when it differs
/// from what the pattern itself would match, so the translation can require
/// it at the start of a match.
fn info_charset_guard(parsed: &Parsed) -> Option<CharSet> {
    if getwidth(&parsed.nodes, &parsed.groupwidths).0 == 0 {
        return None;
    }
    let global = parsed.flags;
    let mut flags = global;
    let mut nodes = parsed.nodes.as_slice();
    loop {
        match nodes.first()? {
            Node::Sub { add, del, p, .. } => {
                flags = combine_flags(flags, *add, *del);
                nodes = p;
            }
            Node::In(items) => {
                if !items.iter().any(|i| matches!(i, SetItem::Category(_))) {
                    return None;
                }
                if (flags & FLAG_ASCII) == (global & FLAG_ASCII) {
                    return None;
                }
                if flags & FLAG_IGNORECASE != 0 {
                    let fold = Fold::of(flags);
                    let cased = |c: u32| {
                        fold.lower(c) != c
                            || (fold == Fold::Unicode && case_map(UPPER, c) != c)
                            || (fold == Fold::Ascii && (0x61..=0x7A).contains(&c))
                    };
                    for item in items {
                        match *item {
                            SetItem::Literal(c) if cased(c) => return None,
                            SetItem::Range(a, b) if b > 0xFFFF || (a..=b).any(cased) => {
                                return None;
                            }
                            _ => {}
                        }
                    }
                }
                return Some(class_set(items, global & !FLAG_IGNORECASE));
            }
            _ => return None,
        }
    }
}

fn build(src: &str) -> Result<Regex, CompileError> {
    RegexBuilder::new(src)
        .backtrack_limit(BACKTRACK_LIMIT)
        .delegate_size_limit(DELEGATE_SIZE_LIMIT)
        .build()
        .map_err(|e| CompileError::Unsupported(e.to_string()))
}

// ---------------------------------------------------------------------------
// Constants from `re/_constants.py`
// ---------------------------------------------------------------------------

const FLAG_TEMPLATE: u32 = 1;
const FLAG_IGNORECASE: u32 = 2;
const FLAG_LOCALE: u32 = 4;
const FLAG_MULTILINE: u32 = 8;
const FLAG_DOTALL: u32 = 16;
const FLAG_UNICODE: u32 = 32;
const FLAG_VERBOSE: u32 = 64;
const FLAG_DEBUG: u32 = 128;
const FLAG_ASCII: u32 = 256;
const TYPE_FLAGS: u32 = FLAG_ASCII | FLAG_LOCALE | FLAG_UNICODE;
const GLOBAL_FLAGS: u32 = FLAG_DEBUG | FLAG_TEMPLATE;

/// `_sre.MAXREPEAT`: also the "unbounded" marker of a repeat.
const MAXREPEAT: u32 = u32::MAX;
/// `_sre.MAXGROUPS`.
const MAXGROUPS: u128 = 1_073_741_823;
/// `_compiler.MAXCODE` (4-byte codes).
const MAXCODE: u128 = (1 << 32) - 1;
/// `_parser.MAXWIDTH`.
const MAXWIDTH: u128 = 1 << 64;
/// Largest code point.
const MAX_CHAR: u32 = 0x10_FFFF;

/// Parser frames allowed (`_parse_sub` + `_parse`): `n` nested groups cost
/// `2 + 2n`, so this allows 100 levels. It bounds the parser's native stack
/// (about 1.5 KiB a level) well inside the component's 1 MiB stack; CPython
/// allows about 490 levels before its `RecursionError`, but `fancy-regex`
/// could not run more than about 60 anyway.
const MAX_PARSE_FRAMES: usize = 202;
/// Group nesting that [`MAX_PARSE_FRAMES`] allows.
const MAX_NESTING: usize = (MAX_PARSE_FRAMES - 2) / 2;

fn flag_of(c: char) -> Option<u32> {
    Some(match c {
        'i' => FLAG_IGNORECASE,
        'L' => FLAG_LOCALE,
        'm' => FLAG_MULTILINE,
        's' => FLAG_DOTALL,
        'x' => FLAG_VERBOSE,
        'a' => FLAG_ASCII,
        't' => FLAG_TEMPLATE,
        'u' => FLAG_UNICODE,
        _ => return None,
    })
}
