//! Upstream aliases: `http://<name>.internal/<path>` inside the sandbox is
//! forwarded by the proxy to `<url>/<path>` (TLS to the upstream with the webpki
//! roots plus the upstream's own `ca_cert`), with configured headers added.
//!
//! The header values (API keys) are read from the worker's environment once, at
//! start, and live only in this process: the sandbox sends plain HTTP to the
//! alias and never sees them (a header of the same name sent by the sandbox is
//! replaced, not merged). The values are marked sensitive and never logged or
//! printed by `Debug`. The destination is the operator's own URL, so it is not
//! subject to `allowed_hosts` or the deny set (a sister API on the private
//! network is the point); a session's narrowing list still applies to the alias
//! name.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use bytes::Bytes;
use futures::StreamExt;
use http_body_util::{BodyExt, BodyStream, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::header::{HeaderName, HeaderValue};
use hyper::{Request, Response, StatusCode};

use crate::config::{HeaderSource, UpstreamConfig};
use crate::http::{Body, BoxError, join, strip_hop_by_hop};
use crate::policy::PolicyError;
use crate::stats::Counters;

pub(crate) struct Upstream {
    name: String,
    base: reqwest::Url,
    headers: Vec<(HeaderName, HeaderValue)>,
    client: reqwest::Client,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("name", &self.name)
            .field("base", &self.base.as_str())
            .field(
                "headers",
                &self
                    .headers
                    .iter()
                    .map(|(n, _)| n.as_str())
                    .collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 63
        && n.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !n.starts_with('-')
}

pub(crate) fn build(
    configs: &[UpstreamConfig],
    extra_roots: Vec<reqwest::Certificate>,
    env: impl Fn(&str) -> Option<String>,
) -> Result<HashMap<String, Upstream>, PolicyError> {
    let mut out = HashMap::new();
    if configs.is_empty() {
        return Ok(out);
    }
    // Redirects are not followed (a redirect is the upstream's answer to the
    // sandbox, not a new destination for the proxy to reach with the key).
    let client = |extra: &[reqwest::Certificate]| {
        let mut builder = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .connect_timeout(std::time::Duration::from_secs(10));
        for c in extra_roots.iter().chain(extra) {
            builder = builder.add_root_certificate(c.clone());
        }
        builder
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))
    };
    let shared = client(&[]).map_err(|e| PolicyError(format!("upstreams: {e}")))?;
    for c in configs {
        let err = |why: String| PolicyError(format!("upstream {:?}: {why}", c.name));
        if !valid_name(&c.name) {
            return Err(err("name must be lowercase letters, digits and '-'".into()));
        }
        let base = reqwest::Url::parse(&c.url).map_err(|e| err(format!("url: {e}")))?;
        if !matches!(base.scheme(), "http" | "https") || base.host_str().is_none() {
            return Err(err("url must be http:// or https:// with a host".into()));
        }
        let headers = headers(&c.headers, &env).map_err(err)?;
        if base.scheme() == "http" && !headers.is_empty() {
            // Allowed (a sister API on a private network may have no TLS), but the
            // key then crosses that network in clear text.
            tracing::warn!(
                upstream = %c.name,
                "upstream url is plain http:// and carries credential headers: they are sent unencrypted"
            );
        }
        let client = match &c.ca_cert {
            None => shared.clone(),
            Some(path) => {
                let pem = std::fs::read(path)
                    .map_err(|e| err(format!("ca_cert {}: {e}", path.display())))?;
                let certs = reqwest::Certificate::from_pem_bundle(&pem)
                    .ok()
                    .filter(|c| !c.is_empty())
                    .ok_or_else(|| {
                        err(format!("ca_cert {}: no PEM certificate", path.display()))
                    })?;
                client(&certs).map_err(err)?
            }
        };
        let up = Upstream {
            name: c.name.clone(),
            base,
            headers,
            client,
        };
        if out.insert(c.name.clone(), up).is_some() {
            return Err(err("defined twice".into()));
        }
    }
    Ok(out)
}

fn headers(
    map: &BTreeMap<String, HeaderSource>,
    env: &impl Fn(&str) -> Option<String>,
) -> Result<Vec<(HeaderName, HeaderValue)>, String> {
    let mut out = Vec::new();
    for (name, src) in map {
        let n = HeaderName::try_from(name.as_str())
            .map_err(|_| format!("invalid header name {name:?}"))?;
        let v = env(&src.env)
            .ok_or_else(|| format!("header {name}: environment variable {} is not set", src.env))?;
        let mut v = HeaderValue::try_from(v).map_err(|_| {
            format!(
                "header {name}: the value of {} is not a valid header value",
                src.env
            )
        })?;
        v.set_sensitive(true);
        out.push((n, v));
    }
    Ok(out)
}

/// One forwarded request to an upstream; its `egress decision` log line (host,
/// port, status, bytes each way, duration) is written when the last reference
/// goes, i.e. when the response body has been streamed or dropped.
struct Exchange {
    session: String,
    upstream: String,
    host: String,
    port: u16,
    status: AtomicU64,
    up: AtomicU64,
    down: AtomicU64,
    started: Instant,
}

impl Drop for Exchange {
    fn drop(&mut self) {
        let status = self.status.load(Ordering::Relaxed);
        if status == 0 {
            // No response: the error line was written instead.
            return;
        }
        tracing::info!(
            session = %self.session, upstream = %self.upstream, host = %self.host, port = self.port,
            decision = "allowed", status,
            bytes_up = self.up.load(Ordering::Relaxed), bytes_down = self.down.load(Ordering::Relaxed),
            duration_ms = self.started.elapsed().as_millis() as u64, "egress decision"
        );
    }
}

impl Upstream {
    /// The upstream URL for a sandbox request's `path` and `query`, or `None` when
    /// it would leave the base URL's path. The header (the key) is scoped to the
    /// operator's base path (`https://api.example/v1/`): `/../admin`, or its
    /// percent-encoded `/%2e%2e/admin`, would otherwise be normalised by the URL
    /// parser into `/admin` *with the key attached*. Dot segments are refused
    /// outright (no client needs them), and the final path is checked to still
    /// start with the base path, so an encoding not thought of here fails closed.
    pub(crate) fn target(&self, path: &str, query: Option<&str>) -> Option<reqwest::Url> {
        join(&self.base, path, query)
    }

    pub(crate) async fn forward(
        &self,
        session: &str,
        counters: &Arc<Counters>,
        req: Request<Incoming>,
        started: Instant,
    ) -> Response<Body> {
        let (mut parts, body) = req.into_parts();
        let Some(url) = self.target(parts.uri.path(), parts.uri.query()) else {
            counters.denied();
            tracing::info!(session = %session, upstream = %self.name, decision = "denied", reason = "path", "egress decision");
            let mut r = Response::new(
                http_body_util::Full::new(Bytes::from(format!(
                    "egress proxy: refused {}.internal: the path may not contain dot segments\n",
                    self.name
                )))
                .map_err(|never| match never {})
                .boxed(),
            );
            *r.status_mut() = StatusCode::BAD_REQUEST;
            return r;
        };
        strip_hop_by_hop(&mut parts.headers);
        parts.headers.remove(hyper::header::HOST);
        for (n, _) in &self.headers {
            parts.headers.remove(n);
        }
        for (n, v) in &self.headers {
            parts.headers.insert(n.clone(), v.clone());
        }
        counters.allowed();
        let up_counters = counters.clone();
        let log = Arc::new(Exchange {
            session: session.to_owned(),
            upstream: self.name.clone(),
            host: self.base.host_str().unwrap_or_default().to_owned(),
            port: self.base.port_or_known_default().unwrap_or(0),
            status: AtomicU64::new(0),
            up: AtomicU64::new(0),
            down: AtomicU64::new(0),
            started,
        });
        let up_log = log.clone();
        let body_stream = BodyStream::new(body).filter_map(move |frame| {
            let c = up_counters.clone();
            let l = up_log.clone();
            async move {
                match frame {
                    Ok(f) => f.into_data().ok().map(|d| {
                        c.up(d.len() as u64);
                        l.up.fetch_add(d.len() as u64, Ordering::Relaxed);
                        Ok::<Bytes, hyper::Error>(d)
                    }),
                    Err(e) => Some(Err(e)),
                }
            }
        });
        let result = self
            .client
            .request(parts.method, url)
            .headers(parts.headers)
            .body(reqwest::Body::wrap_stream(body_stream))
            .send()
            .await;
        let resp = match result {
            Ok(r) => r,
            Err(e) => {
                counters.error();
                tracing::info!(
                    session = %session, upstream = %self.name, host = %log.host, port = log.port,
                    decision = "error", error = %e, "egress decision"
                );
                let mut r = Response::new(
                    http_body_util::Full::new(Bytes::from(format!(
                        "egress proxy: upstream {}.internal failed: {}\n",
                        self.name,
                        // The URL may hold a path the sandbox chose; no header values.
                        e.without_url()
                    )))
                    .map_err(|never| match never {})
                    .boxed(),
                );
                *r.status_mut() = StatusCode::BAD_GATEWAY;
                return r;
            }
        };
        // The decision's log line is written when the response body is done (or
        // dropped), with the bytes each way: see `Exchange`.
        log.status
            .store(u64::from(resp.status().as_u16()), Ordering::Relaxed);
        let mut out = Response::builder().status(resp.status());
        if let Some(h) = out.headers_mut() {
            *h = resp.headers().clone();
            strip_hop_by_hop(h);
        }
        let down = counters.clone();
        let stream = resp.bytes_stream().map(move |chunk| {
            chunk
                .map(|b| {
                    down.down(b.len() as u64);
                    log.down.fetch_add(b.len() as u64, Ordering::Relaxed);
                    Frame::data(b)
                })
                .map_err(|e| Box::new(e) as BoxError)
        });
        out.body(BodyExt::boxed(StreamBody::new(stream)))
            .unwrap_or_else(|_| {
                Response::new(
                    http_body_util::Empty::new()
                        .map_err(|never| match never {})
                        .boxed(),
                )
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upstream(url: &str) -> Upstream {
        let cfg = UpstreamConfig {
            name: "sister".into(),
            url: url.into(),
            headers: BTreeMap::new(),
            ca_cert: None,
        };
        build(&[cfg], Vec::new(), |_| None)
            .unwrap()
            .remove("sister")
            .unwrap()
    }

    /// Review finding: `/../admin` (and `%2e%2e`) left the base path with the key.
    #[test]
    fn paths_cannot_leave_the_base_path() {
        let u = upstream("https://api.sister.example/v1/");
        let ok = u.target("/models", Some("x=1")).unwrap();
        assert_eq!(ok.as_str(), "https://api.sister.example/v1/models?x=1");
        assert_eq!(
            u.target("/a/b.c/..d", None).unwrap().path(),
            "/v1/a/b.c/..d"
        );
        for bad in [
            "/../admin",
            "/%2e%2e/admin",
            "/%2E%2e/admin",
            "/.%2e/admin",
            "/models/../../admin",
            "/./models",
            "/%2e/models",
            "/a/..",
            "/..\\admin",
        ] {
            assert!(u.target(bad, None).is_none(), "{bad}");
        }
        // A base without a path: nothing to escape, dot segments still refused.
        let root = upstream("https://api.sister.example");
        assert_eq!(root.target("/x", None).unwrap().path(), "/x");
        assert!(root.target("/../x", None).is_none());
    }
}
