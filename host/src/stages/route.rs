//! **route** — reads: method, path and the auth/version headers. Decides: which API family the
//! request speaks, and the upstream URL it goes to. Returns: a [`Route`], or a local answer for the
//! probes clients send to the base URL (`HEAD /`, `GET /`).
//!
//! One base URL serves both families. Paths unique to a family decide it; shared paths
//! (`/v1/models`, `/v1/files`, `/v1/batches`, anything unknown) are decided by headers: an
//! `anthropic-version` or `x-api-key` header means Anthropic, otherwise an `Authorization` header
//! means OpenAI. A client can also pin a family with a `/anthropic` or `/openai` path prefix,
//! which is removed. Unknown paths pass through to the chosen family's upstream. The upstream's
//! own path prefix is kept and the query string is forwarded as sent.

use http::{HeaderMap, Method, Uri};

use crate::config::{Upstream, Upstreams};
use crate::error::{ErrorKind, GatewayError};
use crate::protocol::Protocol;

/// What a request asks for, as far as later stages care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `POST /v1/messages`.
    Messages,
    /// `POST /v1/messages/count_tokens`.
    CountTokens,
    /// `POST /v1/chat/completions`.
    ChatCompletions,
    /// `POST /v1/responses`.
    Responses,
    /// `POST /v1/embeddings`.
    Embeddings,
    /// `POST /v1/completions` (OpenAI legacy) or `/v1/complete` (Anthropic legacy).
    Completions,
    /// `GET /v1/models[/...]`.
    Models,
    /// Anything else: passed through.
    Other,
}

impl Endpoint {
    /// Whether a body sent here must be JSON (and is parsed by `inspect`).
    pub fn takes_json(self) -> bool {
        !matches!(self, Endpoint::Models | Endpoint::Other)
    }
}

/// Where a request goes (borrowing the upstream from the gateway's config: no per-request copy).
#[derive(Debug, Clone)]
pub struct Route<'a> {
    /// API family.
    pub protocol: Protocol,
    /// Endpoint kind.
    pub endpoint: Endpoint,
    /// The upstream it goes to.
    pub upstream: &'a Upstream,
    /// Full upstream URI (prefix + path + query).
    pub uri: Uri,
}

/// Result of routing.
#[derive(Debug)]
pub enum Routed<'a> {
    /// Answer locally (base-URL probes).
    Local,
    /// Forward.
    Upstream(Route<'a>),
}

/// Routes a request.
pub fn resolve<'a>(
    upstreams: &'a Upstreams,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
) -> Result<Routed<'a>, GatewayError> {
    let path = uri.path();
    if path == "/" && (method == Method::GET || method == Method::HEAD) {
        return Ok(Routed::Local);
    }
    let (pinned, path) = if let Some(rest) = strip_segment(path, "/anthropic") {
        (Some(Protocol::Anthropic), rest)
    } else if let Some(rest) = strip_segment(path, "/openai") {
        (Some(Protocol::OpenAi), rest)
    } else {
        (None, path)
    };
    let (family, endpoint) = classify(path);
    let protocol = pinned.or(family).unwrap_or_else(|| by_headers(headers));
    let upstream = upstreams.get(protocol);

    let mut target = String::with_capacity(upstream.path_prefix.len() + uri.path().len() + 32);
    target.push_str(&upstream.path_prefix);
    target.push_str(path);
    if let Some(q) = uri.query() {
        target.push('?');
        target.push_str(q);
    }
    let uri = Uri::builder()
        .scheme(upstream.scheme.clone())
        .authority(upstream.authority.clone())
        .path_and_query(target)
        .build()
        .map_err(|_| GatewayError::downstream(ErrorKind::BadRequest, "the request path is not a valid URL path"))?;
    Ok(Routed::Upstream(Route {
        protocol,
        endpoint,
        upstream,
        uri,
    }))
}

/// `"/anthropic/v1/x"` → `Some("/v1/x")`; requires a segment boundary.
fn strip_segment<'a>(path: &'a str, prefix: &str) -> Option<&'a str> {
    let rest = path.strip_prefix(prefix)?;
    if rest.starts_with('/') { Some(rest) } else { None }
}

/// The family a path belongs to (if it is unique to one) and its endpoint kind.
fn classify(path: &str) -> (Option<Protocol>, Endpoint) {
    use Endpoint::*;
    use Protocol::*;
    let path = path.trim_end_matches('/');
    match path {
        "/v1/messages" => (Some(Anthropic), Messages),
        "/v1/messages/count_tokens" => (Some(Anthropic), CountTokens),
        "/v1/complete" => (Some(Anthropic), Completions),
        "/v1/chat/completions" => (Some(OpenAi), ChatCompletions),
        "/v1/responses" => (Some(OpenAi), Responses),
        "/v1/embeddings" => (Some(OpenAi), Embeddings),
        "/v1/completions" => (Some(OpenAi), Completions),
        _ if path == "/v1/models" || path.starts_with("/v1/models/") => (None, Models),
        _ if path.starts_with("/v1/messages/") => (Some(Anthropic), Other),
        _ if [
            "/v1/responses/",
            "/v1/chat/",
            "/v1/audio/",
            "/v1/images/",
            "/v1/moderations",
            "/v1/realtime",
            "/v1/fine_tuning/",
            "/v1/vector_stores",
            "/v1/assistants",
            "/v1/threads",
        ]
        .iter()
        .any(|p| path.starts_with(p)) =>
        {
            (Some(OpenAi), Other)
        }
        _ => (None, Other),
    }
}

fn by_headers(headers: &HeaderMap) -> Protocol {
    if headers.contains_key("anthropic-version") || headers.contains_key("x-api-key") {
        Protocol::Anthropic
    } else if headers.contains_key(http::header::AUTHORIZATION) {
        Protocol::OpenAi
    } else {
        Protocol::Anthropic
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_upstream;
    use crate::protocol::AuthStyle;

    fn upstreams() -> &'static Upstreams {
        static UPSTREAMS: std::sync::LazyLock<Upstreams> = std::sync::LazyLock::new(|| Upstreams {
            anthropic: parse_upstream(Protocol::Anthropic, "https://api.anthropic.com", AuthStyle::XApiKey).unwrap(),
            openai: parse_upstream(Protocol::OpenAi, "http://litellm:4000/openai-proxy", AuthStyle::Bearer).unwrap(),
        });
        &UPSTREAMS
    }

    fn route(method: Method, uri: &str, headers: &[(&str, &str)]) -> Route<'static> {
        let mut h = HeaderMap::new();
        for (k, v) in headers {
            h.insert(http::HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap());
        }
        match resolve(upstreams(), &method, &uri.parse().unwrap(), &h).unwrap() {
            Routed::Upstream(r) => r,
            Routed::Local => panic!("expected an upstream route for {uri}"),
        }
    }

    #[test]
    fn family_paths() {
        let r = route(Method::POST, "/v1/messages?beta=true", &[]);
        assert_eq!((r.protocol, r.endpoint), (Protocol::Anthropic, Endpoint::Messages));
        assert_eq!(r.uri.to_string(), "https://api.anthropic.com/v1/messages?beta=true");
        let r = route(Method::POST, "/v1/responses", &[("x-api-key", "k")]);
        assert_eq!(
            r.protocol,
            Protocol::OpenAi,
            "a path unique to a family wins over headers"
        );
        assert_eq!(r.uri.to_string(), "http://litellm:4000/openai-proxy/v1/responses");
        assert_eq!(
            route(Method::POST, "/v1/messages/count_tokens", &[]).endpoint,
            Endpoint::CountTokens
        );
        assert_eq!(
            route(Method::POST, "/v1/messages/batches", &[]).protocol,
            Protocol::Anthropic
        );
    }

    #[test]
    fn shared_paths_by_headers() {
        assert_eq!(
            route(Method::GET, "/v1/models", &[("anthropic-version", "2023-06-01")]).protocol,
            Protocol::Anthropic
        );
        assert_eq!(
            route(Method::GET, "/v1/models", &[("authorization", "Bearer x")]).protocol,
            Protocol::OpenAi
        );
        assert_eq!(
            route(
                Method::GET,
                "/v1/models",
                &[("authorization", "Bearer x"), ("anthropic-version", "1")]
            )
            .protocol,
            Protocol::Anthropic,
            "anthropic-py 2.x sends Bearer plus anthropic-version"
        );
        assert_eq!(
            route(Method::GET, "/v1/files/abc", &[("authorization", "Bearer x")]).protocol,
            Protocol::OpenAi
        );
    }

    #[test]
    fn pinned_prefix_is_removed() {
        let r = route(Method::GET, "/openai/v1/models?limit=2", &[("x-api-key", "k")]);
        assert_eq!(r.protocol, Protocol::OpenAi);
        assert_eq!(r.uri.to_string(), "http://litellm:4000/openai-proxy/v1/models?limit=2");
        assert_eq!(
            route(Method::POST, "/anthropic/v1/messages", &[]).uri.path(),
            "/v1/messages"
        );
        // Not a segment boundary: no pinning.
        assert_eq!(
            route(Method::GET, "/openaiv1/models", &[]).uri.path(),
            "/openaiv1/models"
        );
    }

    /// Property: any path the HTTP layer accepts routes or fails cleanly, keeping prefix and query.
    #[test]
    fn arbitrary_paths_never_panic() {
        let mut rng = crate::testing::Rng(42);
        let pieces = [
            "/",
            "v1",
            "messages",
            "openai",
            "anthropic",
            "..",
            "%2F",
            "?",
            "&",
            "=",
            "models",
            "x",
            "//",
            "#",
        ];
        for _ in 0..20_000 {
            let mut p = String::from("/");
            for _ in 0..rng.below(8) {
                p.push_str(pieces[rng.below(pieces.len())]);
            }
            let Ok(uri) = p.parse::<Uri>() else { continue };
            for method in [Method::GET, Method::POST, Method::HEAD] {
                if let Ok(Routed::Upstream(r)) = resolve(upstreams(), &method, &uri, &HeaderMap::new()) {
                    if r.protocol == Protocol::OpenAi {
                        assert!(r.uri.path().starts_with("/openai-proxy"), "{p} → {}", r.uri);
                    }
                    assert_eq!(r.uri.query(), uri.query());
                }
            }
        }
    }

    #[test]
    fn probes_are_local() {
        let h = HeaderMap::new();
        assert!(matches!(
            resolve(upstreams(), &Method::HEAD, &"/".parse().unwrap(), &h).unwrap(),
            Routed::Local
        ));
        assert!(matches!(
            resolve(upstreams(), &Method::GET, &"/".parse().unwrap(), &h).unwrap(),
            Routed::Local
        ));
        assert!(matches!(
            resolve(upstreams(), &Method::POST, &"/".parse().unwrap(), &h).unwrap(),
            Routed::Upstream(_)
        ));
    }
}
