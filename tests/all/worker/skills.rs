//! Skills and memory stores end to end: skills (zip and tar.gz, WASI components run from bash
//! with `wasm-run`) installed in the workspace and removed after; memory stores mounted per
//! access and synced back, and refused without a sessions token.

use super::*;

fn skill_zip(files: &[(&str, &str, u32)]) -> Vec<u8> {
    use std::io::Write as _;
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for (name, body, mode) in files {
        let opts = zip::write::SimpleFileOptions::default().unix_permissions(*mode);
        zip.start_file(*name, opts).unwrap();
        zip.write_all(body.as_bytes()).unwrap();
    }
    zip.finish().unwrap().into_inner()
}

/// A tar.gz whose member names are written raw (so `../x` can be put in).
fn skill_tar_gz(files: &[(&str, &str, u32)]) -> Vec<u8> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let mut tar = tar::Builder::new(gz);
    for (name, body, mode) in files {
        let mut h = tar::Header::new_gnu();
        let raw = &mut h.as_gnu_mut().unwrap().name;
        raw[..name.len()].copy_from_slice(name.as_bytes());
        h.set_size(body.len() as u64);
        h.set_mode(*mode);
        h.set_entry_type(tar::EntryType::Regular);
        h.set_cksum();
        tar.append(&h, body.as_bytes()).unwrap();
    }
    tar.into_inner().unwrap().finish().unwrap()
}

fn find_named(dir: &Path, name: &str) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if e.file_name() == name {
                out.push(p.clone());
            }
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                out.extend(find_named(&p, name));
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skills_are_installed_in_the_workspace_and_removed_after() {
    let fake = fake().await;
    let dir = tempfile::tempdir().unwrap();
    fake.add_skill_version(
        "skill_zip01",
        "zip-skill",
        skill_zip(&[
            (
                "SKILL.md",
                "---\nname: zip-skill\ndescription: Zip.\n---\nzip skill body\n",
                0o644,
            ),
            ("scripts/tool.py", "print('zip')\n", 0o644),
        ]),
    );
    // An older version, then the one `latest` must resolve to.
    fake.add_skill_version(
        "skill_tar01",
        "tar-skill",
        skill_tar_gz(&[("tar-skill/SKILL.md", "stale version\n", 0o644)]),
    );
    fake.add_skill_version(
        "skill_tar01",
        "tar-skill",
        skill_tar_gz(&[
            (
                "tar-skill/SKILL.md",
                "---\nname: tar-skill\ndescription: Tar.\n---\ntar skill body\n",
                0o644,
            ),
            ("tar-skill/scripts/run.sh", "#!/bin/sh\necho run\n", 0o755),
        ]),
    );
    fake.add_skill_version(
        "skill_evil01",
        "evil-skill",
        skill_tar_gz(&[
            ("evil-skill/SKILL.md", "evil\n", 0o644),
            ("../x", "escaped\n", 0o644),
        ]),
    );
    let (work_id, session_id) = fake.enqueue_session(scenario(json!({
        "name": "skills",
        "session": {"skills": [
            {"type": "custom", "skill_id": "skill_zip01", "version": "latest"},
            {"type": "custom", "skill_id": "skill_missing01", "version": "latest"},
            {"type": "custom", "skill_id": "skill_evil01", "version": "latest"},
            {"type": "custom", "skill_id": "skill_tar01", "version": "latest"}
        ]},
        "prompt": "Use the skills.",
        "steps": [
            {"tool_use": {"label": "zip", "name": "read",
                          "input": {"file_path": "/workspace/skills/zip-skill/SKILL.md"},
                          "expect": {"is_error": false, "contains": ["zip skill body"]}}},
            {"tool_use": {"label": "tar", "name": "read",
                          "input": {"file_path": "/workspace/skills/tar-skill/SKILL.md"},
                          "expect": {"is_error": false, "contains": ["tar skill body"]}}},
            {"tool_use": {"label": "tree", "name": "bash",
                          "input": {"command": "cd /workspace/skills && ls -A | tr '\\n' ' '; echo; test -f zip-skill/scripts/tool.py && echo zip-tree-ok; test -x tar-skill/scripts/run.sh && echo tar-exec-ok; test -e tar-skill/tar-skill || echo wrapper-stripped; test -e evil-skill || echo no-evil; test -e x || test -e ../x || echo no-x"},
                          "expect": {"is_error": false,
                                     "contains": ["zip-tree-ok", "tar-exec-ok", "wrapper-stripped", "no-evil", "no-x"]}}},
            {"idle": {"stop_reason": "end_turn"}},
            "terminate"
        ]
    })));
    finished(start(config(&fake, dir.path()), core_provider()))
        .await
        .unwrap();

    let report = fake.scenario_report(&session_id);
    assert!(report.is_ok(), "{report:?}");
    let results = accepted_results(&fake, &session_id);
    let labels: Vec<&str> = results.iter().map(|(l, _)| l.as_str()).collect();
    assert_eq!(labels, ["zip", "tar", "tree"]);
    let tree = &results[2].1;
    // Exactly the two good skills (plus no leftover work directories).
    assert!(
        tree.lines().next().unwrap().trim() == "tar-skill zip-skill"
            || tree.lines().next().unwrap().trim() == "zip-skill tar-skill",
        "{tree}"
    );

    // Skill calls: no beta header, the item's sessions token, binary Accept on content,
    // `latest` resolved before the content is fetched by concrete id.
    let reqs = fake.requests();
    let skill_reqs: Vec<_> = reqs
        .iter()
        .filter(|r| {
            matches!(
                r.endpoint,
                Some(Endpoint::SkillVersion | Endpoint::SkillContent)
            )
        })
        .collect();
    assert!(!skill_reqs.is_empty());
    for r in &skill_reqs {
        assert_eq!(r.header("anthropic-beta"), None, "{}", r.path);
        assert!(item_token(&work_id, 1)(&r.credential), "{}", r.path);
        if r.endpoint == Some(Endpoint::SkillContent) {
            assert_eq!(r.header("accept"), Some("application/binary"));
            assert!(!r.path.contains("latest"), "{}", r.path);
        } else {
            assert!(r.path.ends_with("/versions/latest"), "{}", r.path);
        }
    }
    let contents: Vec<&str> = skill_reqs
        .iter()
        .filter(|r| r.endpoint == Some(Endpoint::SkillContent))
        .map(|r| r.path.as_str())
        .collect();
    assert_eq!(contents.len(), 3, "{contents:?}"); // the missing skill has no content call
    // The skills were in place before the first tool ran (the event stream itself is
    // attached while they download).
    let seq = endpoints(&fake);
    let last_skill = seq
        .iter()
        .rposition(|e| *e == Endpoint::SkillContent)
        .unwrap();
    let first_result = seq.iter().position(|e| *e == Endpoint::EventsSend).unwrap();
    assert!(last_skill < first_result);

    assert!(
        find_named(dir.path(), "x").is_empty(),
        "an archive member escaped"
    );
    // Session directories are `<work_id>.<claim>`.
    assert!(
        !std::fs::read_dir(dir.path().join("sessions"))
            .into_iter()
            .flatten()
            .flatten()
            .any(|e| e
                .file_name()
                .to_string_lossy()
                .starts_with(&format!("{work_id}."))),
        "session directory (and its skills) left behind"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_stores_are_mounted_read_only_per_access_and_synced_back() {
    let fake = fake().await;
    let dir = tempfile::tempdir().unwrap();
    let (work_id, session_id) = fake.enqueue_session(scenario(json!({
        "name": "memory",
        "memory_stores": [
            {"name": "notes", "memories": {"/a.md": "hello notes\n"}},
            {"name": "prefs", "access": "read_only", "memories": {"/p.md": "pref value\n"}}
        ],
        "prompt": "Use memory.",
        "steps": [
            {"tool_use": {"label": "ro-read", "name": "read",
                          "input": {"file_path": "/mnt/memory/prefs/p.md"},
                          "expect": {"is_error": false, "contains": ["pref value"]}}},
            {"tool_use": {"label": "ro-write", "name": "write",
                          "input": {"file_path": "/mnt/memory/prefs/new.md", "content": "no"},
                          "expect": {"is_error": true}}},
            {"tool_use": {"label": "ro-edit", "name": "edit",
                          "input": {"file_path": "/mnt/memory/prefs/p.md",
                                    "old_string": "pref", "new_string": "changed"},
                          "expect": {"is_error": true}}},
            {"tool_use": {"label": "ro-bash", "name": "bash",
                          "input": {"command": "(echo hi > /mnt/memory/prefs/b.md) 2>/dev/null && echo ro-WROTE || echo ro-refused; (echo x >> /mnt/memory/prefs/p.md) 2>/dev/null || echo append-refused; cat /mnt/memory/notes/a.md"},
                          "expect": {"is_error": false,
                                     "contains": ["ro-refused", "append-refused", "hello notes"]}}},
            {"tool_use": {"label": "rw-write", "name": "write",
                          "input": {"file_path": "/mnt/memory/notes/new.md", "content": "fresh memory\n"},
                          "expect": {"is_error": false}}},
            {"tool_use": {"label": "rw-bash", "name": "bash",
                          "input": {"command": "echo more >> /mnt/memory/notes/a.md && echo appended"},
                          "expect": {"is_error": false, "contains": ["appended"]}}},
            {"idle": {"stop_reason": "end_turn"}},
            "terminate"
        ]
    })));
    let stores = fake.session_memory_stores(&session_id);
    let store = |name: &str| {
        stores
            .iter()
            .find(|(_, n)| n == name)
            .map(|(id, _)| id.clone())
            .unwrap()
    };
    let (notes, prefs) = (store("notes"), store("prefs"));
    finished(start(config(&fake, dir.path()), core_provider()))
        .await
        .unwrap();

    let report = fake.scenario_report(&session_id);
    assert!(report.is_ok(), "{report:?}");
    assert!(
        !accepted_results(&fake, &session_id)[3]
            .1
            .contains("ro-WROTE")
    );

    // The final sync at the clean end pushed the read-write store's changes...
    let notes_now = fake.memories(&notes);
    assert!(
        notes_now.contains(&("/new.md".to_owned(), "fresh memory\n".to_owned())),
        "{notes_now:?}"
    );
    assert!(
        notes_now.contains(&("/a.md".to_owned(), "hello notes\nmore\n".to_owned())),
        "{notes_now:?}"
    );
    // ...and nothing reached the read-only one.
    assert_eq!(
        fake.memories(&prefs),
        [("/p.md".to_owned(), "pref value\n".to_owned())]
    );
    let reqs = fake.requests();
    let mem_reqs: Vec<_> = reqs
        .iter()
        .filter(|r| r.path.starts_with("/v1/memory_stores/"))
        .collect();
    assert!(
        mem_reqs
            .iter()
            .any(|r| r.method == "POST" && r.path.contains(&notes))
    );
    for r in &mem_reqs {
        assert!(item_token(&work_id, 1)(&r.credential), "{}", r.path);
        assert_eq!(r.header("anthropic-beta"), Some("agent-memory-2026-07-22"));
        assert!(
            !(r.method != "GET" && r.path.contains(&prefs)),
            "{} {}",
            r.method,
            r.path
        );
    }
    // Session directories are `<work_id>.<claim>`.
    assert!(
        !std::fs::read_dir(dir.path().join("sessions"))
            .into_iter()
            .flatten()
            .flatten()
            .any(|e| e
                .file_name()
                .to_string_lossy()
                .starts_with(&format!("{work_id}."))),
        "session directory (and its memory) left behind"
    );
}

fn skill_zip_bytes(files: &[(&str, &[u8])]) -> Vec<u8> {
    use std::io::Write as _;
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for (name, body) in files {
        zip.start_file(*name, zip::write::SimpleFileOptions::default())
            .unwrap();
        zip.write_all(body).unwrap();
    }
    zip.finish().unwrap().into_inner()
}

/// Skills that ship WASI components (the Rust and the componentize-py example),
/// served by the control plane, installed per session and run by the agent from
/// bash with `wasm-run`: they read `/workspace` but not the host.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(
    clippy::await_holding_lock,
    reason = "the guard only orders this test with the blocking wasm_run tests, which count compilations; no task here takes it"
)]
async fn skill_components_run_from_bash_end_to_end() {
    let _serial = crate::wasm_run::serial();
    let fake = fake().await;
    let dir = tempfile::tempdir().unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let rust_md = std::fs::read(root.join("examples/skills/rust-wordcount/SKILL.md")).unwrap();
    let py_md = std::fs::read(root.join("examples/skills/py-wordfreq/SKILL.md")).unwrap();
    let wordcount = crate::wasm_run::wordcount();
    let wordfreq = crate::wasm_run::wordfreq();
    fake.add_skill_version(
        "skill_rustwc01",
        "rust-wordcount",
        skill_zip_bytes(&[
            ("rust-wordcount/SKILL.md", &rust_md),
            ("rust-wordcount/wordcount.wasm", &wordcount),
        ]),
    );
    fake.add_skill_version(
        "skill_pywf01",
        "py-wordfreq",
        skill_zip_bytes(&[("SKILL.md", &py_md), ("wordfreq.wasm", &wordfreq)]),
    );
    let (_work_id, session_id) = fake.enqueue_session(scenario(json!({
        "name": "skill-components",
        "session": {"skills": [
            {"type": "custom", "skill_id": "skill_rustwc01", "version": "latest"},
            {"type": "custom", "skill_id": "skill_pywf01", "version": "latest"}
        ]},
        "prompt": "Count the words.",
        "steps": [
            {"tool_use": {"label": "write", "name": "write",
                          "input": {"file_path": "/workspace/notes.txt", "content": "red green red\nblue red\n"},
                          "expect": {"is_error": false}}},
            {"tool_use": {"label": "rust", "name": "bash",
                          "input": {"command": "wasm-run skills/rust-wordcount/wordcount.wasm --top 1 notes.txt"},
                          "expect": {"is_error": false, "contains": ["2 5 23 notes.txt", "3 red"]}}},
            {"tool_use": {"label": "python", "name": "bash",
                          "input": {"command": "wasm-run skills/py-wordfreq/wordfreq.wasm --top 1 /workspace/notes.txt"},
                          "expect": {"is_error": false,
                                     "contains": ["{\"files\": {\"/workspace/notes.txt\": {\"lines\": 2, \"words\": 5}}, \"top\": [[\"red\", 3]]}"]}}},
            {"tool_use": {"label": "host", "name": "bash",
                          "input": {"command": "wasm-run skills/rust-wordcount/wordcount.wasm /etc/hostname; echo rc=$?; wasm-run skills/py-wordfreq/wordfreq.wasm /etc/hostname; echo rc=$?"},
                          "expect": {"contains": ["wordcount: /etc/hostname: ", "wordfreq: /etc/hostname: No such file or directory", "rc=1"]}}},
            {"idle": {"stop_reason": "end_turn"}},
            "terminate"
        ]
    })));
    finished(start(config(&fake, dir.path()), core_provider()))
        .await
        .unwrap();
    let report = fake.scenario_report(&session_id);
    assert!(report.is_ok(), "{report:?}");
    let results = accepted_results(&fake, &session_id);
    let labels: Vec<&str> = results.iter().map(|(l, _)| l.as_str()).collect();
    assert_eq!(labels, ["write", "rust", "python", "host"]);
    assert_eq!(results[1].1, "2 5 23 notes.txt\n3 red");
}

/// As in the reference: an item whose session has memory stores but whose secret
/// carries no sessions token fails (force-stopped, no tool run) instead of running
/// the agent without its memories.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_stores_without_a_sessions_token_fail_the_item() {
    let fake = FakeControlPlane::start(FakeConfig {
        lease_ttl_seconds: 3,
        mint_secrets: false,
        ..FakeConfig::default()
    })
    .await
    .expect("fake control plane");
    let dir = tempfile::tempdir().unwrap();
    let (work_id, session_id) = fake.enqueue_session(scenario(json!({
        "name": "memory-no-token",
        "memory_stores": [{"name": "notes", "memories": {"/a.md": "hello\n"}}],
        "prompt": "Use memory.",
        "steps": [
            {"tool_use": {"label": "read", "name": "read",
                          "input": {"file_path": "/mnt/memory/notes/a.md"}}},
            {"idle": {"stop_reason": "end_turn"}},
            "terminate"
        ]
    })));
    finished(start(config(&fake, dir.path()), core_provider()))
        .await
        .unwrap();
    assert!(fake.tool_results(&session_id).is_empty());
    let stops: Vec<_> = fake
        .stops()
        .into_iter()
        .filter(|s| s.work_id == work_id)
        .collect();
    assert!(stops.iter().any(|s| s.force), "{stops:?}");
    assert!(
        !fake.requests().iter().any(|r| r.path.contains("memor")),
        "no memory endpoint is called without a token"
    );
}
