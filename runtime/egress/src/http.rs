//! HTTP plumbing shared by the proxy ([`crate::proxy`]), its upstream aliases
//! ([`crate::upstream`]) and the configuration ([`crate::config`]): the response body
//! type, the hop-by-hop header filter, and the URL join that keeps a path below its
//! base.

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use hyper::header::{HeaderMap, HeaderName};

/// Boxed error of response bodies.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// The proxy's response body.
pub(crate) type Body = BoxBody<Bytes, BoxError>;

/// Hop-by-hop headers (RFC 9110 §7.6.1) and the proxy's own, never forwarded.
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let listed: Vec<HeaderName> = headers
        .get_all(hyper::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::try_from(n.trim()).ok())
        .collect();
    for n in listed {
        headers.remove(n);
    }
    for n in [
        "connection",
        "proxy-connection",
        "keep-alive",
        "proxy-authorization",
        "proxy-authenticate",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    ] {
        headers.remove(n);
    }
}

/// Whether a path segment is `.` or `..` once percent-decoded (`%2e`, `%2E`).
fn is_dot_segment(seg: &str) -> bool {
    let decoded = seg.to_ascii_lowercase().replace("%2e", ".");
    decoded == "." || decoded == ".."
}

/// `base`'s path followed by `path` (and `query`), or `None` when the result
/// would leave `base`'s path (see
/// [`Upstream::target`](crate::upstream::Upstream::target)).
pub(crate) fn join(base: &reqwest::Url, path: &str, query: Option<&str>) -> Option<reqwest::Url> {
    if path.split(['/', '\\']).any(is_dot_segment) {
        return None;
    }
    let base_path = base.path().trim_end_matches('/');
    let mut url = base.clone();
    url.set_path(&format!("{base_path}{path}"));
    url.set_query(query);
    let prefix = format!("{base_path}/");
    (url.path() == base_path || url.path().starts_with(&prefix)).then_some(url)
}
