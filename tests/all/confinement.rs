//! A guest cannot read, write, list or stat anything outside its preopens.
//!
//! Two layers are tested separately: the raw WASI layer (the `fs_probe`
//! guest issues filesystem calls directly, as a hostile component would),
//! and the tool layer (the file tools refuse with the reference's messages
//! before touching anything).

use crate::common::Fixture;
use serde_json::json;
use std::os::unix::fs::symlink;

fn assert_denied(out: &str, what: &str) {
    assert!(
        out.starts_with("err"),
        "{what}: expected a refusal, got {out:?}"
    );
}

#[test]
fn raw_reads_inside_work() {
    let f = Fixture::new();
    std::fs::write(f.ws().join("in.txt"), "inside").unwrap();
    assert_eq!(f.probe("read", "/workspace/in.txt", ""), "ok inside");
    assert_eq!(
        f.probe("read", "/mnt/memory/notes/policy.md", ""),
        "ok be nice\n".trim_end()
    );
}

#[test]
fn raw_dotdot_escapes_are_denied() {
    let f = Fixture::new();
    for p in [
        "/workspace/../secret.txt",
        "/workspace/../../secret.txt",
        "/workspace/sub/../../secret.txt",
        "/mnt/session/outputs/../../../secret.txt",
        "/mnt/memory/notes/../../secret.txt",
    ] {
        assert_denied(&f.probe("read", p, ""), p);
        assert_denied(&f.probe("stat", p, ""), p);
    }
}

#[test]
fn raw_absolute_host_paths_are_denied() {
    let f = Fixture::new();
    let host_secret = f.base().join("secret.txt");
    let host_ws = f.ws().join("x.txt");
    std::fs::write(&host_ws, "x").unwrap();
    for p in [
        host_secret.to_str().unwrap(),
        host_ws.to_str().unwrap(),
        "/etc/passwd",
        "/proc/self/environ",
    ] {
        assert_denied(&f.probe("read", p, ""), p);
        assert_denied(&f.probe("stat", p, ""), p);
    }
    for dir in ["/", "/mnt", "/mnt/session", "/mnt/memory", "/etc", "/tmp"] {
        assert_denied(&f.probe("list", dir, ""), dir);
    }
    assert_denied(&f.probe("write", "/tmp/planted", "x"), "write /tmp");
    assert!(!std::path::Path::new("/tmp/planted").exists());
}

#[test]
fn raw_host_planted_symlinks_pointing_out_are_denied() {
    let f = Fixture::new();
    let ws = f.ws();
    let secret = f.base().join("secret.txt");
    symlink(&secret, ws.join("abs_link")).unwrap();
    symlink("../../secret.txt", ws.join("rel_link")).unwrap();
    symlink(f.base(), ws.join("dir_link")).unwrap();
    std::fs::create_dir(ws.join("sub")).unwrap();
    symlink("../../../secret.txt", ws.join("sub/deep_link")).unwrap();
    for p in [
        "/workspace/abs_link",
        "/workspace/rel_link",
        "/workspace/dir_link/secret.txt",
        "/workspace/sub/deep_link",
    ] {
        assert_denied(&f.probe("read", p, ""), p);
        assert_denied(&f.probe("write", p, "pwned"), p);
    }
    assert_denied(
        &f.probe("write", "/workspace/dir_link/new.txt", "pwned"),
        "write through dir link",
    );
    assert_denied(
        &f.probe("list", "/workspace/dir_link", ""),
        "list through dir link",
    );
    assert_eq!(std::fs::read_to_string(&secret).unwrap(), "TOP SECRET\n");
    assert!(!f.base().join("new.txt").exists());
}

#[test]
fn raw_guest_created_symlinks_cannot_escape() {
    let f = Fixture::new();
    // An absolute target is refused outright.
    assert_denied(
        &f.probe("symlink", "/workspace/evil_abs", "/etc/passwd"),
        "abs symlink",
    );
    // A relative escaping target may be created (wasmtime allows it), but
    // it can never be followed from inside.
    let _ = f.probe(
        "symlink",
        "/mnt/session/outputs/evil_rel",
        "../../secret.txt",
    );
    assert_denied(
        &f.probe("read", "/mnt/session/outputs/evil_rel", ""),
        "follow evil_rel",
    );
    assert_denied(
        &f.probe("write", "/mnt/session/outputs/evil_rel", "pwned"),
        "write evil_rel",
    );
    assert_eq!(
        std::fs::read_to_string(f.base().join("secret.txt")).unwrap(),
        "TOP SECRET\n"
    );
    // The tools refuse it with the reference's message.
    let r = f.tool(
        "read",
        json!({"file_path": "/mnt/session/outputs/evil_rel"}),
    );
    assert!(r.is_error);
    assert!(
        r.text_content()
            .contains("is outside the session's working directory"),
        "{r:?}"
    );
}

#[test]
fn raw_hard_links_cannot_escape() {
    let f = Fixture::new();
    std::fs::write(f.ws().join("a.txt"), "a").unwrap();
    assert_denied(
        &f.probe("hardlink", "/workspace/s_link", "/workspace/../secret.txt"),
        "hardlink to outside",
    );
    assert_denied(
        &f.probe("hardlink", "/workspace/../s_link", "/workspace/a.txt"),
        "hardlink placed outside",
    );
    assert!(!f.ws().join("s_link").exists());
    assert!(!f.base().join("root/s_link").exists());
    // A read-only store's file must not become writable through a link
    // placed in a writable mount.
    let linked = f.probe(
        "hardlink",
        "/mnt/memory/scratch/p_link",
        "/mnt/memory/notes/policy.md",
    );
    assert_denied(&linked, "hardlink out of a read-only store");
    assert_eq!(
        std::fs::read_to_string(f.base().join("notes/policy.md")).unwrap(),
        "be nice\n"
    );
}

#[test]
fn raw_rename_out_is_denied() {
    let f = Fixture::new();
    std::fs::write(f.ws().join("a.txt"), "a").unwrap();
    assert_denied(
        &f.probe("rename", "/workspace/a.txt", "/workspace/../moved.txt"),
        "rename out",
    );
    assert!(!f.base().join("root/moved.txt").exists());
    assert!(f.ws().join("a.txt").exists());
}

#[test]
fn raw_read_only_store_is_read_only() {
    let f = Fixture::new();
    assert_denied(
        &f.probe("write", "/mnt/memory/notes/new.md", "x"),
        "create in ro store",
    );
    assert_denied(
        &f.probe("append", "/mnt/memory/notes/policy.md", "x"),
        "append in ro store",
    );
    assert_denied(
        &f.probe("remove", "/mnt/memory/notes/policy.md", ""),
        "remove in ro store",
    );
    assert_denied(
        &f.probe("mkdir", "/mnt/memory/notes/d", ""),
        "mkdir in ro store",
    );
    assert_eq!(
        std::fs::read_to_string(f.base().join("notes/policy.md")).unwrap(),
        "be nice\n"
    );
    assert_eq!(
        f.probe("write", "/mnt/memory/scratch/new.md", "x"),
        "ok written"
    );
}

#[test]
fn raw_guest_sees_no_environment() {
    let f = Fixture::new();
    assert_eq!(f.probe("env", "", ""), "ok");
}

#[test]
fn tools_refuse_outside_paths_with_reference_messages() {
    let f = Fixture::new();
    let secret = f.base().join("secret.txt");
    symlink(&secret, f.ws().join("abs_link")).unwrap();
    let outside = "is outside the session's working directory and its other permitted directories";
    for (tool, input) in [
        ("read", json!({"file_path": "../secret.txt"})),
        ("read", json!({"file_path": "/etc/passwd"})),
        ("read", json!({"file_path": "abs_link"})),
        ("write", json!({"file_path": "../x.txt", "content": "x"})),
        (
            "edit",
            json!({"file_path": "/mnt/memory/../secret.txt", "old_string": "T", "new_string": "t"}),
        ),
        ("glob", json!({"pattern": "*", "path": "/mnt"})),
        ("grep", json!({"pattern": "SECRET", "path": "/"})),
    ] {
        let r = f.tool(tool, input.clone());
        assert!(r.is_error, "{tool} {input}: {r:?}");
        assert!(
            r.text_content().starts_with(&format!("{tool}: path ")),
            "{tool} {input}: {r:?}"
        );
        assert!(r.text_content().contains(outside), "{tool} {input}: {r:?}");
    }
    let r = f.tool(
        "write",
        json!({"file_path": "/mnt/memory/notes/x.md", "content": "x"}),
    );
    assert_eq!(
        r.text_content(),
        "write: /mnt/memory/notes/x.md is inside read-only directory /mnt/memory/notes"
    );
    assert!(r.is_error);
    assert_eq!(std::fs::read_to_string(&secret).unwrap(), "TOP SECRET\n");
}
