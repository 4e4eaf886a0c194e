//! `[runtime.persistence]` end to end: the worker against the fake control plane with the real
//! core sandbox. Item 1 of a session writes files and idles out; item 2 of the same session is
//! claimed by a second worker with its own workdir sharing the store and reads them back; the
//! session then terminates and its snapshots are deleted. Also: a corrupt snapshot gives an
//! empty workspace with the note (no crash), and a workspace over the cap keeps the previous
//! snapshot.

use std::path::Path;
use std::sync::Arc;

use serde_json::json;
use wasm_sandbox_fake_control_plane::{Handle, Scenario};
use wasm_sandbox_persist::{Persistence, PersistenceConfig, RESTORE_NOTE};
use wasm_sandbox_worker::core_adapter::CoreProvider;

use crate::worker::{config, fake, finished, start};

fn provider() -> CoreProvider {
    CoreProvider::new(crate::common::runtime().clone())
}

fn persistence(store: &Path, f: impl FnOnce(&mut PersistenceConfig)) -> Arc<Persistence> {
    let mut cfg = PersistenceConfig::new(format!("file://{}", store.display()));
    cfg.checkpoint_interval = std::time::Duration::ZERO;
    f(&mut cfg);
    Arc::new(Persistence::open(&cfg).unwrap())
}

fn base64_of(b: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(b)
}

fn results(fake: &Handle, session_id: &str) -> Vec<String> {
    fake.tool_results(session_id)
        .into_iter()
        .filter(|r| r.accepted)
        .map(|r| r.text())
        .collect()
}

fn bash(label: &str, command: &str, contains: &[&str]) -> serde_json::Value {
    json!({"tool_use": {"label": label, "name": "bash", "input": {"command": command},
                        "expect": {"is_error": false, "contains": contains}}})
}

/// A scenario named `name` with `prompt` and `steps` (a JSON array).
fn scenario(name: &str, prompt: &str, steps: serde_json::Value) -> Scenario {
    Scenario::from_json(&json!({"name": name, "prompt": prompt, "steps": steps}).to_string())
        .unwrap()
}

/// Runs one worker (`worker_id`, or the default one; its own workdir; the shared core
/// runtime) with persistence `p` until the fake has no more work for it.
async fn run_item(fake: &Handle, p: &Arc<Persistence>, worker_id: Option<&str>) {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(fake, dir.path());
    if let Some(id) = worker_id {
        cfg.worker_id = id.into();
    }
    cfg.persistence = Some(Arc::clone(p));
    finished(start(cfg, provider())).await.unwrap();
}

const WRITE: &str = "mkdir -p empty/dir && ln -s /etc/passwd outside && \
    printf '#!/bin/sh\\necho hi\\n' > run.sh && chmod 755 run.sh && \
    head -c 20000000 /dev/urandom > big.bin && sha256sum big.bin > big.sum && \
    echo saved-output > /mnt/session/outputs/o.txt && echo written";

const CHECK: &str = "if test -L outside; then echo outside-is-a-link; fi; \
    echo \"target=$(readlink outside)\" && test -x run.sh && \
    test -d empty/dir && sha256sum -c big.sum && cat /mnt/session/outputs/o.txt && \
    ls -A /workspace";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_workspace_survives_to_the_next_item_on_another_worker() {
    let fake = fake().await;
    let store = tempfile::tempdir().unwrap();
    let p = persistence(store.path(), |_| {});
    let scenario = scenario(
        "persist",
        "Write, then come back.",
        json!([
            bash("write", WRITE, &["written"]),
            {"idle": {"stop_reason": "end_turn"}},
            {"await_attachments": 2},
            bash("check", CHECK, &["target=/etc/passwd", "big.bin: OK", "saved-output"]),
            {"idle": {"stop_reason": "end_turn"}},
            "terminate"
        ]),
    );
    let (_work1, session_id) = fake.enqueue_session(scenario);

    // Item 1 on worker A: writes, idles out, is stopped; saved before the stop.
    run_item(&fake, &p, None).await;
    let gens = p.store().generations(&session_id).await.unwrap();
    assert_eq!(gens.len(), 1, "item 1 saved one generation");
    // Saved as a link (host side, in the stored manifest), never as the target's content.
    let gen_file = store.path().join(format!(
        "sessions/{session_id}/gen/{:020}",
        gens[0].generation
    ));
    let m = wasm_sandbox_persist::Manifest::decode(&std::fs::read(gen_file).unwrap()).unwrap();
    let outside = m
        .entries
        .iter()
        .find(|e| e.path_bytes().unwrap() == b"outside")
        .expect("the link is in the manifest");
    assert_eq!(
        outside.kind,
        wasm_sandbox_persist::manifest::Kind::Symlink {
            target: base64_of(b"/etc/passwd")
        }
    );

    // Item 2 of the same session on worker B (another workdir, the same store).
    fake.enqueue_work_for_session(&session_id).unwrap();
    run_item(&fake, &p, Some("w-e2e-b")).await;

    let texts = results(&fake, &session_id);
    assert_eq!(texts.len(), 2, "{texts:?}");
    for want in [
        "outside-is-a-link",
        "big.bin: OK",
        "saved-output",
        "run.sh",
        "empty",
    ] {
        assert!(
            texts[1].contains(want),
            "{want} missing from {:?}",
            texts[1]
        );
    }
    // Restored as a link (`test -L` in the sandbox) whose target is exactly the saved text.
    assert!(
        texts[1].lines().any(|l| l.trim() == "target=/etc/passwd"),
        "{:?}",
        texts[1]
    );
    // The session ended terminated in item 2: its snapshots are gone.
    assert!(p.store().generations(&session_id).await.unwrap().is_empty());
    assert_eq!(
        std::fs::read_dir(store.path().join("sessions"))
            .map(|d| d.count())
            .unwrap_or(0),
        0,
        "the emptied session folder is removed too"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_snapshot_gives_an_empty_workspace_and_a_note() {
    let fake = fake().await;
    let store = tempfile::tempdir().unwrap();
    let p = persistence(store.path(), |_| {});
    let scenario = scenario(
        "persist-corrupt",
        "Write, then come back.",
        json!([
            bash("write", "echo keep > kept.txt && echo written", &["written"]),
            {"idle": {"stop_reason": "end_turn"}},
            {"await_attachments": 2},
            bash("check", "ls -A /workspace && cat /workspace/.wasm-sandbox-restore-failed.txt",
                 &[RESTORE_NOTE, "could not restore"]),
            {"idle": {"stop_reason": "end_turn"}},
        ]),
    );
    let (_w, session_id) = fake.enqueue_session(scenario);
    run_item(&fake, &p, None).await;
    // Damage every content object.
    let objs = store.path().join(format!("sessions/{session_id}/obj"));
    for e in std::fs::read_dir(&objs).unwrap() {
        let path = e.unwrap().path();
        let mut d = std::fs::read(&path).unwrap();
        d[0] ^= 0xff;
        std::fs::write(&path, d).unwrap();
    }
    fake.enqueue_work_for_session(&session_id).unwrap();
    run_item(&fake, &p, None).await;
    let texts = results(&fake, &session_id);
    assert_eq!(texts.len(), 2, "{texts:?}");
    assert!(!texts[1].contains("kept.txt"), "{:?}", texts[1]);
    assert_eq!(
        p.stats()
            .restores_failed
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    // Item 2 saved a new generation that supersedes the damaged one.
    let gens = p.store().generations(&session_id).await.unwrap();
    assert_eq!(gens.last().map(|g| g.generation), Some(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_the_cap_the_previous_snapshot_is_kept() {
    let fake = fake().await;
    let store = tempfile::tempdir().unwrap();
    let p = persistence(store.path(), |c| c.max_bytes = 1 << 20);
    let scenario = scenario(
        "persist-cap",
        "Grow.",
        json!([
            bash("small", "echo v1 > small.txt && echo ok", &["ok"]),
            {"idle": {"stop_reason": "end_turn"}},
            {"await_attachments": 2},
            bash("grow", "cat small.txt && head -c 2000000 /dev/zero > big && echo grown", &["v1", "grown"]),
            {"idle": {"stop_reason": "end_turn"}},
            {"await_attachments": 3},
            bash("check", "cat small.txt; ls big || echo no-big", &["v1", "no-big"]),
            {"idle": {"stop_reason": "end_turn"}},
        ]),
    );
    let (_w, session_id) = fake.enqueue_session(scenario);
    for i in 0..3 {
        if i > 0 {
            fake.enqueue_work_for_session(&session_id).unwrap();
        }
        run_item(&fake, &p, None).await;
    }
    let texts = results(&fake, &session_id);
    assert_eq!(texts.len(), 3, "{texts:?}");
    assert!(texts[2].contains("no-big"), "{:?}", texts[2]);
    assert!(
        p.stats()
            .snapshots_too_large
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 1
    );
}

/// With the disk cap on, the session's directories are a filesystem the core session mounts
/// and releases when it is dropped. The snapshot must be taken while it is still mounted: one
/// taken after the release reads the empty directories beneath and saves them as the session's
/// newest workspace (an earlier teardown dropped the sandbox before the snapshot).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_disk_cap_the_saved_workspace_is_the_sessions_own() {
    let mut rt_config = crate::common::config();
    rt_config.shape.disk_bytes = Some(64 << 20);
    let rt = wasm_sandbox_runtime::Runtime::new(rt_config).expect("runtime");
    if rt.sandbox_report().disk_limit != wasm_sandbox_native::LimitMechanism::Filesystem {
        eprintln!(
            "SKIP: no per-session capped filesystem here: {}",
            rt.sandbox_report()
                .shape
                .disk_problem
                .as_deref()
                .unwrap_or("?")
        );
        return;
    }
    let fake = fake().await;
    let store = tempfile::tempdir().unwrap();
    let p = persistence(store.path(), |_| {});
    let scenario = scenario(
        "persist-disk-cap",
        "Write, then come back.",
        json!([
            bash("write", "df --output=target /workspace | tail -1 && echo kept-marker-7f3a > kept.txt && echo outputs-marker-91c2 > /mnt/session/outputs/o.txt && echo written", &["written"]),
            {"idle": {"stop_reason": "end_turn"}},
            {"await_attachments": 2},
            bash("check", "cat /workspace/kept.txt /mnt/session/outputs/o.txt", &["kept-marker-7f3a"]),
            {"idle": {"stop_reason": "end_turn"}},
        ]),
    );
    let (_w, session_id) = fake.enqueue_session(scenario);
    for (n, worker) in ["w-disk-a", "w-disk-b"].into_iter().enumerate() {
        if n == 1 {
            fake.enqueue_work_for_session(&session_id).unwrap();
        }
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = config(&fake, dir.path());
        cfg.worker_id = worker.into();
        cfg.persistence = Some(Arc::clone(&p));
        finished(start(cfg, CoreProvider::new(rt.clone())))
            .await
            .unwrap();
    }
    let texts = results(&fake, &session_id);
    assert_eq!(texts.len(), 2, "{texts:?}");
    assert!(
        texts[1].contains("kept-marker-7f3a") && texts[1].contains("outputs-marker-91c2"),
        "the second item must find the files of the first: {:?}",
        texts[1]
    );
}

/// A worker whose restore fails for a reason that proves nothing against the stored snapshot
/// (here: `max_size` lowered below it) starts empty with the note, and must not save its empty
/// workspace over the good generation: the next item, with the old limit, finds the files.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_failure_that_proves_nothing_keeps_the_snapshot() {
    let fake = fake().await;
    let store = tempfile::tempdir().unwrap();
    let p = persistence(store.path(), |_| {});
    let lowered = persistence(store.path(), |c| c.max_bytes = 1000);
    let scenario = scenario(
        "persist-keep",
        "Write, then come back twice.",
        json!([
            bash("write", "head -c 5000 /dev/zero > big && echo keep-5d1e > kept.txt && echo written", &["written"]),
            {"idle": {"stop_reason": "end_turn"}},
            {"await_attachments": 2},
            bash("empty", "ls -A /workspace && echo new > new.txt", &[RESTORE_NOTE]),
            {"idle": {"stop_reason": "end_turn"}},
            {"await_attachments": 3},
            bash("back", "cat kept.txt; ls new.txt || echo no-new", &["keep-5d1e", "no-new"]),
            {"idle": {"stop_reason": "end_turn"}},
        ]),
    );
    let (_w, session_id) = fake.enqueue_session(scenario);
    for (i, which) in [&p, &lowered, &p].into_iter().enumerate() {
        if i > 0 {
            fake.enqueue_work_for_session(&session_id).unwrap();
        }
        run_item(&fake, which, None).await;
        if i == 1 {
            let gens = p.store().generations(&session_id).await.unwrap();
            assert_eq!(
                gens.last().map(|g| g.generation),
                Some(1),
                "the item that started empty saved nothing"
            );
        }
    }
    let texts = results(&fake, &session_id);
    assert_eq!(texts.len(), 3, "{texts:?}");
    assert!(texts[2].contains("keep-5d1e"), "{:?}", texts[2]);
    assert!(
        lowered
            .stats()
            .snapshots_skipped
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 1
    );
}

/// A session deleted between its items (the session fetch answers 404 `not_found_error`
/// after the ack): its snapshots are deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_session_loses_its_snapshots() {
    use wasm_sandbox_fake_control_plane::{Endpoint, FailureSpec};
    let fake = fake().await;
    let store = tempfile::tempdir().unwrap();
    let p = persistence(store.path(), |_| {});
    let scenario = scenario(
        "persist-deleted",
        "Write.",
        json!([
            bash("write", "echo gone-soon > f.txt && echo written", &["written"]),
            {"idle": {"stop_reason": "end_turn"}},
        ]),
    );
    let (_w, session_id) = fake.enqueue_session(scenario);
    run_item(&fake, &p, None).await;
    assert_eq!(p.store().generations(&session_id).await.unwrap().len(), 1);
    fake.inject_failure(
        FailureSpec::new(Endpoint::SessionRetrieve, 404)
            .times(10)
            .path_contains(session_id.clone()),
    );
    fake.enqueue_work_for_session(&session_id).unwrap();
    run_item(&fake, &p, None).await;
    assert!(
        p.store().generations(&session_id).await.unwrap().is_empty(),
        "a deleted session's snapshots are deleted"
    );
}

/// An archived session takes no more input: the next item of it deletes its snapshots and
/// saves none (without the check, it restored and saved a new generation).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_archived_session_loses_its_snapshots() {
    let fake = fake().await;
    let store = tempfile::tempdir().unwrap();
    let p = persistence(store.path(), |_| {});
    let scenario = scenario(
        "persist-archived",
        "Write.",
        json!([
            bash("write", "echo archived-soon > f.txt && echo written", &["written"]),
            {"idle": {"stop_reason": "end_turn"}},
        ]),
    );
    let (_w, session_id) = fake.enqueue_session(scenario);
    run_item(&fake, &p, None).await;
    assert_eq!(p.store().generations(&session_id).await.unwrap().len(), 1);
    fake.archive_session(&session_id).unwrap();
    fake.enqueue_work_for_session(&session_id).unwrap();
    run_item(&fake, &p, None).await;
    assert!(
        p.store().generations(&session_id).await.unwrap().is_empty(),
        "an archived session's snapshots are deleted and none is saved"
    );
}
