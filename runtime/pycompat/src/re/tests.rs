//! Expected values were produced by CPython 3.12.1 (`re.compile`,
//! `pattern.search`, `fnmatch.translate`).

use super::casefold::{CharSet, Fold, case_map};
use super::tables::{UPPER, WORD};
use super::*;

const ERRORS: &[(&str, &str)] = &[
    ("(", "missing ), unterminated subpattern at position 0"),
    (")", "unbalanced parenthesis at position 0"),
    ("[", "unterminated character set at position 0"),
    ("*", "nothing to repeat at position 0"),
    ("+", "nothing to repeat at position 0"),
    ("?", "nothing to repeat at position 0"),
    ("a{3,2}", "min repeat greater than max repeat at position 2"),
    ("a**", "multiple repeat at position 2"),
    ("a*?+", "multiple repeat at position 3"),
    ("\\q", "bad escape \\q at position 0"),
    ("a\\", "bad escape (end of pattern) at position 1"),
    ("(?P<1>a)", "bad character in group name '1' at position 4"),
    (
        "(?P<a>a)(?P<a>b)",
        "redefinition of group name 'a' as group 2; was group 1 at position 12",
    ),
    ("(?P=a)", "unknown group name 'a' at position 4"),
    (
        "(?P<a>(?P=a))",
        "cannot refer to an open group at position 10",
    ),
    (
        "a(?i)",
        "global flags not at the start of the expression at position 1",
    ),
    (
        "(?L)a",
        "bad inline flags: cannot use 'L' flag with a str pattern at position 3",
    ),
    (
        "(?au)a",
        "bad inline flags: flags 'a', 'u' and 'L' are incompatible at position 4",
    ),
    (
        "(?-a:b)",
        "bad inline flags: cannot turn off flags 'a', 'u' and 'L' at position 4",
    ),
    (
        "(?i-i:a)",
        "bad inline flags: flag turned on and off at position 5",
    ),
    (
        "(?t:a)",
        "bad inline flags: cannot turn on global flag at position 3",
    ),
    (
        "(?t)a*",
        "internal: unsupported template operator MAX_REPEAT",
    ),
    ("(?z)", "unknown extension ?z at position 1"),
    ("(?i", "missing -, : or ) at position 3"),
    ("(?-)", "missing flag at position 3"),
    ("(?<=a+)b", "look-behind requires fixed-width pattern"),
    ("(?<=a|bc)d", "look-behind requires fixed-width pattern"),
    ("(?P>a)", "unknown extension ?P> at position 1"),
    ("(?<x>a)", "unknown extension ?<x at position 1"),
    (
        "(?#comment",
        "missing ), unterminated comment at position 0",
    ),
    ("(?(a)b)", "unknown group name 'a' at position 3"),
    ("(?(0)a)", "bad group number at position 3"),
    (
        "(a)(?(1)a|b|c)",
        "conditional backref with more than two branches at position 11",
    ),
    ("(?(1a)x)", "bad character in group name '1a' at position 3"),
    ("\\1", "invalid group reference 1 at position 1"),
    ("(a)\\2", "invalid group reference 2 at position 4"),
    ("(a\\1)", "cannot refer to an open group at position 2"),
    ("[z-a]", "bad character range z-a at position 1"),
    ("[a-\\d]", "bad character range a-\\d at position 1"),
    ("[\\x41-\\x40]", "bad character range \\x-\\x at position 5"),
    ("\\x4", "incomplete escape \\x4 at position 0"),
    ("\\u12", "incomplete escape \\u12 at position 0"),
    ("\\U0011FFFF", "bad escape \\U0011FFFF at position 0"),
    ("\\N", "missing { at position 2"),
    ("\\N{", "missing character name at position 3"),
    ("\\N{}", "missing character name at position 3"),
    (
        "\\400",
        "octal escape value \\400 outside of range 0-0o377 at position 0",
    ),
    (
        "[\\400]",
        "octal escape value \\400 outside of range 0-0o377 at position 1",
    ),
    ("[\\8]", "bad escape \\8 at position 1"),
    ("\\8", "invalid group reference 8 at position 1"),
    ("{3}", "nothing to repeat at position 0"),
    ("^*", "nothing to repeat at position 1"),
    ("\\b*", "nothing to repeat at position 2"),
    ("ab)", "unbalanced parenthesis at position 2"),
    ("(?-i)", "missing : at position 4"),
    ("(?i:", "missing ), unterminated subpattern at position 0"),
    ("\\g<1>", "bad escape \\g at position 0"),
    ("\\k<a>", "bad escape \\k at position 0"),
    ("\\e", "bad escape \\e at position 0"),
    ("\\z", "bad escape \\z at position 0"),
    (
        "a\n(",
        "missing ), unterminated subpattern at position 2 (line 2, column 1)",
    ),
    (
        "ab\ncd\n[x",
        "unterminated character set at position 6 (line 3, column 1)",
    ),
    ("(?x)a{1, 2}**", "multiple repeat at position 12"),
    ("(?P", "unexpected end of pattern at position 3"),
    ("(?", "unexpected end of pattern at position 2"),
    ("(?P<a", "missing >, unterminated name at position 4"),
    ("(?P<>a)", "missing group name at position 4"),
    ("(?(1", "missing ), unterminated name at position 3"),
    (
        "(?i-a:x)",
        "bad inline flags: cannot turn off flags 'a', 'u' and 'L' at position 5",
    ),
    ("[\\d-z]", "bad character range \\d-z at position 1"),
    ("\\A+", "nothing to repeat at position 2"),
    ("(?(99)a)(a)", "invalid group reference 99 at position 3"),
    (
        "(?P<a-b>x)",
        "bad character in group name 'a-b' at position 4",
    ),
];
const EXCEPTIONS: &[(&str, &str)] = &[
    (
        "a{4294967295}",
        "OverflowError('the repetition number is too large')",
    ),
    (
        "a{1,99999999999999999999}",
        "OverflowError('the repetition number is too large')",
    ),
    (
        "(?a)(?u)x",
        "ValueError('ASCII and UNICODE flags are incompatible')",
    ),
];
const MATCHES: &[(&str, &str, bool)] = &[
    ("abc", "abc", true),
    ("abc", "xabcx", true),
    ("abc", "ab", false),
    ("a{", "a{", true),
    ("a{", "a", false),
    ("x{2,", "x{2,", true),
    ("x{,2}y", "y", true),
    ("x{,2}y", "xxy", true),
    ("x{,2}y", "x{,2}y", true),
    ("a{}", "a{}", true),
    ("\\d+", "12", true),
    ("\\d+", "x", false),
    ("\\d+", "٣", true),
    ("\\d+", "²", false),
    ("\\w", "_", true),
    ("\\w", "é", true),
    ("\\w", "²", true),
    ("\\w", "‿", false),
    ("\\w", "́", false),
    ("\\w", "-", false),
    ("\\s", "\u{1c}", true),
    ("\\s", " ", true),
    ("\\s", "\u{200B}", false),
    ("\\s", "x", false),
    ("\\s", "", true),
    ("(?a)\\w", "é", false),
    ("(?a)\\w", "a", true),
    ("(?a)\\s", "\u{1c}", false),
    ("(?a)\\s", "\u{b}", true),
    ("(?a)\\s", " ", true),
    ("(?a)\\d", "٣", false),
    ("(?a)\\d", "3", true),
    ("\\bfoo\\b", "foo", true),
    ("\\bfoo\\b", "a foo.", true),
    ("\\bfoo\\b", "foobar", false),
    ("\\bfoo\\b", "éfoo", false),
    ("\\bfoo\\b", "foó", true),
    ("\\bfoo\\b", "_foo", false),
    ("\\Bo\\B", "foo", true),
    ("\\Bo\\B", "o", false),
    ("\\Bo\\B", "xox", true),
    ("\\B", "", false),
    ("\\B", "a", false),
    ("\\B", " ", true),
    ("\\b", "", false),
    ("\\b", "a", true),
    ("(?a)\\bfoo", "éfoo", true),
    ("(?a)\\bfoo", "_foo", false),
    ("(?i)straße", "STRASSE", false),
    ("(?i)straße", "STRAßE", true),
    ("(?i)straße", "straẞe", true),
    ("(?i)k", "K", true),
    ("(?i)k", "K", true),
    ("(?i)k", "k", true),
    ("(?i)s", "ſ", true),
    ("(?i)s", "S", true),
    ("(?i)i", "İ", true),
    ("(?i)i", "ı", true),
    ("(?i)i", "I", true),
    ("(?i)ı", "I", true),
    ("(?i)ı", "i", true),
    ("(?i)μ", "µ", true),
    ("(?i)μ", "Μ", true),
    ("(?i)[a-z]+", "ABC", true),
    ("(?i)[a-z]+", "ſ", true),
    ("(?i)[a-z]+", "K", true),
    ("(?i)[^k]", "K", false),
    ("(?i)[^k]", "K", false),
    ("(?i)[^k]", "x", true),
    ("(?ai)k", "K", true),
    ("(?ai)k", "K", false),
    ("(?i)[𐐀x]", "𐐀", false),
    ("(?i)[𐐀x]", "X", true),
    ("(?i)𐐀", "𐐨", true),
    ("(?i)[𐐀-𐐁]", "𐐨", true),
    ("(?ai)[À-𐀀]", "µ", true),
    ("(?ai)[À-𐀀]", "A", false),
    ("\\x41\\u00e9\\U0001F600\\0\\101\\n", "Aé😀\u{0}A\n", true),
    ("[\\0-\\x1f]", "\u{9}", true),
    ("[\\0-\\x1f]", " ", false),
    ("a\\Z", "a", true),
    ("a\\Z", "a\n", false),
    ("a$", "a", true),
    ("a$", "ab", false),
    ("^a", "a", true),
    ("^a", "ba", false),
    ("(?m)^b$", "a\nb\nc", true),
    ("(?m)^b$", "ab", false),
    (".", "\n", false),
    (".", "x", true),
    (".", "", false),
    ("(?s).", "\n", true),
    ("(?P<q>[\"\\'])x(?P=q)", "\"x\"", true),
    ("(?P<q>[\"\\'])x(?P=q)", "\"x'", false),
    ("(\\w+) \\1", "hey hey", true),
    ("(\\w+) \\1", "hey you", true),
    ("(a)?(?(1)b|c)", "ab", true),
    ("(a)?(?(1)b|c)", "c", true),
    ("(a)?(?(1)b|c)", "ac", true),
    ("(?:(a)|a)(?(1)x|y)", "ay", true),
    ("(?:(a)|a)(?(1)x|y)", "ax", true),
    ("(?>a+)b", "aab", true),
    ("(?>a|ab)c", "abc", false),
    ("(?>a|ab)c", "ac", true),
    ("a++b", "aab", true),
    ("(?:ab|a)++b", "abab", false),
    ("(?:ab|a)++b", "ab", false),
    ("x*+x", "xxx", false),
    ("(?<=ab)c", "abc", true),
    ("(?<=ab)c", "xbc", false),
    ("(?<!a)b", "ab", false),
    ("(?<!a)b", "cb", true),
    ("foo(?=bar)", "foobar", true),
    ("foo(?=bar)", "foobaz", false),
    ("foo(?!bar)", "foobar", false),
    ("foo(?!bar)", "foobaz", true),
    ("(?x) a b # comment", "ab", true),
    ("(?x) a b # comment", "a b", false),
    ("(?x)[ ]a", " a", true),
    ("(?i:a)b", "Ab", true),
    ("(?i:a)b", "AB", false),
    ("(?-i:a)", "A", false),
    ("(?i)(?-i:a)b", "aB", true),
    ("(?i)(?-i:a)b", "AB", false),
    ("[]a]", "]", true),
    ("[]a]", "a", true),
    ("[^]a]", "]", false),
    ("[^]a]", "b", true),
    ("[a-]", "-", true),
    ("[\\w-]", "-", true),
    ("[\\w-]", "é", true),
    ("[[]", "[", true),
    ("[a&&b]", "&", true),
    ("a|", "", true),
    ("a|", "b", true),
    ("(|a)+", "", true),
    ("(?:)*x", "x", true),
    ("(?=a)*b", "b", true),
    ("(\\b)*a", "a", true),
    ("\\{", "{", true),
    ("\\.", ".", true),
    ("\\.", "x", false),
    ("\\-", "-", true),
    ("é", "é", true),
    ("é", "é", false),
];

#[test]
fn invalid_patterns_fail_with_python_messages() {
    for (pattern, message) in ERRORS {
        assert_eq!(
            compile(pattern).err(),
            Some(CompileError::Invalid((*message).to_string())),
            "pattern {pattern:?}"
        );
    }
}

#[test]
fn other_exceptions_come_back_as_python_reprs() {
    for (pattern, repr) in EXCEPTIONS {
        assert_eq!(
            compile(pattern).err(),
            Some(CompileError::Exception((*repr).to_string())),
            "pattern {pattern:?}"
        );
    }
}

#[test]
fn search_agrees_with_python() {
    for (pattern, haystack, expected) in MATCHES {
        let rx = compile(pattern).unwrap_or_else(|e| panic!("{pattern:?}: {e:?}"));
        assert_eq!(
            rx.search(haystack),
            Ok(*expected),
            "pattern {pattern:?} on {haystack:?}"
        );
    }
}

#[test]
fn nesting_depth_is_bounded() {
    let deep = |n: usize| format!("{}{}", "(".repeat(n), ")".repeat(n));
    assert_eq!(compile(&deep(40)).map(|r| r.search("")), Ok(Ok(true)));
    // Valid for Python; deeper than fancy-regex nests (a deviation).
    assert!(matches!(
        compile(&deep(80)).err(),
        Some(CompileError::Unsupported(_))
    ));
    assert_eq!(
        compile(&deep(491)).err(),
        Some(CompileError::Unsupported(
            "groups nested more than 100 deep are not supported".into()
        ))
    );
    // Python's own error still wins below the bound.
    assert_eq!(
        compile(&"(".repeat(90)).err(),
        Some(CompileError::Invalid(
            "missing ), unterminated subpattern at position 89".into()
        ))
    );
}

#[test]
fn deep_patterns_parse_on_a_small_stack() {
    // The component runs on a 1 MiB stack; debug frames are larger than
    // release ones, so give the test build some slack.
    let handle = std::thread::Builder::new()
        .stack_size(4 << 20)
        .spawn(|| {
            for p in [
                format!("{}a{}", "(?:".repeat(100), ")*".repeat(100)),
                format!("{}a{}", "(?:".repeat(500), ")*".repeat(500)),
                "(?(1)".repeat(300),
            ] {
                let _ = translate(&p);
            }
        })
        .map(|h| h.join().is_ok());
    assert!(matches!(handle, Ok(true)));
}

#[test]
fn named_escapes_are_reported_as_unsupported() {
    assert_eq!(
        compile(r"x\N{EM DASH}").err(),
        Some(CompileError::Unsupported(
            r"\N{EM DASH} named character escapes are not supported at position 1".into()
        ))
    );
    // Python's own syntax errors still come first.
    assert_eq!(
        compile(r"\N{").err(),
        Some(CompileError::Invalid(
            "missing character name at position 3".into()
        ))
    );
}

#[test]
fn only_fancy_constructs_use_the_backtracking_vm() {
    for plain in [
        "abc",
        r"(?i)foo\d+",
        r"^\s*def (\w+)\(",
        "a{2,5}?",
        "[^a-z]+$",
    ] {
        assert!(!compile(plain).is_ok_and(|r| r.uses_vm()), "{plain}");
    }
    for fancy in [r"\bfoo", r"(a)\1", "(?=a)", "(?>a)", "a*+", "(a)?(?(1)b)"] {
        assert!(compile(fancy).is_ok_and(|r| r.uses_vm()), "{fancy}");
    }
}

#[test]
fn prefilter_rejects_lines_before_the_vm() {
    let t = translate(r"\bneedle\b").unwrap_or_else(|e| panic!("{e:?}"));
    assert_eq!(t.prefilter.as_deref(), Some("needle"));
    assert!(t.vm);
}

#[test]
fn scoped_ascii_categories_keep_sres_leading_charset_quirk() {
    // sre filters start positions with the leading set compiled under
    // the global (Unicode) flags, so `Μ` never starts a match.
    let rx = compile(r"(?a:[^\w])").unwrap_or_else(|e| panic!("{e:?}"));
    assert_eq!(rx.search("Μ"), Ok(false));
    assert_eq!(rx.search("-"), Ok(true));
}

#[test]
fn unicode_tables_match_cpython() {
    let word = CharSet::from_table(WORD);
    for (c, expected) in [
        ('_', true),
        ('é', true),
        ('²', true),
        ('٣', true),
        ('\u{301}', false),
        ('\u{203F}', false),
        ('-', false),
        ('\u{30000}', true),
    ] {
        assert_eq!(word.contains(c as u32), expected, "{c:?}");
    }
    assert_eq!(Fold::Unicode.lower('İ' as u32), 'i' as u32);
    assert_eq!(Fold::Unicode.lower('\u{212A}' as u32), 'k' as u32);
    assert_eq!(Fold::Unicode.lower('ẞ' as u32), 'ß' as u32);
    assert_eq!(Fold::Unicode.lower('Σ' as u32), 'σ' as u32);
    assert_eq!(Fold::Unicode.lower('ς' as u32), 'ς' as u32);
    assert_eq!(Fold::Unicode.lower(0x10400), 0x10428);
    assert_eq!(case_map(UPPER, 'ÿ' as u32), 'Ÿ' as u32);
    assert_eq!(Fold::Unicode.fixes('s' as u32), &['ſ' as u32]);
}

#[test]
fn char_set_operations() {
    let a = CharSet::from_ranges(vec![(5, 10), (0, 2), (3, 4), (20, 20)]);
    assert_eq!(a, CharSet(vec![(0, 10), (20, 20)]));
    assert_eq!(a.complement(), CharSet(vec![(11, 19), (21, MAX_CHAR)]));
    assert_eq!(a.complement().complement(), a);
    assert_eq!(
        a.difference(&CharSet(vec![(2, 3)])),
        CharSet(vec![(0, 1), (4, 10), (20, 20)])
    );
}
