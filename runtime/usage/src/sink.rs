//! The optional HTTP sink: every ledger record `POST`ed to `[usage] sink_url`, once.
//!
//! The sink is its own task reading the ledger from its durable cursor ([`crate::cursor`]); the
//! worker only pokes it ([`SinkHandle::wake`]) after appending, so a slow or dead endpoint never
//! holds up a work item. Each record is sent alone, as JSON, with `Idempotency-Key: <record
//! id>`; the cursor moves past it only after a 2xx (or 409, the endpoint saying it already has
//! that key), so:
//! * records written while the endpoint is down, or before a crash or restart, are sent when
//!   it is back (the cursor is on disk);
//! * a record is re-sent only if the process died between the endpoint's answer and the cursor
//!   write, and then with the same key, so the endpoint can drop the duplicate: never double
//!   billed.
//!
//! Failures (connection errors, timeouts, 408, 429, 5xx, and 401/403/404, which an operator
//! fixes) are retried for ever with exponential backoff and jitter, capped at `max_backoff`:
//! giving up would lose billing data. 400, 413 and 422 mean the endpoint will never take that
//! record: it is logged as an error, counted, and skipped, so one bad record cannot block the
//! ones after it.
//!
//! The auth header's value comes from an environment variable (never the config file) and is
//! never logged: [`SinkConfig`]'s `Debug` redacts it, and the header is marked sensitive.
//!
//! # Redirects are not followed
//!
//! A `301`/`302`/`303` would turn the `POST` into a body-less `GET`, whose 2xx would count an
//! undelivered record as delivered (lost billing data), and following any redirect could carry
//! the auth header to another host. So the client follows none: a 3xx is a failure like a 5xx,
//! logged with its `Location` and retried, until the operator points `sink_url` at the real
//! endpoint.
//!
//! # Logs
//!
//! The URL is logged without its query and user info ([`redact_url`]), and request errors
//! without their URL, so a token an operator put in the URL does not land in the logs (the
//! worker's config check refuses user info in the URL outright).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rand::Rng;
use tokio::sync::Notify;

use crate::ledger::{Position, read_from};
use crate::record::UsageRecord;

/// Where and how records are sent.
#[derive(Clone)]
pub struct SinkConfig {
    /// The endpoint records are `POST`ed to.
    pub url: String,
    /// A header sent with every request (name, value), e.g. `("authorization", "Bearer …")`.
    pub auth_header: Option<(String, String)>,
    /// Bound of one request (default 10 s).
    pub timeout: Duration,
    /// First retry delay (default 500 ms); doubles per failure.
    pub initial_backoff: Duration,
    /// Longest retry delay (default 60 s).
    pub max_backoff: Duration,
    /// The ledger is re-read this often even without a wake-up (default 5 s).
    pub poll_interval: Duration,
    /// Certificates trusted as roots besides the bundled ones (the worker's `--ca-cert`).
    pub extra_root_certs: Vec<reqwest::Certificate>,
}

impl SinkConfig {
    /// The defaults for `url`.
    pub fn new(url: impl Into<String>) -> SinkConfig {
        SinkConfig {
            url: url.into(),
            auth_header: None,
            timeout: Duration::from_secs(10),
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(60),
            poll_interval: Duration::from_secs(5),
            extra_root_certs: Vec::new(),
        }
    }
}

impl std::fmt::Debug for SinkConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SinkConfig")
            .field("url", &redact_url(&self.url))
            .field(
                "auth_header",
                &self.auth_header.as_ref().map(|(n, _)| (n, "<redacted>")),
            )
            .field("timeout", &self.timeout)
            .field("initial_backoff", &self.initial_backoff)
            .field("max_backoff", &self.max_backoff)
            .field("poll_interval", &self.poll_interval)
            .field("extra_root_certs", &self.extra_root_certs.len())
            .finish()
    }
}

/// What the sink has done since it started.
#[derive(Debug, Default)]
pub struct SinkStats {
    /// Records the endpoint accepted.
    pub delivered: AtomicU64,
    /// Records the endpoint refused for good (skipped).
    pub rejected: AtomicU64,
    /// Failed attempts (each retried).
    pub failures: AtomicU64,
}

/// The running sink task. Dropping it stops the task (the cursor is durable; nothing is lost).
#[derive(Debug)]
pub struct SinkHandle {
    notify: Arc<Notify>,
    stats: Arc<SinkStats>,
    /// The stored cursor (what has been delivered or skipped).
    sent: Arc<std::sync::Mutex<Position>>,
    task: tokio::task::JoinHandle<()>,
}

impl SinkHandle {
    /// Tells the sink a record was appended (cheap; never blocks).
    pub fn wake(&self) {
        self.notify.notify_one();
    }

    /// Counters of the sink.
    pub fn stats(&self) -> &SinkStats {
        &self.stats
    }

    /// Where the stored cursor is: every record before it was delivered (or skipped).
    pub fn sent(&self) -> Position {
        *self.sent.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits (at most `bound`) until everything before `end` (say [`crate::Ledger::end`]) was
    /// delivered; returns whether it was. For a graceful shutdown, so a worker whose ledger
    /// is on ephemeral storage hands its last records over before it goes.
    pub async fn flush(&self, end: Position, bound: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + bound;
        loop {
            if self.sent() >= end {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            self.wake();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for SinkHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts the sink for the ledger in `dir` on the current tokio runtime.
pub fn spawn_sink(dir: PathBuf, config: SinkConfig) -> Result<SinkHandle, reqwest::Error> {
    let mut builder = reqwest::Client::builder()
        .timeout(config.timeout)
        .connect_timeout(config.timeout)
        // See the module docs: a redirect must never count as a delivery or carry the header.
        .redirect(reqwest::redirect::Policy::none());
    for cert in &config.extra_root_certs {
        builder = builder.add_root_certificate(cert.clone());
    }
    let client = builder.build()?;
    let notify = Arc::new(Notify::new());
    let stats = Arc::new(SinkStats::default());
    let sent = Arc::new(std::sync::Mutex::new(Position::default()));
    let task = tokio::spawn(run(
        dir,
        config,
        client,
        Arc::clone(&notify),
        Arc::clone(&stats),
        Arc::clone(&sent),
    ));
    Ok(SinkHandle {
        notify,
        stats,
        sent,
        task,
    })
}

enum Outcome {
    Delivered,
    Rejected,
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(std::io::Error::other)?
}

async fn run(
    dir: PathBuf,
    config: SinkConfig,
    client: reqwest::Client,
    notify: Arc<Notify>,
    stats: Arc<SinkStats>,
    sent: Arc<std::sync::Mutex<Position>>,
) {
    let mut backoff = Backoff::new(&config);
    let mut pos = loop {
        let d = dir.clone();
        match blocking(move || crate::cursor::load(&d)).await {
            Ok(p) => break p,
            Err(e) => {
                tracing::error!(error = %e, "usage sink: cannot read the cursor; retrying");
                tokio::time::sleep(backoff.next()).await;
            }
        }
    };
    tracing::info!(url = %redact_url(&config.url), segment = pos.segment, offset = pos.offset, "usage sink started");
    let publish = |p: Position| *sent.lock().unwrap_or_else(|e| e.into_inner()) = p;
    publish(pos);
    loop {
        let d = dir.clone();
        let read = blocking(move || read_from(&d, pos, 64)).await;
        let (entries, end) = match read {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "usage sink: cannot read the ledger; retrying");
                tokio::time::sleep(backoff.next()).await;
                continue;
            }
        };
        if entries.is_empty() {
            if end != pos {
                // Only skipped lines: move past them.
                pos = store(&dir, end, &mut backoff).await;
                publish(pos);
            }
            tokio::select! {
                () = notify.notified() => {}
                () = tokio::time::sleep(config.poll_interval) => {}
            }
            continue;
        }
        let last = entries.last().map(|e| e.end);
        // The ledger was read: the next failure starts from the first step again.
        backoff.reset();
        for entry in entries {
            match deliver(&client, &config, &entry.record, &stats).await {
                Outcome::Delivered => {
                    stats.delivered.fetch_add(1, Ordering::Relaxed);
                }
                Outcome::Rejected => {
                    stats.rejected.fetch_add(1, Ordering::Relaxed);
                }
            }
            pos = store(&dir, entry.end, &mut backoff).await;
            publish(pos);
        }
        if last != Some(end) && end > pos {
            pos = store(&dir, end, &mut backoff).await;
            publish(pos);
        }
    }
}

/// Stores the cursor, retrying until it is on disk (moving on without it would re-send).
async fn store(dir: &std::path::Path, pos: Position, backoff: &mut Backoff) -> Position {
    loop {
        let d = dir.to_owned();
        match blocking(move || crate::cursor::store(&d, pos)).await {
            Ok(()) => return pos,
            Err(e) => {
                tracing::error!(error = %e, "usage sink: cannot store the cursor; retrying");
                tokio::time::sleep(backoff.next()).await;
            }
        }
    }
}

/// The record id as a header value: visible ASCII kept, `%` and every other byte
/// percent-encoded (`%XX`), so distinct ids give distinct keys and a resend carries the same.
fn idempotency_key(id: &str) -> String {
    let mut key = String::with_capacity(id.len());
    for b in id.bytes() {
        if b.is_ascii_graphic() && b != b'%' {
            key.push(char::from(b));
        } else {
            key.push_str(&format!("%{b:02X}"));
        }
    }
    key
}

/// `url` without user info, query or fragment: what may be logged.
pub fn redact_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut u) => {
            let _ = u.set_username("");
            let _ = u.set_password(None);
            let hidden = u.query().is_some();
            u.set_query(None);
            u.set_fragment(None);
            let mut s = u.to_string();
            if hidden {
                s.push_str("?<redacted>");
            }
            s
        }
        Err(_) => "<unparseable url>".to_owned(),
    }
}

async fn deliver(
    client: &reqwest::Client,
    config: &SinkConfig,
    record: &UsageRecord,
    stats: &SinkStats,
) -> Outcome {
    let body = match serde_json::to_vec(record) {
        Ok(b) => b,
        Err(e) => {
            tracing::error!(record_id = %record.record_id, error = %e, "usage sink: cannot encode a record; skipped");
            return Outcome::Rejected;
        }
    };
    let key = idempotency_key(&record.record_id);
    let auth = config.auth_header.as_ref().and_then(|(name, value)| {
        let name = reqwest::header::HeaderName::from_bytes(name.as_bytes()).ok()?;
        let mut value = reqwest::header::HeaderValue::from_str(value).ok()?;
        // Kept out of debug output and HPACK tables.
        value.set_sensitive(true);
        Some((name, value))
    });
    let mut backoff = Backoff::new(config);
    loop {
        let mut req = client
            .post(&config.url)
            .header("content-type", "application/json")
            .header("idempotency-key", &key)
            .body(body.clone());
        if let Some((name, value)) = &auth {
            req = req.header(name.clone(), value.clone());
        }
        let why = match req.send().await {
            Ok(resp) => {
                let status = resp.status();
                if status.is_success() || status.as_u16() == 409 {
                    tracing::debug!(record_id = %record.record_id, status = status.as_u16(), "usage record delivered");
                    return Outcome::Delivered;
                }
                if status.is_redirection() {
                    // Not followed (module docs): the operator must fix `sink_url`.
                    let location = resp
                        .headers()
                        .get(reqwest::header::LOCATION)
                        .and_then(|l| l.to_str().ok())
                        .map(redact_url)
                        .unwrap_or_default();
                    format!("HTTP {status} (redirect to {location:?} not followed; fix sink_url)")
                } else if matches!(status.as_u16(), 400 | 413 | 422) {
                    tracing::error!(record_id = %record.record_id, status = status.as_u16(),
                        "usage sink refused the record for good; skipped (it stays in the ledger)");
                    return Outcome::Rejected;
                } else {
                    format!("HTTP {status}")
                }
            }
            // Without the URL (its query may hold a token); the text never names a header.
            Err(e) => format!("{}", e.without_url()),
        };
        stats.failures.fetch_add(1, Ordering::Relaxed);
        let delay = backoff.next();
        tracing::warn!(record_id = %record.record_id, error = %why,
            retry_in_ms = delay.as_millis() as u64, "usage sink: delivery failed; retrying");
        tokio::time::sleep(delay).await;
    }
}

/// Exponential backoff with jitter: each delay is uniform in [½, 1] of the current step, which
/// doubles up to the cap.
struct Backoff {
    first: Duration,
    step: Duration,
    max: Duration,
}

impl Backoff {
    fn new(config: &SinkConfig) -> Backoff {
        let first = config.initial_backoff.max(Duration::from_millis(1));
        Backoff {
            first,
            step: first,
            max: config.max_backoff.max(first),
        }
    }

    fn next(&mut self) -> Duration {
        let d = self.step.mul_f64(rand::thread_rng().gen_range(0.5..=1.0));
        self.step = self.step.saturating_mul(2).min(self.max);
        d
    }

    /// Back to the first step (after a success).
    fn reset(&mut self) {
        self.step = self.first;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_the_cap_with_jitter() {
        let mut cfg = SinkConfig::new("http://x");
        cfg.initial_backoff = Duration::from_millis(100);
        cfg.max_backoff = Duration::from_millis(400);
        let mut b = Backoff::new(&cfg);
        let d: Vec<_> = (0..5).map(|_| b.next().as_millis()).collect();
        assert!((50..=100).contains(&d[0]), "{d:?}");
        assert!((100..=200).contains(&d[1]), "{d:?}");
        assert!((200..=400).contains(&d[2]), "{d:?}");
        assert!((200..=400).contains(&d[4]), "{d:?}");
        b.reset();
        assert!((50..=100).contains(&b.next().as_millis()));
        // A huge cap cannot overflow the doubling.
        cfg.max_backoff = Duration::MAX;
        let mut b = Backoff::new(&cfg);
        for _ in 0..200 {
            b.next();
        }
    }

    #[test]
    fn logged_urls_hide_user_info_and_query() {
        let r = redact_url("https://user:pw@billing.example/u?token=sekrit#f");
        assert_eq!(r, "https://billing.example/u?<redacted>");
        assert_eq!(redact_url("http://127.0.0.1:9/u"), "http://127.0.0.1:9/u");
    }

    #[test]
    fn keys_are_header_safe_and_stable() {
        assert_eq!(idempotency_key("env_1/s/w/n"), "env_1/s/w/n");
        assert_eq!(idempotency_key("a b\u{e9}"), "a%20b%C3%A9");
        // Ids that the old `_` mapping merged stay distinct.
        assert_ne!(idempotency_key("a b"), idempotency_key("a_b"));
        assert_ne!(idempotency_key("a%20b"), idempotency_key("a b"));
    }

    #[test]
    fn debug_redacts_the_auth_value() {
        let mut cfg = SinkConfig::new("http://x");
        cfg.auth_header = Some(("authorization".into(), "Bearer sekrit".into()));
        assert!(!format!("{cfg:?}").contains("sekrit"));
    }
}
