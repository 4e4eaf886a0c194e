//! Name rules: archive member names and the skill directory name.
//!
//! # Member names (`_skills.py:46-60`)
//!
//! A member name is cut at its first NUL (as Python's `zipfile` and `tarfile` do), backslashes
//! become `/`, and the result is refused outright when it is absolute (starts with `/`) or has
//! a `..` component: such names only appear in malicious archives, and one of them rejects the
//! whole archive, extracted member or not. Empty and `.` components are dropped, so `./a//b`
//! is `a/b`, and a name that reduces to nothing (`./`) is skipped.
//!
//! # Wrapper directory (`_skills.py:63-90`)
//!
//! Skill bundles are wrapped in one directory named after the skill (`pdf/SKILL.md`). When
//! every extracted member lies under one common top directory, and at least one lies strictly
//! below it, that directory is stripped.
//!
//! # Skill directory name (`_skills.py:242-253`)
//!
//! `basename(version.name.strip())`, falling back to the skill id when that is empty, `.` or
//! `..`. The reference then resolves the path and skips the skill when it escapes
//! `<workdir>/skills`; here the final name must be one plain path component (hardening: a skill
//! id such as `a/b`, which the reference would install as a nested directory, is refused too).

use std::collections::BTreeSet;

/// One normalised, confined member path: its components, none empty, `.` or `..`.
pub(crate) type Components = Vec<Vec<u8>>;

/// Why a member name was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum NameRefusal {
    Absolute,
    ParentComponent,
}

/// Normalises a raw member name into confined components (empty for "nothing", e.g. `./`).
pub(crate) fn safe_member_name(raw: &[u8]) -> Result<Components, NameRefusal> {
    let raw = match raw.iter().position(|b| *b == 0) {
        Some(nul) => &raw[..nul],
        None => raw,
    };
    let norm: Vec<u8> = raw
        .iter()
        .map(|b| if *b == b'\\' { b'/' } else { *b })
        .collect();
    if norm.first() == Some(&b'/') {
        return Err(NameRefusal::Absolute);
    }
    let parts: Components = norm
        .split(|b| *b == b'/')
        .filter(|p| !p.is_empty() && *p != b".")
        .map(<[u8]>::to_vec)
        .collect();
    if parts.iter().any(|p| p == b"..") {
        return Err(NameRefusal::ParentComponent);
    }
    Ok(parts)
}

/// The single top-level directory shared by every (extracted) member, when there is one and at
/// least one member lies below it.
pub(crate) fn archive_top_dir<'a>(
    names: impl IntoIterator<Item = &'a Components>,
) -> Option<Vec<u8>> {
    let mut tops: BTreeSet<&[u8]> = BTreeSet::new();
    let mut has_nested = false;
    for parts in names {
        let Some(first) = parts.first() else {
            continue;
        };
        tops.insert(first);
        if parts.len() > 1 {
            has_nested = true;
        }
    }
    if tops.len() == 1 && has_nested {
        tops.into_iter().next().map(<[u8]>::to_vec)
    } else {
        None
    }
}

/// Drops the leading `top` component (if any); an empty result is the wrapper entry itself.
pub(crate) fn strip_top<'a>(parts: &'a [Vec<u8>], top: Option<&[u8]>) -> &'a [Vec<u8>] {
    match (top, parts.first()) {
        (Some(top), Some(first)) if first.as_slice() == top => &parts[1..],
        _ => parts,
    }
}

/// The error for a skill whose directory name would not be one plain path component.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("skill name {name:?} (skill_id {skill_id:?}) escapes the skills dir")]
pub struct NameEscapes {
    /// The version's `name` as the API returned it.
    pub name: String,
    /// The skill id used as the fallback.
    pub skill_id: String,
}

/// The directory a skill is installed under, inside `<workdir>/skills/`.
///
/// `basename(version_name.strip())`, or `skill_id` when that is empty, `.` or `..`; the result
/// must be one plain component (no `/`, no NUL, not `.` or `..`).
pub fn skill_dir_name(version_name: &str, skill_id: &str) -> Result<String, NameEscapes> {
    // Python's `str.strip()` (U+001C..U+001F count as whitespace there, not in Rust).
    let trimmed = wasm_sandbox_pycompat::text::strip(version_name);
    let base = trimmed.rsplit('/').next().unwrap_or(trimmed);
    let dirname = if matches!(base, "" | "." | "..") {
        skill_id
    } else {
        base
    };
    if matches!(dirname, "" | "." | "..") || dirname.contains('/') || dirname.contains('\0') {
        return Err(NameEscapes {
            name: version_name.to_owned(),
            skill_id: skill_id.to_owned(),
        });
    }
    Ok(dirname.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn comps(s: &str) -> Components {
        safe_member_name(s.as_bytes()).unwrap()
    }

    #[test]
    fn member_names_normalise_like_the_reference() {
        assert_eq!(comps("a/b"), vec![b"a".to_vec(), b"b".to_vec()]);
        assert_eq!(comps("./a//./b/"), vec![b"a".to_vec(), b"b".to_vec()]);
        assert_eq!(comps("a\\b"), vec![b"a".to_vec(), b"b".to_vec()]);
        assert!(comps("./").is_empty());
        assert!(comps("").is_empty());
        // Cut at the first NUL, as zipfile/tarfile do.
        assert_eq!(comps("a\0/../../x"), vec![b"a".to_vec()]);
        // `..` inside a name is fine; only a whole `..` component is not.
        assert_eq!(comps("a..b/..c"), vec![b"a..b".to_vec(), b"..c".to_vec()]);
    }

    #[test]
    fn traversal_and_absolute_names_are_refused() {
        assert_eq!(safe_member_name(b"/etc/passwd"), Err(NameRefusal::Absolute));
        assert_eq!(
            safe_member_name(b"\\etc\\passwd"),
            Err(NameRefusal::Absolute)
        );
        assert_eq!(safe_member_name(b"//x"), Err(NameRefusal::Absolute));
        assert_eq!(safe_member_name(b"../x"), Err(NameRefusal::ParentComponent));
        assert_eq!(
            safe_member_name(b"a/../../x"),
            Err(NameRefusal::ParentComponent)
        );
        assert_eq!(
            safe_member_name(b"a\\..\\x"),
            Err(NameRefusal::ParentComponent)
        );
        assert_eq!(safe_member_name(b"a/.."), Err(NameRefusal::ParentComponent));
    }

    #[test]
    fn wrapper_dir_needs_one_top_and_a_nested_member() {
        let wrapped = [
            comps("pdf"),
            comps("pdf/SKILL.md"),
            comps("pdf/scripts/run.sh"),
        ];
        assert_eq!(archive_top_dir(&wrapped), Some(b"pdf".to_vec()));
        let flat = [comps("SKILL.md"), comps("scripts/run.sh")];
        assert_eq!(archive_top_dir(&flat), None);
        let single_file = [comps("SKILL.md")];
        assert_eq!(archive_top_dir(&single_file), None);
        let only_dir = [comps("pdf/")];
        assert_eq!(archive_top_dir(&only_dir), None);
        let empty_names = [comps("./"), comps("pdf/x")];
        assert_eq!(archive_top_dir(&empty_names), Some(b"pdf".to_vec()));
    }

    #[test]
    fn strip_top_removes_only_the_wrapper() {
        let p = comps("pdf/scripts/run.sh");
        assert_eq!(strip_top(&p, Some(b"pdf")), &p[1..]);
        assert_eq!(strip_top(&p, None), &p[..]);
        assert!(strip_top(&comps("pdf"), Some(b"pdf")).is_empty());
    }

    #[test]
    fn skill_dir_name_follows_the_reference() {
        assert_eq!(skill_dir_name("pdf", "skill_1").unwrap(), "pdf");
        assert_eq!(skill_dir_name("  pdf \n", "skill_1").unwrap(), "pdf");
        assert_eq!(skill_dir_name("\u{1f}pdf\u{1c}", "skill_1").unwrap(), "pdf");
        assert_eq!(skill_dir_name("a/b/pdf", "skill_1").unwrap(), "pdf");
        assert_eq!(skill_dir_name("../../etc", "skill_1").unwrap(), "etc");
        for fallback in ["", "  ", ".", "..", "pdf/", "a/..", "/"] {
            assert_eq!(
                skill_dir_name(fallback, "skill_1").unwrap(),
                "skill_1",
                "{fallback:?}"
            );
        }
        assert!(skill_dir_name("..", "..").is_err());
        assert!(skill_dir_name("", "a/b").is_err());
        assert!(skill_dir_name("", "").is_err());
        assert!(skill_dir_name("a\0b", "x").is_err());
    }
}
