//! Memory-store mount paths end to end (issue 11): the one rule of
//! `wasm_sandbox_fs::guest_path`, applied alike by the worker, the file tools and bash.

use super::*;

fn store_id(fake: &Handle, session_id: &str, name: &str) -> String {
    fake.session_memory_stores(session_id)
        .into_iter()
        .find(|(_, n)| n == name)
        .map(|(id, _)| id)
        .unwrap()
}

/// A store whose resource carries no usable `mount_path` (empty here; absent or null takes
/// the same branch, see `runtime/worker/src/memory.rs`'s unit test) is mounted at
/// `/mnt/memory/<name>` for the file tools and bash, and syncs back. Before the fix it
/// became `/mnt/memory//<name>`, which the runtime refused, failing the item.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_without_mount_path_is_mounted_at_mnt_memory_name() {
    let fake = fake().await;
    let dir = tempfile::tempdir().unwrap();
    let (_work_id, session_id) = fake.enqueue_session(scenario(json!({
        "name": "memory-default-path",
        "memory_stores": [
            {"name": "notes", "mount_path": "", "memories": {"/a.md": "hello default\n"}}
        ],
        "prompt": "Use memory.",
        "steps": [
            {"tool_use": {"label": "read", "name": "read",
                          "input": {"file_path": "/mnt/memory/notes/a.md"},
                          "expect": {"is_error": false, "contains": ["hello default"]}}},
            {"tool_use": {"label": "bash", "name": "bash",
                          "input": {"command": "cat /mnt/memory/notes/a.md && echo from-bash > /mnt/memory/notes/b.md && echo bash-ok"},
                          "expect": {"is_error": false, "contains": ["hello default", "bash-ok"]}}},
            {"tool_use": {"label": "write", "name": "write",
                          "input": {"file_path": "/mnt/memory/notes/c.md", "content": "from tools\n"},
                          "expect": {"is_error": false}}},
            {"idle": {"stop_reason": "end_turn"}},
            "terminate"
        ]
    })));
    let notes = store_id(&fake, &session_id, "notes");
    finished(start(config(&fake, dir.path()), core_provider()))
        .await
        .unwrap();
    let report = fake.scenario_report(&session_id);
    assert!(report.is_ok(), "{report:?}");
    let now = fake.memories(&notes);
    for want in [("/b.md", "from-bash\n"), ("/c.md", "from tools\n")] {
        assert!(
            now.contains(&(want.0.to_owned(), want.1.to_owned())),
            "{now:?}"
        );
    }
}

/// A nested `mount_path` (accepted by the reference) works for the file tools and for
/// bash, next to a sibling store; before the fix the bash sandbox refused it and every
/// bash call failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nested_mount_path_works_with_bash_and_the_file_tools() {
    let fake = fake().await;
    let dir = tempfile::tempdir().unwrap();
    let (_work_id, session_id) = fake.enqueue_session(scenario(json!({
        "name": "memory-nested-path",
        "memory_stores": [
            {"name": "shared", "mount_path": "/mnt/memory/team/shared/",
             "memories": {"/a.md": "nested hello\n"}},
            {"name": "prefs", "mount_path": "/mnt/memory/team/prefs", "access": "read_only",
             "memories": {"/p.md": "pref\n"}}
        ],
        "prompt": "Use memory.",
        "steps": [
            {"tool_use": {"label": "read", "name": "read",
                          "input": {"file_path": "/mnt/memory/team/shared/a.md"},
                          "expect": {"is_error": false, "contains": ["nested hello"]}}},
            {"tool_use": {"label": "bash", "name": "bash",
                          "input": {"command": "cat /mnt/memory/team/shared/a.md /mnt/memory/team/prefs/p.md && echo nested-bash > /mnt/memory/team/shared/b.md && (echo x > /mnt/memory/team/prefs/q.md) 2>/dev/null || echo ro-refused"},
                          "expect": {"is_error": false,
                                     "contains": ["nested hello", "pref", "ro-refused"]}}},
            {"tool_use": {"label": "write", "name": "write",
                          "input": {"file_path": "/mnt/memory/team/shared/sub/c.md", "content": "deep\n"},
                          "expect": {"is_error": false}}},
            {"tool_use": {"label": "ro-write", "name": "write",
                          "input": {"file_path": "/mnt/memory/team/prefs/q.md", "content": "no"},
                          "expect": {"is_error": true}}},
            {"idle": {"stop_reason": "end_turn"}},
            "terminate"
        ]
    })));
    let shared = store_id(&fake, &session_id, "shared");
    let prefs = store_id(&fake, &session_id, "prefs");
    finished(start(config(&fake, dir.path()), core_provider()))
        .await
        .unwrap();
    let report = fake.scenario_report(&session_id);
    assert!(report.is_ok(), "{report:?}");
    let now = fake.memories(&shared);
    for want in [("/b.md", "nested-bash\n"), ("/sub/c.md", "deep\n")] {
        assert!(
            now.contains(&(want.0.to_owned(), want.1.to_owned())),
            "{now:?}"
        );
    }
    assert_eq!(
        fake.memories(&prefs),
        [("/p.md".to_owned(), "pref\n".to_owned())]
    );
}

/// Mount paths the rule refuses (outside `/mnt/memory/`, or one store inside another) fail
/// the item up front: no tool runs and no memory is downloaded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_mount_paths_fail_the_item_before_any_download() {
    for stores in [
        json!([{"name": "a", "mount_path": "/mnt/memory/a"},
               {"name": "b", "mount_path": "/mnt/memory/a/b"}]),
        json!([{"name": "w", "mount_path": "/workspace/memory"}]),
        json!([{"name": "x", "mount_path": "/mnt/memory/../../etc"}]),
    ] {
        let fake = fake().await;
        let dir = tempfile::tempdir().unwrap();
        let (work_id, session_id) = fake.enqueue_session(scenario(json!({
            "name": "memory-refused-path",
            "memory_stores": stores,
            "prompt": "Use memory.",
            "steps": [
                {"tool_use": {"label": "bash", "name": "bash",
                              "input": {"command": "echo ran"}}},
                {"idle": {"stop_reason": "end_turn"}},
                "terminate"
            ]
        })));
        finished(start(config(&fake, dir.path()), core_provider()))
            .await
            .unwrap();
        assert!(fake.tool_results(&session_id).is_empty(), "{stores}");
        assert!(
            fake.stops().iter().any(|s| s.work_id == work_id && s.force),
            "{stores}"
        );
        assert!(
            !fake
                .requests()
                .iter()
                .any(|r| r.path.starts_with("/v1/memory_stores/")),
            "{stores}: nothing is downloaded for a refused path"
        );
    }
}
