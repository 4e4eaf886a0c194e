//! The remote backend: registry names that forward `compute` to HTTP
//! endpoints (the sister model services), under the tensor convention in
//! the crate docs.
//!
//! # Blocking
//!
//! `wasmtime-wasi-nn` calls `compute` synchronously, so the HTTP exchange
//! happens on the calling thread with `ureq`, a blocking client that does
//! not use tokio: it neither needs nor enters an async runtime, so it is
//! safe (no "blocking inside async context" panic, unlike
//! `reqwest::blocking`) even when the calling thread belongs to a tokio
//! runtime. The runtime core runs guest calls on tokio's blocking pool
//! (`spawn_blocking`), where blocking stalls no async task; the per-call
//! timeout bounds how long a thread is held.
//!
//! # What the guest can and cannot do
//!
//! The guest picks a registered name and supplies bytes. The host fixes the
//! URL, the method, the headers and the credentials; redirects are not
//! followed and proxy variables are ignored, so the bytes go to the
//! configured URL and nowhere else. The API key is read from the
//! environment once at start-up, kept in a value whose `Debug` is redacted,
//! and only ever written into the outgoing request; error messages to the
//! guest name the model, never the URL or the key.
//!
//! Quotas are per session (shared by every store made from one
//! [`crate::NnSession`]): each attempt counts as a call before it is made,
//! and request plus response bytes count against the byte quota; a response
//! that would cross it is cut off (the read is limited to what is left) and
//! reported as an error.

use crate::config::{RemoteKind, RemoteModel};
use crate::error::{Failure, FailureCode};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use wasmtime_wasi_nn::backend::{
    BackendError, BackendExecutionContext, BackendGraph, Id, NamedTensor,
};
use wasmtime_wasi_nn::wit::TensorType;
use wasmtime_wasi_nn::{ExecutionContext, Graph, Tensor};

/// How much of an endpoint's error body is quoted back to the guest.
const ERROR_SNIPPET: usize = 512;

/// An API key; never printed.
#[derive(Clone)]
struct Secret(String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// One configured remote model, shared by every session.
#[derive(Debug)]
pub(crate) struct Endpoint {
    pub(crate) name: String,
    pub(crate) kind: RemoteKind,
    url: String,
    model: Option<String>,
    /// Credential headers: `api_key_env`'s, or an upstream's (see
    /// [`RemoteModel::header_env`]).
    auth: Vec<(String, Secret)>,
    content_type: String,
    timeout: Duration,
    agent: ureq::Agent,
}

impl Endpoint {
    /// Validates `m` and resolves its credentials from the environment.
    pub(crate) fn new(m: &RemoteModel) -> Result<Endpoint, String> {
        if !crate::config::valid_name(&m.name) {
            return Err(format!(
                "remote model name {:?} must be 1-64 characters of [a-z0-9._-]",
                m.name
            ));
        }
        if !m.name.starts_with(m.kind.prefix()) {
            return Err(format!(
                "remote model {:?} is of kind {} so its name must start with {:?}",
                m.name,
                m.kind.as_str(),
                m.kind.prefix()
            ));
        }
        if m.url.is_empty() {
            return Err(match &m.upstream {
                Some(u) => format!(
                    "remote model {:?}: upstream {u:?} was not resolved (the runtime fills in \
                     url and headers from [runtime.networking.upstreams])",
                    m.name
                ),
                None => format!("remote model {:?}: url (or upstream) is required", m.name),
            });
        }
        let uri: ureq::http::Uri = m
            .url
            .parse()
            .map_err(|e| format!("remote model {:?}: bad url {:?}: {e}", m.name, m.url))?;
        if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
            return Err(format!(
                "remote model {:?}: url {:?} must be http:// or https:// with a host",
                m.name, m.url
            ));
        }
        if m.timeout_ms == 0 {
            return Err(format!(
                "remote model {:?}: timeout must be positive",
                m.name
            ));
        }
        let mut auth = Vec::new();
        for (header, var) in &m.header_env {
            let key = std::env::var(var).map_err(|_| {
                format!(
                    "remote model {:?}: environment variable {var} (header {header}) is not set",
                    m.name
                )
            })?;
            let name = ureq::http::HeaderName::from_bytes(header.as_bytes())
                .map_err(|e| format!("remote model {:?}: bad header {header:?}: {e}", m.name))?;
            ureq::http::HeaderValue::from_str(&key).map_err(|_| {
                format!(
                    "remote model {:?}: the value of {var} is not a valid header value",
                    m.name
                )
            })?;
            auth.push((name.as_str().to_owned(), Secret(key)));
        }
        match &m.api_key_env {
            None => {}
            Some(var) => {
                let key = std::env::var(var).map_err(|_| {
                    format!(
                        "remote model {:?}: environment variable {var} (api_key_env) is not set",
                        m.name
                    )
                })?;
                let header = m
                    .api_key_header
                    .clone()
                    .unwrap_or_else(|| "authorization".into())
                    .to_ascii_lowercase();
                let value = if header == "authorization" {
                    format!("Bearer {key}")
                } else {
                    key
                };
                ureq::http::HeaderName::from_bytes(header.as_bytes()).map_err(|e| {
                    format!(
                        "remote model {:?}: bad api_key_header {header:?}: {e}",
                        m.name
                    )
                })?;
                ureq::http::HeaderValue::from_str(&value).map_err(|_| {
                    format!(
                        "remote model {:?}: the key in {var} is not a valid header value",
                        m.name
                    )
                })?;
                auth.push((header, Secret(value)));
            }
        }
        let timeout = Duration::from_millis(m.timeout_ms);
        let config = ureq::Agent::config_builder()
            .timeout_global(Some(timeout))
            .http_status_as_error(false)
            .max_redirects(0)
            .proxy(None)
            .user_agent("wasm-sandbox-nn")
            .build();
        Ok(Endpoint {
            name: m.name.clone(),
            kind: m.kind,
            url: m.url.clone(),
            model: m.model.clone(),
            auth,
            content_type: m
                .content_type
                .clone()
                .unwrap_or_else(|| "application/octet-stream".into()),
            timeout,
            agent: ureq::Agent::new_with_config(config),
        })
    }

    /// Builds the request body and its content type for one payload.
    fn request_body(&self, payload: &[u8]) -> Result<(Vec<u8>, String), Failure> {
        let invalid = |m: String| Failure::new(FailureCode::InvalidArgument, m);
        match self.kind {
            RemoteKind::Chat | RemoteKind::Tts => {
                let mut json: serde_json::Value = serde_json::from_slice(payload).map_err(|e| {
                    invalid(format!(
                        "model {}: input must be UTF-8 JSON: {e}",
                        self.name
                    ))
                })?;
                let obj = json.as_object_mut().ok_or_else(|| {
                    invalid(format!("model {}: input must be a JSON object", self.name))
                })?;
                if let Some(m) = &self.model {
                    obj.insert("model".into(), m.clone().into());
                } else if !obj.contains_key("model") {
                    obj.insert("model".into(), self.name.clone().into());
                }
                let body = serde_json::to_vec(&json).map_err(|e| invalid(e.to_string()))?;
                Ok((body, "application/json".into()))
            }
            RemoteKind::Transcription => {
                let model = self.model.as_deref().unwrap_or(&self.name);
                Ok(multipart(payload, model))
            }
            RemoteKind::Ocr => Ok((payload.to_vec(), self.content_type.clone())),
            RemoteKind::Tensor => Err(invalid(format!(
                "model {}: tensor models take named tensors",
                self.name
            ))),
        }
    }

    /// One call: quota check, request, response. The error is what the
    /// guest sees (as wasi-nn `runtime-error`'s data).
    pub(crate) fn call(&self, payload: &[u8], quota: &Quota) -> Result<Vec<u8>, Failure> {
        let (body, content_type) = self.request_body(payload)?;
        self.send(&body, &content_type, quota)
    }

    /// One `tensor` model call: the guest's tensors as an Open Inference
    /// Protocol v2 request, the answer's tensors back.
    pub(crate) fn call_tensors(
        &self,
        inputs: &[NamedTensor],
        quota: &Quota,
    ) -> Result<Vec<NamedTensor>, Failure> {
        let body = crate::oip::encode(&self.name, inputs)?;
        let answer = self.send(&body, "application/json", quota)?;
        crate::oip::decode(&self.name, &answer)
    }

    /// POSTs `body` under the quota; the error is what the guest sees.
    fn send(&self, body: &[u8], content_type: &str, quota: &Quota) -> Result<Vec<u8>, Failure> {
        let left = quota.begin(&self.name, body.len() as u64)?;
        let mut request = self
            .agent
            .post(&self.url)
            .header("content-type", content_type);
        for (header, Secret(value)) in &self.auth {
            request = request.header(header.as_str(), value.as_str());
        }
        tracing::debug!(model = %self.name, url = %self.url, bytes = body.len(), "remote wasi-nn call");
        let mut response = request.send(body).map_err(|e| self.describe(&e))?;
        let status = response.status();
        let bytes = response.body_mut().with_config().limit(left).read_to_vec().map_err(|e| match e {
            ureq::Error::BodyExceedsLimit(_) => Failure::new(
                FailureCode::Security,
                format!("model {}: quota exceeded: the response passes this session's remote byte quota", self.name),
            ),
            e => self.describe(&e),
        })?;
        quota.received(&self.name, bytes.len() as u64)?;
        if !status.is_success() {
            let end = bytes.len().min(ERROR_SNIPPET);
            let snippet = String::from_utf8_lossy(&bytes[..end]);
            tracing::warn!(model = %self.name, url = %self.url, %status, "remote wasi-nn endpoint error");
            return Err(Failure::new(
                FailureCode::RuntimeError,
                format!(
                    "model {}: endpoint answered HTTP {}: {snippet}",
                    self.name,
                    status.as_u16()
                ),
            ));
        }
        Ok(bytes)
    }

    fn describe(&self, e: &ureq::Error) -> Failure {
        tracing::warn!(model = %self.name, url = %self.url, error = %e, "remote wasi-nn call failed");
        let message = match e {
            ureq::Error::Timeout(_) => {
                let ms = self.timeout.as_millis();
                return Failure::new(
                    FailureCode::Timeout,
                    format!(
                        "model {}: the endpoint did not answer within {ms} ms",
                        self.name
                    ),
                );
            }
            ureq::Error::ConnectionFailed | ureq::Error::HostNotFound | ureq::Error::Io(_) => {
                format!("model {}: the endpoint is unreachable", self.name)
            }
            ureq::Error::TooManyRedirects | ureq::Error::RedirectFailed => {
                format!(
                    "model {}: the endpoint answered with a redirect, which is not followed",
                    self.name
                )
            }
            _ => format!("model {}: the request failed: {}", self.name, e.kind_str()),
        };
        Failure::new(FailureCode::RuntimeError, message)
    }
}

/// A small `kind_str` so guest-facing messages never carry URLs from
/// ureq's own error texts.
trait KindStr {
    fn kind_str(&self) -> &'static str;
}

impl KindStr for ureq::Error {
    fn kind_str(&self) -> &'static str {
        match self {
            ureq::Error::Tls(_) => "TLS error",
            ureq::Error::Protocol(_) => "HTTP protocol error",
            ureq::Error::BadUri(_) => "bad URI",
            _ => "HTTP client error",
        }
    }
}

/// `multipart/form-data` with the payload as `file` and the `model` field,
/// as OpenAI-style `/v1/audio/transcriptions` endpoints expect.
fn multipart(payload: &[u8], model: &str) -> (Vec<u8>, String) {
    use std::sync::atomic::AtomicU64;
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let mut n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let boundary = loop {
        let b = format!("----wasm-sandbox-nn-{nanos:x}-{n:x}");
        if !contains(payload, b.as_bytes()) {
            break b;
        }
        n = n.wrapping_add(0x9E37_79B9_7F4A_7C15);
    };
    let mut body = Vec::with_capacity(payload.len() + 512);
    body.extend_from_slice(
        format!(
            "--{boundary}\r\ncontent-disposition: form-data; name=\"model\"\r\n\r\n{model}\r\n\
             --{boundary}\r\ncontent-disposition: form-data; name=\"file\"; filename=\"audio\"\r\n\
             content-type: application/octet-stream\r\n\r\n"
        )
        .as_bytes(),
    );
    body.extend_from_slice(payload);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    (body, format!("multipart/form-data; boundary={boundary}"))
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

/// A session's remote-call budget (see the module docs).
#[derive(Debug)]
pub(crate) struct Quota {
    max_calls: u64,
    max_bytes: u64,
    calls: AtomicU64,
    bytes: AtomicU64,
}

impl Quota {
    pub(crate) fn new(max_calls: u64, max_bytes: u64) -> Quota {
        Quota {
            max_calls,
            max_bytes,
            calls: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
        }
    }

    /// Counts one call sending `sent` bytes; returns the bytes left for the
    /// response.
    fn begin(&self, model: &str, sent: u64) -> Result<u64, Failure> {
        let refuse = |m: String| Failure::new(FailureCode::Security, m);
        let max_calls = self.max_calls;
        self.calls.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |c| (c < max_calls).then_some(c + 1)).map_err(
            |_| refuse(format!("model {model}: quota exceeded: this session has used its {max_calls} remote calls")),
        )?;
        let max_bytes = self.max_bytes;
        let total = self
            .bytes
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |b| b.checked_add(sent).filter(|t| *t <= max_bytes))
            .map_err(|_| {
                refuse(format!(
                    "model {model}: quota exceeded: sending {sent} bytes would pass this session's {max_bytes}"
                ))
            })?;
        Ok(max_bytes - (total + sent))
    }

    fn received(&self, model: &str, n: u64) -> Result<(), Failure> {
        let max_bytes = self.max_bytes;
        self.bytes
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |b| b.checked_add(n).filter(|t| *t <= max_bytes))
            .map(drop)
            .map_err(|_| {
                Failure::new(
                    FailureCode::Security,
                    format!("model {model}: quota exceeded: the response passes this session's remote byte quota"),
                )
            })
    }

    /// Calls made so far.
    pub(crate) fn calls(&self) -> u64 {
        self.calls.load(Ordering::SeqCst)
    }

    /// Bytes sent and received so far.
    pub(crate) fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::SeqCst)
    }
}

/// A remote model as one session's graph.
pub(crate) struct RemoteGraph {
    pub(crate) endpoint: Arc<Endpoint>,
    pub(crate) quota: Arc<Quota>,
}

impl RemoteGraph {
    pub(crate) fn graph(endpoint: Arc<Endpoint>, quota: Arc<Quota>) -> Graph {
        let boxed: Box<dyn BackendGraph> = Box::new(RemoteGraph { endpoint, quota });
        Graph::from(boxed)
    }
}

impl BackendGraph for RemoteGraph {
    fn init_execution_context(&self) -> Result<ExecutionContext, BackendError> {
        let boxed: Box<dyn BackendExecutionContext> = Box::new(RemoteContext {
            endpoint: self.endpoint.clone(),
            quota: self.quota.clone(),
            input: None,
            output: None,
        });
        Ok(ExecutionContext::from(boxed))
    }
}

struct RemoteContext {
    endpoint: Arc<Endpoint>,
    quota: Arc<Quota>,
    input: Option<Tensor>,
    output: Option<Tensor>,
}

fn err(msg: impl Into<String>) -> BackendError {
    Failure::new(FailureCode::InvalidArgument, msg).into_backend()
}

/// The payload of the single `u8` input tensor.
fn payload(model: &str, t: &Tensor) -> Result<(), BackendError> {
    if t.ty != TensorType::U8 {
        return Err(err(format!(
            "model {model}: the input must be a u8 tensor (bytes), not {:?}",
            t.ty
        )));
    }
    let elements = t
        .dimensions
        .iter()
        .try_fold(1u64, |acc, d| acc.checked_mul(u64::from(*d)));
    if elements != Some(t.data.len() as u64) {
        return Err(err(format!(
            "model {model}: input dimensions {:?} do not match its {} bytes (use [len])",
            t.dimensions,
            t.data.len()
        )));
    }
    Ok(())
}

impl RemoteContext {
    fn run(&mut self, input: &Tensor) -> Result<Tensor, BackendError> {
        payload(&self.endpoint.name, input)?;
        let bytes = self
            .endpoint
            .call(&input.data, &self.quota)
            .map_err(Failure::into_backend)?;
        let len = u32::try_from(bytes.len()).map_err(|_| {
            Failure::new(FailureCode::TooLarge, "response over 4 GiB").into_backend()
        })?;
        let out = Tensor::new(vec![len], TensorType::U8, bytes);
        self.output = Some(out.clone());
        Ok(out)
    }
}

impl BackendExecutionContext for RemoteContext {
    fn set_input(&mut self, id: Id, tensor: &Tensor) -> Result<(), BackendError> {
        match id {
            Id::Index(0) => {}
            Id::Name(n) if n == "input" => {}
            other => {
                return Err(err(format!(
                    "model {}: the only input is 0 / \"input\", not {other:?}",
                    self.endpoint.name
                )));
            }
        }
        payload(&self.endpoint.name, tensor)?;
        self.input = Some(tensor.clone());
        Ok(())
    }

    fn get_output(&mut self, id: Id) -> Result<Tensor, BackendError> {
        match id {
            Id::Index(0) => {}
            Id::Name(n) if n == "output" => {}
            other => {
                return Err(err(format!(
                    "model {}: the only output is 0 / \"output\", not {other:?}",
                    self.endpoint.name
                )));
            }
        }
        self.output
            .clone()
            .ok_or_else(|| err("no output yet: call compute first"))
    }

    fn compute(
        &mut self,
        inputs: Option<Vec<NamedTensor>>,
    ) -> Result<Option<Vec<NamedTensor>>, BackendError> {
        if self.endpoint.kind == RemoteKind::Tensor {
            let Some(inputs) = inputs else {
                return Err(err(format!(
                    "model {}: pass named tensors to compute",
                    self.endpoint.name
                )));
            };
            let outputs = self
                .endpoint
                .call_tensors(&inputs, &self.quota)
                .map_err(Failure::into_backend)?;
            return Ok(Some(outputs));
        }
        match inputs {
            Some(inputs) => {
                let [input] = <[NamedTensor; 1]>::try_from(inputs).map_err(|v| {
                    err(format!(
                        "model {}: expected exactly one input tensor, got {}",
                        self.endpoint.name,
                        v.len()
                    ))
                })?;
                let tensor = self.run(&input.tensor)?;
                Ok(Some(vec![NamedTensor {
                    name: "output".into(),
                    tensor,
                }]))
            }
            None => {
                let input = self.input.take().ok_or_else(|| err("no input set"))?;
                self.run(&input)?;
                Ok(None)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quota_counts_calls_and_bytes() {
        let q = Quota::new(2, 100);
        assert_eq!(q.begin("m", 30).unwrap(), 70);
        q.received("m", 20).unwrap();
        assert_eq!(q.bytes(), 50);
        let over = q.begin("m", 60).unwrap_err();
        assert_eq!(over.code, FailureCode::Security);
        assert!(over.message.contains("quota exceeded"), "bytes over");
        // The refused attempt still counted as a call.
        assert_eq!(q.calls(), 2);
        assert!(
            q.begin("m", 1)
                .unwrap_err()
                .message
                .contains("2 remote calls")
        );
        assert!(q.received("m", 51).is_err());
    }

    #[test]
    fn multipart_boundary_avoids_the_payload() {
        let (body, ct) = multipart(b"RIFF....WAVE", "whisper-1");
        let boundary = ct.strip_prefix("multipart/form-data; boundary=").unwrap();
        let text = String::from_utf8_lossy(&body);
        assert!(text.contains("name=\"model\"\r\n\r\nwhisper-1\r\n"));
        assert!(text.contains("filename=\"audio\""));
        assert!(text.ends_with(&format!("--{boundary}--\r\n")));
        assert!(!contains(b"RIFF....WAVE", boundary.as_bytes()));
    }

    #[test]
    fn secrets_do_not_print() {
        let s = Secret("Bearer sk-123".into());
        assert_eq!(format!("{s:?}"), "<redacted>");
    }
}
