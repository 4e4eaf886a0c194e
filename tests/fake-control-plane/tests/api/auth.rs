//! Which credential may call which endpoint, and the headers every request needs.

use super::*;

#[tokio::test]
async fn auth_headers_and_matrix() {
    let fake = start().await;
    let api = Api::new(&fake);
    let (work_id, session_id) = fake.enqueue_session(scenario(r#"{"steps": []}"#));
    let env = fake.environment_id();
    let poll = format!("/v1/environments/{env}/work/poll");
    let key = fake.environment_key();

    let (s, body) = api.send(api.req(Method::GET, &poll, None)).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"]["type"], "authentication_error");
    assert_eq!(body["type"], "error");
    assert!(
        body["request_id"]
            .as_str()
            .is_some_and(|r| r.starts_with("req_"))
    );
    let (s, _) = api
        .send(api.req(Method::GET, &poll, Some("sk-ant-oat01-nope")))
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, body) = api
        .send(api.req(Method::GET, &poll, Some(&fake.api_key())))
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "the API key cannot poll");
    assert_eq!(body["error"]["type"], "permission_error");
    // x-api-key is accepted too.
    let (s, _) = api
        .send(
            api.http
                .get(format!("{}{poll}", api.base))
                .header("anthropic-version", "2023-06-01")
                .header("anthropic-beta", "managed-agents-2026-04-01")
                .header("x-api-key", &key),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    // Missing beta header: 404; missing version: 400.
    let (s, _) = api
        .send(
            api.http
                .get(format!("{}{poll}", api.base))
                .header("anthropic-version", "2026-10-21")
                .bearer_auth(&key),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = api
        .send(
            api.http
                .get(format!("{}{poll}", api.base))
                .header("anthropic-beta", "managed-agents-2026-04-01")
                .bearer_auth(&key),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    // Unknown query parameters (`?beta=true`) are ignored; a wrong environment is 404.
    let (s, _) = api
        .send(api.req(Method::GET, &format!("{poll}?beta=true"), Some(&key)))
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = api
        .send(api.req(
            Method::GET,
            "/v1/environments/env_other/work/poll",
            Some(&key),
        ))
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    // Stats: API key and environment key.
    let stats = format!("/v1/environments/{env}/work/stats");
    let (s, body) = api
        .send(api.req(Method::GET, &stats, Some(&fake.api_key())))
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(body["type"], "work_queue_stats");
    let (s, _) = api.send(api.req(Method::GET, &stats, Some(&key))).await;
    assert_eq!(s, StatusCode::OK);
    // Retrieve: API key only, secret null.
    let item = format!("/v1/environments/{env}/work/{work_id}");
    let (s, _) = api.send(api.req(Method::GET, &item, Some(&key))).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, body) = api
        .send(api.req(Method::GET, &item, Some(&fake.api_key())))
        .await;
    assert_eq!(s, StatusCode::OK);
    assert!(body["secret"].is_null());
    // List: environment key.
    let (s, body) = api
        .send(api.req(
            Method::GET,
            &format!("/v1/environments/{env}/work?limit=10"),
            Some(&key),
        ))
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(body["data"].as_array().map(Vec::len), Some(1));
    assert!(body["next_page"].is_null());

    // Sessions: a sessions token only for its own session.
    let (_, other_session) = fake.enqueue_session(scenario(r#"{"steps": []}"#));
    fake.advance_clock(Duration::from_secs(6));
    let (_, work) = api.poll(&fake, "", "w").await;
    let token = sessions_token(work["secret"].as_str().expect("secret"));
    let mine = work["data"]["id"].as_str().expect("sid").to_owned();
    let theirs = if mine == session_id {
        &other_session
    } else {
        &session_id
    };
    let (s, body) = api
        .send(api.req(Method::GET, &format!("/v1/sessions/{mine}"), Some(&token)))
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(body["type"], "session");
    let (s, _) = api
        .send(api.req(Method::GET, &format!("/v1/sessions/{theirs}"), Some(&token)))
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);

    let unknown = fake
        .requests()
        .iter()
        .filter(|r| r.credential == Credential::Unknown)
        .count();
    assert_eq!(unknown, 1);
}
