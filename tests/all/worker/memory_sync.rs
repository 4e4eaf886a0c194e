//! Memory-store sync against hostile files (issue 11), end to end through the worker.

use super::*;

/// bash writes four 64 MiB files (sparse) and a FIFO into a read-write store; the final
/// sync and the flush upload the small file only, never send the big ones, never block on
/// the FIFO, and the item ends normally.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_files_and_fifos_written_by_bash_are_not_uploaded() {
    let fake = fake().await;
    let dir = tempfile::tempdir().unwrap();
    let (_work_id, session_id) = fake.enqueue_session(scenario(json!({
        "name": "memory-hostile-files",
        "memory_stores": [{"name": "notes", "memories": {"/a.md": "a\n"}}],
        "prompt": "Use memory.",
        "steps": [
            {"tool_use": {"label": "bash", "name": "bash",
                          "input": {"command": "cd /mnt/memory/notes && for i in 0 1 2 3; do truncate -s 64M big$i.md; done; (mkfifo pipe.md 2>/dev/null || true); echo small > small.md; echo made"},
                          "expect": {"is_error": false, "contains": ["made"]}}},
            {"idle": {"stop_reason": "end_turn"}},
            "terminate"
        ]
    })));
    let notes = fake
        .session_memory_stores(&session_id)
        .into_iter()
        .find(|(_, n)| n == "notes")
        .map(|(id, _)| id)
        .unwrap();
    finished(start(config(&fake, dir.path()), core_provider()))
        .await
        .unwrap();
    let report = fake.scenario_report(&session_id);
    assert!(report.is_ok(), "{report:?}");
    let now = fake.memories(&notes);
    assert!(
        now.contains(&("/small.md".to_owned(), "small\n".to_owned())),
        "{now:?}"
    );
    assert!(
        !now.iter()
            .any(|(p, _)| p.starts_with("/big") || p == "/pipe.md"),
        "{:?}",
        now.iter().map(|(p, _)| p).collect::<Vec<_>>()
    );
    // Not even attempted: the old code read each file whole and sent it (the fake, like
    // the API, answered 413), holding gigabytes in the worker on the way.
    for r in fake
        .requests()
        .iter()
        .filter(|r| r.path.starts_with("/v1/memory_stores/"))
    {
        assert!(
            r.body_len <= 1 << 20 && r.status != Some(413),
            "{} {}: {} bytes sent, status {:?}",
            r.method,
            r.path,
            r.body_len,
            r.status
        );
    }
}
