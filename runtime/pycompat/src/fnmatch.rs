//! CPython 3.12's `fnmatch.translate`: a shell pattern as a Python `re`
//! pattern (compile it with [`crate::re::compile`]).

enum Piece {
    Star,
    Text(String),
}

/// `re.escape` of one character (3.12's `_special_chars_map`).
fn re_escape(c: char, out: &mut String) {
    if "()[]{}?*+-|^$\\.&~# \t\n\r\u{b}\u{c}".contains(c) {
        out.push('\\');
    }
    out.push(c);
}

/// `fnmatch.translate(pat)`. The error is the `repr` of the exception Python
/// would raise (`IndexError('string index out of range')` from the range
/// handling of a class).
pub fn translate(pat: &str) -> Result<String, String> {
    let index_error = || "IndexError('string index out of range')".to_string();
    let chars: Vec<char> = pat.chars().collect();
    let n = chars.len();
    let text = |a: usize, b: usize| -> String { chars[a..b.max(a)].iter().collect() };
    let mut res: Vec<Piece> = Vec::new();
    let mut i = 0;
    while i < n {
        let c = chars[i];
        i += 1;
        match c {
            '*' => {
                if !matches!(res.last(), Some(Piece::Star)) {
                    res.push(Piece::Star);
                }
            }
            '?' => res.push(Piece::Text(".".into())),
            '[' => {
                let mut j = i;
                if j < n && chars[j] == '!' {
                    j += 1;
                }
                if j < n && chars[j] == ']' {
                    j += 1;
                }
                while j < n && chars[j] != ']' {
                    j += 1;
                }
                if j >= n {
                    res.push(Piece::Text("\\[".into()));
                    continue;
                }
                let mut stuff = if !chars[i..j].contains(&'-') {
                    text(i, j).replace('\\', "\\\\")
                } else {
                    let mut chunks: Vec<String> = Vec::new();
                    let mut k = if chars[i] == '!' { i + 2 } else { i + 1 };
                    while let Some(x) = (k..j).find(|&x| chars[x] == '-') {
                        chunks.push(text(i, x));
                        i = x + 1;
                        k = x + 3;
                    }
                    let chunk = text(i, j);
                    if !chunk.is_empty() {
                        chunks.push(chunk);
                    } else if let Some(last) = chunks.last_mut() {
                        last.push('-');
                    } else {
                        return Err(index_error());
                    }
                    // Remove empty ranges -- invalid in RE.
                    for k in (1..chunks.len()).rev() {
                        let prev_last = chunks[k - 1].chars().last().ok_or_else(index_error)?;
                        let next_first = chunks[k].chars().next().ok_or_else(index_error)?;
                        if prev_last > next_first {
                            let mut merged: String = {
                                let mut p = chunks[k - 1].clone();
                                p.pop();
                                p
                            };
                            merged.extend(chunks[k].chars().skip(1));
                            chunks[k - 1] = merged;
                            chunks.remove(k);
                        }
                    }
                    chunks
                        .iter()
                        .map(|s| s.replace('\\', "\\\\").replace('-', "\\-"))
                        .collect::<Vec<_>>()
                        .join("-")
                };
                // Escape set operations (&&, ~~ and ||).
                let mut escaped = String::with_capacity(stuff.len());
                for ch in stuff.chars() {
                    if matches!(ch, '&' | '~' | '|') {
                        escaped.push('\\');
                    }
                    escaped.push(ch);
                }
                stuff = escaped;
                i = j + 1;
                if stuff.is_empty() {
                    res.push(Piece::Text("(?!)".into()));
                } else if stuff == "!" {
                    res.push(Piece::Text(".".into()));
                } else {
                    if let Some(rest) = stuff.strip_prefix('!') {
                        stuff = format!("^{rest}");
                    } else if stuff.starts_with(['^', '[']) {
                        stuff = format!("\\{stuff}");
                    }
                    res.push(Piece::Text(format!("[{stuff}]")));
                }
            }
            _ => {
                let mut s = String::new();
                re_escape(c, &mut s);
                res.push(Piece::Text(s));
            }
        }
    }
    // Deal with STARs.
    let mut out = String::new();
    let mut it = res.into_iter().peekable();
    while let Some(Piece::Text(t)) = it.next_if(|p| matches!(p, Piece::Text(_))) {
        out.push_str(&t);
    }
    while it.next().is_some() {
        // The piece just taken was a STAR.
        if it.peek().is_none() {
            out.push_str(".*");
            break;
        }
        let mut fixed = String::new();
        while let Some(Piece::Text(t)) = it.next_if(|p| matches!(p, Piece::Text(_))) {
            fixed.push_str(&t);
        }
        if it.peek().is_none() {
            out.push_str(".*");
            out.push_str(&fixed);
        } else {
            out.push_str("(?>.*?");
            out.push_str(&fixed);
            out.push(')');
        }
    }
    Ok(format!("(?s:{out})\\Z"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `fnmatch.translate` outputs from CPython 3.12.1.
    const FNMATCH: &[(&str, &str)] = &[
        ("*", "(?s:.*)\\Z"),
        ("*.py", "(?s:.*\\.py)\\Z"),
        ("a*b*c", "(?s:a(?>.*?b).*c)\\Z"),
        ("?", "(?s:.)\\Z"),
        ("[ab]", "(?s:[ab])\\Z"),
        ("[!ab]", "(?s:[^ab])\\Z"),
        ("[]]", "(?s:[]])\\Z"),
        ("[!]]", "(?s:[^]])\\Z"),
        ("[a-]", "(?s:[a\\-])\\Z"),
        ("[z-a]", "(?s:(?!))\\Z"),
        ("[!]", "(?s:\\[!\\])\\Z"),
        ("[", "(?s:\\[)\\Z"),
        ("x[", "(?s:x\\[)\\Z"),
        ("[a-c-e]", "(?s:[a-c\\-e])\\Z"),
        ("a\\b", "(?s:a\\\\b)\\Z"),
        ("[\\]", "(?s:[\\\\])\\Z"),
        ("[&~|]", "(?s:[\\&\\~\\|])\\Z"),
        ("[^x]", "(?s:[\\^x])\\Z"),
        ("**", "(?s:.*)\\Z"),
        ("é*", "(?s:é.*)\\Z"),
        (".*", "(?s:\\..*)\\Z"),
        ("[a-c-e-g]", "(?s:[a-c\\-e-g])\\Z"),
        ("*a*", "(?s:(?>.*?a).*)\\Z"),
        ("a*", "(?s:a.*)\\Z"),
        ("*a", "(?s:.*a)\\Z"),
        ("[--0]", "(?s:[\\--0])\\Z"),
    ];

    #[test]
    fn fnmatch_translate_matches_cpython() {
        for (pattern, expected) in FNMATCH {
            assert_eq!(
                translate(pattern).ok().as_deref(),
                Some(*expected),
                "{pattern:?}"
            );
        }
    }
}
