//! The same snapshot guarantees against a real S3 server on loopback: `s3s-fs`, installed by
//! the test set-up into `target/tools` (`scripts/test.sh`). Skips with a printed reason when
//! the binary is absent, unless `WASM_SANDBOX_REQUIRE_S3=1` (set by `scripts/test.sh` after
//! installing it), which turns the skip into a failure.
//!
//! One test function: the S3 client reads its credentials from the process environment.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use wasm_sandbox_persist::{Error, Persistence, PersistenceConfig, RESTORE_NOTE, RestoreOutcome};

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn s3s_fs() -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/tools/bin/s3s-fs");
    p.exists().then_some(p)
}

fn start(bin: &Path, root: &Path) -> (Server, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(bin)
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .args(["--access-key", "AKTEST", "--secret-key", "SKTEST"])
        .arg(root)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let server = Server(child);
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "s3s-fs did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    (server, format!("http://127.0.0.1:{port}"))
}

mod common;
use common::{files_under, fresh, noise};

/// Fresh workspace and outputs directories, and the temporary directory holding them.
fn dirs() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let s = common::session();
    (s._tmp, s.ws, s.out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_on_a_real_s3_server() {
    let Some(bin) = s3s_fs() else {
        assert!(
            std::env::var("WASM_SANDBOX_REQUIRE_S3").as_deref() != Ok("1"),
            "WASM_SANDBOX_REQUIRE_S3=1 but target/tools/bin/s3s-fs is missing"
        );
        eprintln!(
            "skipped: target/tools/bin/s3s-fs is missing (scripts/test.sh installs it: \
             cargo install --locked --root target/tools s3s-fs@0.14.1 --features binary)"
        );
        return;
    };
    let data = tempfile::tempdir().unwrap();
    std::fs::create_dir(data.path().join("snapshots")).unwrap();
    let (_server, endpoint) = start(&bin, data.path());
    // SAFETY: this test binary has one test; nothing else reads the environment concurrently.
    unsafe {
        std::env::set_var("AWS_ACCESS_KEY_ID", "AKTEST");
        std::env::set_var("AWS_SECRET_ACCESS_KEY", "SKTEST");
        std::env::set_var("AWS_REGION", "us-east-1");
        std::env::set_var("S3_TEST_SNAPSHOT_KEY", "ab".repeat(32));
    }
    let mut cfg = PersistenceConfig::new("s3://snapshots/env-1");
    cfg.endpoint = Some(endpoint);
    let p = Persistence::open(&cfg).unwrap();

    // Round trip: an outside link, an executable, an empty dir, a 20 MB file, small files.
    let (_a, ws, out) = dirs();
    std::os::unix::fs::symlink("/etc/passwd", ws.join("outside")).unwrap();
    std::fs::write(ws.join("run.sh"), "#!/bin/sh\n").unwrap();
    std::fs::set_permissions(ws.join("run.sh"), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::create_dir_all(ws.join("empty")).unwrap();
    let big = noise(7, 20_000_000);
    std::fs::write(ws.join("big.bin"), &big).unwrap();
    for i in 0..200 {
        std::fs::write(ws.join(format!("f{i}.js")), format!("{i}")).unwrap();
    }
    std::fs::write(out.join("o.txt"), "out").unwrap();
    let mut st = fresh("sesn_s3");
    let o = p.snapshot(&mut st, &ws, &out, &[], "t").await.unwrap();
    assert_eq!(o.generation, 1);
    let (_b, ws2, out2) = dirs();
    let (_, outcome) = p.restore("sesn_s3", &ws2, &out2).await;
    assert!(
        matches!(outcome, RestoreOutcome::Restored { generation: 1, .. }),
        "{outcome:?}"
    );
    assert_eq!(
        std::fs::read_link(ws2.join("outside")).unwrap(),
        Path::new("/etc/passwd")
    );
    assert_eq!(std::fs::read(ws2.join("big.bin")).unwrap(), big);
    assert_eq!(
        std::fs::metadata(ws2.join("run.sh"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o755
    );
    assert!(ws2.join("empty").is_dir());
    assert_eq!(std::fs::read_to_string(out2.join("o.txt")).unwrap(), "out");

    // The CAS holds on S3 (If-None-Match: *): a second writer on the same base loses.
    let mut other = fresh("sesn_s3");
    other.base = Some(0);
    let r = p.snapshot(&mut other, &ws, &out, &[], "loser").await;
    assert!(matches!(r, Err(Error::Conflict(1))), "{r:?}");

    // Incremental: a checkpoint with one new file uploads one small object.
    std::fs::write(ws.join("new"), "n").unwrap();
    let o = p.snapshot(&mut st, &ws, &out, &[], "t").await.unwrap();
    assert_eq!((o.generation, o.stats.uploaded_objects), (2, 1));

    // Corrupt an object in the server's storage: empty workspace + note.
    let objs = data.path().join("snapshots/env-1/sessions/sesn_s3/obj");
    for e in std::fs::read_dir(&objs).unwrap() {
        let p = e.unwrap().path();
        let mut d = std::fs::read(&p).unwrap();
        d[0] ^= 1;
        std::fs::write(&p, d).unwrap();
    }
    let (_c, ws3, out3) = dirs();
    let (_, outcome) = p.restore("sesn_s3", &ws3, &out3).await;
    assert!(matches!(outcome, RestoreOutcome::Failed(_)), "{outcome:?}");
    assert!(ws3.join(RESTORE_NOTE).exists());
    assert_eq!(std::fs::read_dir(&ws3).unwrap().count(), 1);

    // Deleted with the session.
    assert!(p.delete_session("sesn_s3").await.unwrap() > 0);
    assert!(
        p.list(Some("sesn_s3")).await.unwrap()[0]
            .generations
            .is_empty()
    );

    // Encrypted: nothing readable in the bucket.
    cfg.encryption_key_env = Some("S3_TEST_SNAPSHOT_KEY".into());
    let enc = Persistence::open(&cfg).unwrap();
    std::fs::write(ws.join("marker.txt"), "S3-PLAINTEXT-MARKER").unwrap();
    let mut st = fresh("sesn_s3enc");
    enc.snapshot(&mut st, &ws, &out, &[], "t").await.unwrap();
    for p in files_under(&data.path().join("snapshots/env-1/sessions/sesn_s3enc")) {
        let b = std::fs::read(&p).unwrap();
        assert!(!b.windows(19).any(|w| w == b"S3-PLAINTEXT-MARKER"));
    }
    let (_d, ws4, out4) = dirs();
    let (_, outcome) = enc.restore("sesn_s3enc", &ws4, &out4).await;
    assert!(
        matches!(outcome, RestoreOutcome::Restored { .. }),
        "{outcome:?}"
    );
    assert_eq!(
        std::fs::read_to_string(ws4.join("marker.txt")).unwrap(),
        "S3-PLAINTEXT-MARKER"
    );
}
