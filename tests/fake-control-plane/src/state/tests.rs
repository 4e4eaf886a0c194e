//! Unit tests of the fake's state: validation, pagination, leases.

use super::memory::validate_memory_path;
use super::sessions::validate_content;
use super::*;

fn state() -> State {
    State::new(FakeConfig::default())
}

#[test]
fn content_rules() {
    assert!(validate_content(Some(&[json!({"type": "text", "text": "ok"})]), false).is_ok());
    assert!(validate_content(Some(&[json!({"type": "text", "text": ""})]), false).is_err());
    assert!(validate_content(Some(&[]), false).is_err());
    assert!(validate_content(None, false).is_err());
    let image = json!({"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AA=="}});
    assert!(validate_content(Some(std::slice::from_ref(&image)), false).is_ok());
    assert!(validate_content(Some(&[image]), true).is_err());
    assert!(validate_content(Some(&[json!({"type": "tool_use"})]), false).is_err());
}

#[test]
fn memory_paths() {
    assert!(validate_memory_path("/a/b.md").is_ok());
    assert!(validate_memory_path("a.md").is_err());
    assert!(validate_memory_path("/a/../b").is_err());
    assert!(validate_memory_path("/a//b").is_err());
    assert!(validate_memory_path("/").is_err());
}

#[test]
fn slugs() {
    assert_eq!(slug("User Preferences"), "user-preferences");
    assert_eq!(slug("!!"), "store");
}

#[test]
fn lease_expiry_requeues_and_old_echo_fails() {
    let mut s = state();
    let t0 = SystemTime::now();
    let session = s.create_session(&Scenario::default(), t0);
    let work = s.enqueue(
        WorkData {
            kind: Some("session".into()),
            id: session,
        },
        true,
        t0,
    );
    assert!(s.claim(t0, Some("w1"), Duration::from_secs(5)).is_some());
    s.ack(&work, t0).expect("ack");
    let hb = s
        .heartbeat(
            &work,
            &Credential::EnvironmentKey,
            Some(NO_HEARTBEAT),
            None,
            t0,
        )
        .expect("first beat");
    assert_eq!(hb.state, WorkState::Active);
    let later = t0 + Duration::from_secs(s.lease_ttl + 1);
    assert!(s.sweep(later));
    assert_eq!(s.work_state(&work), Some(WorkState::Queued));
    let err = s
        .heartbeat(
            &work,
            &Credential::EnvironmentKey,
            Some(&hb.last_heartbeat),
            None,
            later,
        )
        .expect_err("stale holder");
    assert_eq!(err.status, 412);
    let again = s
        .claim(later, Some("w2"), Duration::from_secs(5))
        .expect("reclaim");
    assert_eq!(again.id, work);
    assert_eq!(s.claims(&work), 2);
    assert_eq!(s.claimed_by(&work), Some("w2"));
}

#[test]
fn pagination_cursor() {
    let page = paginate((0..5).collect::<Vec<_>>(), 0, 2, "x_");
    assert_eq!(page.data, vec![0, 1]);
    assert_eq!(page.next_page.as_deref(), Some("x_2"));
    let last = paginate((0..5).collect::<Vec<_>>(), 4, 2, "x_");
    assert_eq!(last.data, vec![4]);
    assert_eq!(last.next_page, None);
    assert_eq!(parse_cursor(Some("x_4"), "x_").expect("cursor"), 4);
    assert!(parse_cursor(Some("bogus"), "x_").is_err());
}
