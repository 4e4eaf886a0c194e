//! Skills and memory stores.

use super::*;

#[tokio::test]
async fn skills_are_served_latest_and_by_id() {
    let fake = start().await;
    let api = Api::new(&fake);
    let v1 = fake.add_skill_version("skill_1", "pdf", b"PK\x03\x04old".to_vec());
    let v2 = fake.add_skill_version("skill_1", "pdf", b"PK\x03\x04new".to_vec());
    assert_ne!(v1, v2);
    let key = fake.environment_key();
    // No beta header is needed on skills routes.
    let get = |path: String| {
        api.http
            .get(format!("{}{path}", api.base))
            .header("anthropic-version", "2026-10-21")
            .bearer_auth(&key)
    };
    let (s, body) = api
        .send(get("/v1/skills/skill_1/versions/latest".into()))
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(body["id"], json!(v2));
    assert_eq!(body["type"], "skill_version");
    assert_eq!(body["name"], "pdf");
    let resp = get(format!("/v1/skills/skill_1/versions/{v1}/content"))
        .header("accept", "application/binary")
        .send()
        .await
        .expect("content");
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["content-type"], "application/zip");
    assert_eq!(
        resp.bytes().await.expect("bytes").as_ref(),
        b"PK\x03\x04old"
    );
    let (s, _) = api
        .send(get("/v1/skills/skill_9/versions/latest".into()))
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn memory_stores_follow_the_sessions_token_rules() {
    let fake = start().await;
    let api = Api::new(&fake);
    let (_, session_id) = fake.enqueue_session(scenario(
        r#"{"memory_stores": [
              {"name": "User Prefs", "memories": {"/a.md": "alpha", "/dir/b.md": "beta", "/dir/sub/c.md": "gamma"}},
              {"name": "ro", "access": "read_only", "memories": {"/r.md": "read me"}}
           ], "steps": []}"#,
    ));
    let (_, token, _) = claim(&api, &fake).await;
    let stores = fake.session_memory_stores(&session_id);
    assert_eq!(stores.len(), 2);
    let (rw, ro) = (&stores[0].0, &stores[1].0);
    let (s, session) = api
        .send(api.req(
            Method::GET,
            &format!("/v1/sessions/{session_id}"),
            Some(&token),
        ))
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        session["resources"][0]["mount_path"],
        "/mnt/memory/user-prefs"
    );
    assert_eq!(session["resources"][1]["access"], "read_only");

    let mem = |method: Method, path: &str, tok: &str| {
        api.http
            .request(method, format!("{}/v1/memory_stores{path}", api.base))
            .header("anthropic-version", "2026-10-21")
            .header("anthropic-beta", "agent-memory-2026-07-22")
            .bearer_auth(tok)
    };
    // The environment key is refused.
    let (s, _) = api
        .send(mem(
            Method::GET,
            &format!("/{rw}/memories"),
            &fake.environment_key(),
        ))
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    // Full view pages hold at most 20; basic view has null content and a sha.
    let (s, body) = api
        .send(mem(
            Method::GET,
            &format!("/{rw}/memories?view=full&limit=20"),
            &token,
        ))
        .await;
    assert_eq!(s, StatusCode::OK);
    let items = body["data"].as_array().expect("data");
    assert_eq!(items.len(), 3);
    assert_eq!(items[0]["path"], "/a.md");
    assert_eq!(items[0]["content"], "alpha");
    let (_, body) = api
        .send(mem(
            Method::GET,
            &format!("/{rw}/memories?view=basic&limit=100&depth=1"),
            &token,
        ))
        .await;
    let items = body["data"].as_array().expect("data");
    assert_eq!(items.len(), 2);
    assert!(items[0]["content"].is_null());
    assert_eq!(items[0]["content_sha256"].as_str().map(str::len), Some(64));
    assert_eq!(items[1], json!({"type": "memory_prefix", "path": "/dir/"}));

    // Create, update with a precondition, delete with a guard.
    let (s, created) = api
        .send(
            mem(Method::POST, &format!("/{rw}/memories"), &token)
                .json(&json!({"path": "/new.md", "content": "agent wrote"})),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let id = created["id"].as_str().expect("id").to_owned();
    let sha = created["content_sha256"].as_str().expect("sha").to_owned();
    let (s, _) = api
        .send(
            mem(Method::POST, &format!("/{rw}/memories"), &token)
                .json(&json!({"path": "/new.md", "content": "again"})),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT);
    let stale = json!({"content": "v2", "precondition": {"type": "content_sha256", "content_sha256": "0".repeat(64)}});
    let (s, body) = api
        .send(mem(Method::POST, &format!("/{rw}/memories/{id}"), &token).json(&stale))
        .await;
    assert_eq!(s, StatusCode::CONFLICT);
    assert_eq!(body["error"]["type"], "memory_precondition_failed_error");
    let fresh =
        json!({"content": "v2", "precondition": {"type": "content_sha256", "content_sha256": sha}});
    let (s, updated) = api
        .send(mem(Method::POST, &format!("/{rw}/memories/{id}"), &token).json(&fresh))
        .await;
    assert_eq!(s, StatusCode::OK);
    let sha2 = updated["content_sha256"].as_str().expect("sha").to_owned();
    let (s, _) = api
        .send(mem(
            Method::DELETE,
            &format!("/{rw}/memories/{id}?expected_content_sha256={sha}"),
            &token,
        ))
        .await;
    assert_eq!(s, StatusCode::CONFLICT);
    let (s, body) = api
        .send(mem(
            Method::DELETE,
            &format!("/{rw}/memories/{id}?expected_content_sha256={sha2}"),
            &token,
        ))
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(body, json!({"id": id, "type": "memory_deleted"}));
    let (s, _) = api
        .send(mem(Method::DELETE, &format!("/{rw}/memories/{id}"), &token))
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    // Oversized content: 413.
    let big = "x".repeat(102_401);
    let (s, _) = api
        .send(
            mem(Method::POST, &format!("/{rw}/memories"), &token)
                .json(&json!({"path": "/big.md", "content": big})),
        )
        .await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE);
    // Read-only store: reads pass, writes are refused.
    let (s, _) = api
        .send(mem(Method::GET, &format!("/{ro}/memories"), &token))
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = api
        .send(
            mem(Method::POST, &format!("/{ro}/memories"), &token)
                .json(&json!({"path": "/x.md", "content": "x"})),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    // A remote edit shows up.
    fake.put_memory(rw, "/a.md", "alpha v2").expect("store");
    assert!(
        fake.memories(rw)
            .contains(&("/a.md".to_owned(), "alpha v2".to_owned()))
    );
}
