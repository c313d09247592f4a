//! **route** — reads: method, path and the auth/version headers. Decides: what the request *is* —
//! an endpoint Conduit understands, an operator-declared passthrough, or neither (refused) — which
//! API family it speaks, and the upstream URL it goes to. Returns: a [`Route`], or a local answer
//! for the probes clients send to the base URL (`HEAD /`, `GET /`).
//!
//! The path is made canonical first (`crate::endpoint::canonical`): ambiguous spellings are
//! refused, and what goes upstream is the canonical path, never the client's string. One base URL
//! serves every family: paths unique to a family decide it (Bedrock's `/model/{id}/…` included);
//! shared paths (`/v1/models`, `/v1/files`) go by headers — `anthropic-version` or `x-api-key`
//! means Anthropic, otherwise `Authorization` means OpenAI. A client can pin a family with a
//! `/anthropic`, `/openai` or `/bedrock` prefix, which is removed. OpenAI paths sent without
//! `/v1` (`/chat/completions`) are their `/v1` forms. The upstream's own path prefix is kept and the
//! query string is forwarded as sent (and policed).
//!
//! Two upstreams take a different URL form than the client sent, and only the path changes:
//! - **Azure OpenAI**: `/v1/chat/completions`, `/v1/completions`, `/v1/embeddings` go to
//!   `/openai/deployments/{deployment}/…?api-version=…`, the deployment found from the body's
//!   model by [`finalize`] (after `inspect`); Azure-native paths (`/openai/deployments/{d}/…`) are
//!   treated as their `/v1` equivalents (policed, metered, judged by the deployment's model) and
//!   forwarded as sent; other `/v1/…` paths go to Azure's `/openai/v1/…`.
//! - **Bedrock**: the model id in `/model/{id}/…` is re-encoded the way AWS SDKs send it (`:` as
//!   `%3A`), since the signature covers the path; listings go to the control-plane URL.

use http::{HeaderMap, Method, Uri};

use crate::config::{Upstream, Upstreams};
use crate::egress::EgressConfig;
use crate::endpoint::NoMatch;
use crate::error::{ErrorKind, GatewayError};
use crate::protocol::Protocol;
use crate::stages::inspect;

pub use crate::endpoint::Endpoint;

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
    /// The model named by the path (Bedrock `/model/{id}/…`, Azure `/deployments/{name}/…`).
    pub path_model: Option<String>,
    /// Azure: the operation after the deployment (`chat/completions`), until [`finalize`] knows
    /// the deployment from the body.
    azure_operation: Option<&'static str>,
    /// An Anthropic request answered by Bedrock (`crate::bedrock`): [`finalize`] sets the
    /// `/model/{id}/invoke…` path and `path_model` to the Bedrock id; `forward` translates.
    pub translate_to_bedrock: bool,
    /// The endpoint's path template (`/v1/files/{id}`): what the audit log records.
    pub template: &'a str,
    /// The canonical path as the client addressed it (after a pin or alias), for policies.
    pub path: String,
    /// How the request is treated: `inspected`, or a passthrough's `passthrough:json|text|opaque`.
    pub treatment: &'static str,
}

/// Result of routing.
#[derive(Debug)]
pub enum Routed<'a> {
    /// Answer locally (base-URL probes).
    Local,
    /// Forward.
    Upstream(Box<Route<'a>>),
}

/// Routes a request (module docs).
pub fn resolve<'a>(
    upstreams: &'a Upstreams,
    egress: &'a EgressConfig,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
) -> Result<Routed<'a>, GatewayError> {
    let canonical =
        crate::endpoint::canonical(uri.path()).map_err(|p| GatewayError::client(ErrorKind::BadRequest, p.0))?;
    if canonical == "/" && (method == Method::GET || method == Method::HEAD) {
        return Ok(Routed::Local);
    }
    let (mut pinned, mut path) = if let Some(rest) = strip_segment(&canonical, "/anthropic") {
        (Some(Protocol::Anthropic), rest.to_string())
    } else if let Some(rest) = strip_segment(&canonical, "/openai") {
        (Some(Protocol::OpenAi), rest.to_string())
    } else if let Some(rest) = strip_segment(&canonical, "/bedrock") {
        (Some(Protocol::Bedrock), rest.to_string())
    } else {
        (None, canonical.clone())
    };
    // Azure-native deployments form: judged as its /v1 equivalent, forwarded as sent.
    if pinned == Some(Protocol::OpenAi)
        && let Some(azure) = upstreams.openai.azure.as_ref()
        && let Some(rest) = path.strip_prefix("/deployments/")
    {
        return azure_native(upstreams, azure, method, rest, uri.query(), &path);
    }
    if pinned.is_none_or(|p| p == Protocol::OpenAi)
        && let Some(v1) = crate::endpoint::openai_alias(&path)
    {
        pinned = Some(Protocol::OpenAi);
        path = v1;
    }
    if let Some((_, why)) = crate::endpoint::REFUSED
        .iter()
        .find(|(p, _)| path == *p || path.strip_prefix(p).is_some_and(|r| r.starts_with('/')))
    {
        return Err(GatewayError::client(
            ErrorKind::Forbidden,
            format!("{method} {path} is refused: {why}. Use the provider through this gateway instead"),
        ));
    }
    let matched = match crate::endpoint::lookup(method, &path, pinned) {
        Ok(m) => m,
        Err(NoMatch::Unknown) => return passthrough(upstreams, egress, method, &path, uri.query(), headers, pinned),
        Err(NoMatch::Method(allowed)) => {
            let allowed: Vec<&str> = allowed.iter().map(Method::as_str).collect();
            return Err(GatewayError::client(
                ErrorKind::MethodNotAllowed,
                format!("{path} takes {}, not {method}", allowed.join(" or ")),
            ));
        }
        Err(NoMatch::BadId(id)) => {
            return Err(GatewayError::client(
                ErrorKind::BadRequest,
                format!(
                    "{path:?} has a segment that is not an object id ({id:?}); ids are letters, digits, '_', '-' and '.'"
                ),
            ));
        }
    };
    // A path unique to a family decides it; a shared one goes by the pin, else the headers.
    let m = &matched[0];
    let protocol = m.entry.family.or(pinned).unwrap_or_else(|| by_headers(headers));
    let endpoint = m.entry.endpoint;
    if protocol == Protocol::Bedrock {
        return bedrock_route(upstreams, m, &path, uri.query());
    }
    let upstream = upstreams.get(protocol);
    let translate_to_bedrock = protocol == Protocol::Anthropic && upstream.bedrock.is_some();
    if translate_to_bedrock && !matches!(endpoint, Endpoint::Messages | Endpoint::CountTokens) {
        return Err(GatewayError::client(
            ErrorKind::EndpointRefused,
            format!(
                "{path} is not available here: this gateway sends Anthropic API requests to AWS Bedrock, which serves only /v1/messages and /v1/messages/count_tokens"
            ),
        ));
    }
    let mut azure_operation = None;
    let mut target = String::with_capacity(upstream.path_prefix.len() + path.len() + 48);
    target.push_str(&upstream.path_prefix);
    match &upstream.azure {
        Some(_) if protocol == Protocol::OpenAi => {
            if let Some(op) = deployment_operation(endpoint) {
                azure_operation = Some(op); // completed by `finalize`
            } else {
                target.push_str("/openai");
                target.push_str(&path);
            }
        }
        _ => target.push_str(&path),
    }
    let uri = build_uri(upstream, target, uri.query())?;
    Ok(Routed::Upstream(Box::new(Route {
        protocol,
        endpoint,
        upstream,
        uri,
        path_model: None,
        azure_operation,
        translate_to_bedrock,
        template: m.entry.template,
        path,
        treatment: "inspected",
    })))
}

/// The family a request most likely speaks, before it is routed: so that refusals that come
/// first (an upgrade, an ambiguous or unknown path) are in the shape the client reads.
pub fn family_hint(path: &str, headers: &HeaderMap) -> Protocol {
    for (prefix, p) in [
        ("/anthropic/", Protocol::Anthropic),
        ("/openai/", Protocol::OpenAi),
        ("/bedrock/", Protocol::Bedrock),
    ] {
        if path.starts_with(prefix) {
            return p;
        }
    }
    if path.starts_with("/model/") || path.starts_with("/inference-profiles") || path.starts_with("/foundation-models")
    {
        return Protocol::Bedrock;
    }
    let path = crate::endpoint::openai_alias(path).unwrap_or_else(|| path.to_string());
    let family = crate::endpoint::CATALOGUE
        .iter()
        .find(|e| {
            let t = e.template.split("/{").next().unwrap_or(e.template);
            path == e.template || (t.len() > 3 && path.starts_with(t))
        })
        .and_then(|e| e.family);
    family.unwrap_or_else(|| by_headers(headers))
}

/// Whether the provider bills the request: the endpoint's nature, or a passthrough's declaration.
pub fn billable(route: &Route<'_>, egress: &EgressConfig) -> bool {
    match route.endpoint {
        Endpoint::Passthrough(i) => egress.passthrough.get(i).is_some_and(|p| p.billable),
        e => e.billable(),
    }
}

/// `/openai/deployments/{deployment}/{operation}` for an Azure upstream.
fn azure_native<'a>(
    upstreams: &'a Upstreams,
    azure: &crate::config::Azure,
    method: &Method,
    rest: &str,
    query: Option<&str>,
    path: &str,
) -> Result<Routed<'a>, GatewayError> {
    let upstream = &upstreams.openai;
    let (deployment, op) = rest.split_once('/').unwrap_or((rest, ""));
    let (endpoint, template) = match op {
        "chat/completions" => (Endpoint::ChatCompletions, "/openai/deployments/{id}/chat/completions"),
        "completions" => (Endpoint::Completions, "/openai/deployments/{id}/completions"),
        "embeddings" => (Endpoint::Embeddings, "/openai/deployments/{id}/embeddings"),
        _ => {
            return Err(GatewayError::client(
                ErrorKind::EndpointRefused,
                format!(
                    "{method} /openai{path} is not an Azure OpenAI operation this gateway inspects (chat/completions, completions, embeddings under a deployment); use the /openai/v1/… form"
                ),
            ));
        }
    };
    if method != Method::POST {
        return Err(GatewayError::client(
            ErrorKind::MethodNotAllowed,
            format!("/openai{path} takes POST, not {method}"),
        ));
    }
    let mut query = query.map(str::to_owned);
    if query
        .as_deref()
        .is_none_or(|q| !q.split('&').any(|kv| kv.starts_with("api-version=")))
    {
        push_param(&mut query, "api-version", &azure.api_version);
    }
    let target = format!("{}/openai{path}", upstream.path_prefix);
    let uri = build_uri(upstream, target, query.as_deref())?;
    // The deployment's model, as the operator mapped it (else the deployment's own name).
    let decoded = crate::percent::decode(deployment);
    let model = azure
        .deployments
        .iter()
        .find(|(_, d)| **d == decoded)
        .map(|(m, _)| m.clone())
        .unwrap_or(decoded);
    Ok(Routed::Upstream(Box::new(Route {
        protocol: Protocol::OpenAi,
        endpoint,
        upstream,
        uri,
        path_model: Some(inspect::recordable_model(&model)),
        azure_operation: None,
        translate_to_bedrock: false,
        template,
        path: format!("/openai{path}"),
        treatment: "inspected",
    })))
}

/// A path the catalogue does not know: an operator-declared passthrough, or refused.
fn passthrough<'a>(
    upstreams: &'a Upstreams,
    egress: &'a EgressConfig,
    method: &Method,
    path: &str,
    query: Option<&str>,
    headers: &HeaderMap,
    pinned: Option<Protocol>,
) -> Result<Routed<'a>, GatewayError> {
    let family = pinned.unwrap_or_else(|| by_headers(headers));
    let Some((i, p)) = egress
        .passthrough
        .iter()
        .enumerate()
        .find(|(_, p)| p.matches(family, method, path))
    else {
        return Err(GatewayError::client(
            ErrorKind::EndpointRefused,
            format!(
                "{method} {path} ({family}) is not an endpoint this gateway inspects, so nothing was sent; an operator can declare it in [[egress.passthrough]] (docs/security.md, \"Egress\")"
            ),
        ));
    };
    let upstream = upstreams.get(family);
    let mut target = upstream.path_prefix.clone();
    target.push_str(path);
    let uri = build_uri(upstream, target, query)?;
    Ok(Routed::Upstream(Box::new(Route {
        protocol: family,
        endpoint: Endpoint::Passthrough(i),
        upstream,
        uri,
        path_model: None,
        azure_operation: None,
        translate_to_bedrock: false,
        template: &p.path,
        path: path.to_string(),
        treatment: p.scan.treatment(),
    })))
}

/// Completes the route once the body is known (`inspect`): the upstream URL where it needs the
/// model (Azure's deployments form, Anthropic → Bedrock `/model/{id}/…`), whether the response
/// streams, and the two names the model goes by. Returns the model to **record** (ledger, audit,
/// prices): the upstream's name for it when a request is translated (the Bedrock id), otherwise the
/// body's, or the path's for Bedrock- and Azure-native clients. Leaves in `facts.model` the name
/// **policies** judge: what the client asked for, and for a Bedrock id the Anthropic model it names.
pub fn finalize(route: &mut Route<'_>, facts: &mut inspect::RequestFacts) -> Result<Option<String>, GatewayError> {
    facts.stream |= route.endpoint.streams();
    complete_uri(route, facts)?;
    let path_model = route.path_model.take();
    if route.translate_to_bedrock {
        return Ok(path_model);
    }
    let Some(from_path) = path_model else {
        return Ok(facts.model.clone());
    };
    // Bedrock- and Azure-native: the path names what runs and bills; a body `model` that says
    // otherwise is not believed — the allow-list and prices judge the path's model.
    facts.model = Some(
        if route.protocol == Protocol::Bedrock && from_path.contains("anthropic.") {
            crate::prices::bedrock_to_anthropic(&from_path)
        } else {
            from_path.clone()
        },
    );
    Ok(Some(from_path))
}

fn complete_uri(route: &mut Route<'_>, facts: &inspect::RequestFacts) -> Result<(), GatewayError> {
    if route.translate_to_bedrock
        && let Some(bedrock) = &route.upstream.bedrock
    {
        let model = facts
            .model
            .as_deref()
            .filter(|m| *m != inspect::INVALID_MODEL)
            .ok_or_else(|| GatewayError::client(ErrorKind::BadRequest, "the request body names no `model`"))?;
        let mut id = bedrock
            .translation
            .bedrock_id(model)
            .map_err(|why| GatewayError::client(ErrorKind::BadRequest, why))?;
        let op = if route.endpoint == Endpoint::CountTokens {
            // Token counting takes the foundation model id, not an inference profile.
            id = crate::bedrock::foundation_model(&id)
                .ok_or_else(|| {
                    GatewayError::client(
                        ErrorKind::BadRequest,
                        format!("model {model:?} maps to {id:?}, for which Bedrock cannot count tokens (it needs a foundation model id such as anthropic.claude-…-v1:0)"),
                    )
                })?
                .to_string();
            "count-tokens"
        } else if facts.stream {
            "invoke-with-response-stream"
        } else {
            "invoke"
        };
        let target = format!(
            "{}/model/{}/{op}",
            route.upstream.path_prefix,
            crate::percent::encode(&id)
        );
        route.uri = build_uri(route.upstream, target, None)?;
        route.path_model = Some(inspect::recordable_model(&id));
        return Ok(());
    }
    let (Some(op), Some(azure)) = (route.azure_operation, &route.upstream.azure) else {
        return Ok(());
    };
    let model = facts.model.as_deref().filter(|m| *m != inspect::INVALID_MODEL).ok_or_else(|| {
        GatewayError::client(
            ErrorKind::BadRequest,
            "this gateway reaches Azure OpenAI, which needs the request's `model` to choose a deployment; the body names none",
        )
    })?;
    let deployment = azure.deployment(model);
    let mut target = String::with_capacity(route.upstream.path_prefix.len() + deployment.len() + 96);
    target.push_str(&route.upstream.path_prefix);
    target.push_str("/openai/deployments/");
    target.push_str(&crate::percent::encode(deployment));
    target.push('/');
    target.push_str(op);
    let mut query = route.uri.query().map(str::to_owned);
    push_param(&mut query, "api-version", &azure.api_version);
    route.uri = build_uri(route.upstream, target, query.as_deref())?;
    route.path_model = Some(inspect::recordable_model(deployment));
    route.azure_operation = None;
    Ok(())
}

/// The operations Azure serves under `/openai/deployments/{deployment}/`.
fn deployment_operation(endpoint: Endpoint) -> Option<&'static str> {
    match endpoint {
        Endpoint::ChatCompletions => Some("chat/completions"),
        Endpoint::Completions => Some("completions"),
        Endpoint::Embeddings => Some("embeddings"),
        _ => None,
    }
}

fn push_param(query: &mut Option<String>, name: &str, value: &str) {
    let q = query.get_or_insert_with(String::new);
    if !q.is_empty() {
        q.push('&');
    }
    q.push_str(name);
    q.push('=');
    q.push_str(value);
}

fn build_uri(upstream: &Upstream, mut target: String, query: Option<&str>) -> Result<Uri, GatewayError> {
    if let Some(q) = query {
        target.push('?');
        target.push_str(q);
    }
    Uri::builder()
        .scheme(upstream.scheme.clone())
        .authority(upstream.authority.clone())
        .path_and_query(target)
        .build()
        .map_err(|_| GatewayError::client(ErrorKind::BadRequest, "the request path is not a valid URL path"))
}

/// A Bedrock-native request: runtime paths re-encode the model id; listings go to the control plane.
fn bedrock_route<'a>(
    upstreams: &'a Upstreams,
    m: &crate::endpoint::Matched,
    path: &str,
    query: Option<&str>,
) -> Result<Routed<'a>, GatewayError> {
    let runtime = &upstreams.bedrock;
    let (upstream, target, path_model) = match &m.model {
        Some(model) => {
            let op = path.rsplit('/').next().unwrap_or("");
            let target = format!("{}/model/{}/{op}", runtime.path_prefix, crate::percent::encode(model));
            (runtime, target, Some(inspect::recordable_model(model)))
        }
        None => {
            let control = runtime.bedrock.as_ref().map(|b| b.control.as_ref()).unwrap_or(runtime);
            (control, format!("{}{path}", control.path_prefix), None)
        }
    };
    let uri = build_uri(upstream, target, query)?;
    Ok(Routed::Upstream(Box::new(Route {
        protocol: Protocol::Bedrock,
        endpoint: m.entry.endpoint,
        upstream,
        uri,
        path_model,
        azure_operation: None,
        translate_to_bedrock: false,
        template: m.entry.template,
        path: path.to_string(),
        treatment: "inspected",
    })))
}

/// `"/anthropic/v1/x"` → `Some("/v1/x")`; requires a segment boundary.
fn strip_segment<'a>(path: &'a str, prefix: &str) -> Option<&'a str> {
    let rest = path.strip_prefix(prefix)?;
    if rest.starts_with('/') { Some(rest) } else { None }
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

    static NO_EGRESS: EgressConfig = EgressConfig {
        forward_binary_uploads: false,
        passthrough: Vec::new(),
    };
    use crate::config::parse_upstream;
    use crate::protocol::AuthStyle;

    fn upstreams() -> &'static Upstreams {
        static UPSTREAMS: std::sync::LazyLock<Upstreams> = std::sync::LazyLock::new(|| Upstreams {
            anthropic: parse_upstream(Protocol::Anthropic, "https://api.anthropic.com", AuthStyle::XApiKey).unwrap(),
            openai: parse_upstream(Protocol::OpenAi, "http://litellm:4000/openai-proxy", AuthStyle::Bearer).unwrap(),
            bedrock: parse_upstream(
                Protocol::Bedrock,
                "https://bedrock-runtime.us-east-1.amazonaws.com",
                AuthStyle::Sigv4,
            )
            .unwrap(),
        });
        &UPSTREAMS
    }

    fn route(method: Method, uri: &str, headers: &[(&str, &str)]) -> Route<'static> {
        let mut h = HeaderMap::new();
        for (k, v) in headers {
            h.insert(http::HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap());
        }
        match resolve(upstreams(), &NO_EGRESS, &method, &uri.parse().unwrap(), &h).unwrap() {
            Routed::Upstream(r) => *r,
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
        // Not a segment boundary: no pinning, and an unknown path.
        let e = resolve(
            upstreams(),
            &NO_EGRESS,
            &Method::GET,
            &"/openaiv1/models".parse().unwrap(),
            &HeaderMap::new(),
        )
        .unwrap_err();
        assert_eq!(e.kind, ErrorKind::EndpointRefused);
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
                if let Ok(Routed::Upstream(r)) = resolve(upstreams(), &NO_EGRESS, &method, &uri, &HeaderMap::new()) {
                    if r.protocol == Protocol::OpenAi {
                        assert!(r.uri.path().starts_with("/openai-proxy"), "{p} → {}", r.uri);
                    }
                    assert_eq!(r.uri.query(), uri.query());
                }
            }
        }
    }

    fn config_upstreams(env: &[(&str, &str)]) -> Upstreams {
        let env: std::collections::HashMap<String, String> =
            env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        crate::config::RawConfig::default()
            .validate(&|k| env.get(k).cloned())
            .unwrap()
            .upstreams
    }

    #[test]
    fn bedrock_paths_re_encode_the_model_and_split_planes() {
        let ups = config_upstreams(&[("CONDUIT_BEDROCK_REGION", "eu-west-1")]);
        let h = HeaderMap::new();
        let get = |m: Method, p: &str| match resolve(&ups, &NO_EGRESS, &m, &p.parse().unwrap(), &h).unwrap() {
            Routed::Upstream(r) => (r.protocol, r.endpoint, r.uri.to_string(), r.path_model),
            Routed::Local => panic!(),
        };
        let (p, e, uri, model) = get(
            Method::POST,
            "/model/us.anthropic.claude-sonnet-4-5-20250929-v1:0/invoke-with-response-stream",
        );
        assert_eq!((p, e), (Protocol::Bedrock, Endpoint::InvokeStream));
        assert_eq!(
            uri,
            "https://bedrock-runtime.eu-west-1.amazonaws.com/model/us.anthropic.claude-sonnet-4-5-20250929-v1%3A0/invoke-with-response-stream"
        );
        assert_eq!(model.as_deref(), Some("us.anthropic.claude-sonnet-4-5-20250929-v1:0"));
        // Already encoded by the client: same upstream path.
        let (_, _, encoded, _) = get(
            Method::POST,
            "/bedrock/model/us.anthropic.claude-sonnet-4-5-20250929-v1%3A0/invoke",
        );
        assert!(
            encoded.ends_with("/model/us.anthropic.claude-sonnet-4-5-20250929-v1%3A0/invoke"),
            "{encoded}"
        );
        let (p, _, uri, _) = get(Method::GET, "/inference-profiles?type=SYSTEM_DEFINED");
        assert_eq!(p, Protocol::Bedrock);
        assert_eq!(
            uri,
            "https://bedrock.eu-west-1.amazonaws.com/inference-profiles?type=SYSTEM_DEFINED"
        );
        // A proxy URL stands in for both planes.
        let ups = config_upstreams(&[("UPSTREAM_BEDROCK_URL", "http://vpce.internal:8443/br")]);
        match resolve(
            &ups,
            &NO_EGRESS,
            &Method::GET,
            &"/foundation-models".parse().unwrap(),
            &h,
        )
        .unwrap()
        {
            Routed::Upstream(r) => assert_eq!(r.uri.to_string(), "http://vpce.internal:8443/br/foundation-models"),
            Routed::Local => panic!(),
        }
    }

    #[test]
    fn azure_forms() {
        let ups = config_upstreams(&[
            ("UPSTREAM_OPENAI_URL", "https://acme.openai.azure.com"),
            ("CONDUIT_AZURE_API_VERSION", "2024-10-21"),
        ]);
        let h = HeaderMap::new();
        let mut r = match resolve(
            &ups,
            &NO_EGRESS,
            &Method::POST,
            &"/v1/chat/completions".parse().unwrap(),
            &h,
        )
        .unwrap()
        {
            Routed::Upstream(r) => *r,
            Routed::Local => panic!(),
        };
        assert_eq!(r.upstream.provider, crate::protocol::Provider::Azure);
        let mut facts = inspect::RequestFacts {
            model: Some("gpt-4o".into()),
            ..Default::default()
        };
        assert_eq!(
            finalize(&mut r, &mut facts).unwrap().as_deref(),
            Some("gpt-4o"),
            "the body's model is recorded"
        );
        assert_eq!(
            r.uri.to_string(),
            "https://acme.openai.azure.com/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21"
        );
        // Azure-native: deployment and api-version as the client sent them.
        let r = match resolve(
            &ups,
            &NO_EGRESS,
            &Method::POST,
            &"/openai/deployments/prod-4o/chat/completions?api-version=2025-01-01-preview"
                .parse()
                .unwrap(),
            &h,
        )
        .unwrap()
        {
            Routed::Upstream(r) => *r,
            Routed::Local => panic!(),
        };
        assert_eq!(
            r.uri.to_string(),
            "https://acme.openai.azure.com/openai/deployments/prod-4o/chat/completions?api-version=2025-01-01-preview"
        );
        assert_eq!(r.path_model.as_deref(), Some("prod-4o"));
        // The v1 form for everything else.
        let r = match resolve(
            &ups,
            &NO_EGRESS,
            &Method::POST,
            &"/openai/v1/responses".parse().unwrap(),
            &h,
        )
        .unwrap()
        {
            Routed::Upstream(r) => *r,
            Routed::Local => panic!(),
        };
        assert_eq!(r.uri.to_string(), "https://acme.openai.azure.com/openai/v1/responses");
        // No model: a clear refusal.
        let mut r = match resolve(&ups, &NO_EGRESS, &Method::POST, &"/v1/embeddings".parse().unwrap(), &h).unwrap() {
            Routed::Upstream(r) => *r,
            Routed::Local => panic!(),
        };
        let err = finalize(&mut r, &mut inspect::RequestFacts::default()).unwrap_err();
        assert!(err.message.contains("deployment"), "{}", err.message);
    }

    #[test]
    fn probes_are_local() {
        let h = HeaderMap::new();
        assert!(matches!(
            resolve(upstreams(), &NO_EGRESS, &Method::HEAD, &"/".parse().unwrap(), &h).unwrap(),
            Routed::Local
        ));
        assert!(matches!(
            resolve(upstreams(), &NO_EGRESS, &Method::GET, &"/".parse().unwrap(), &h).unwrap(),
            Routed::Local
        ));
        // Anything else at the base URL is no endpoint: refused.
        assert!(matches!(
            resolve(upstreams(), &NO_EGRESS, &Method::POST, &"/".parse().unwrap(), &h),
            Err(e) if e.kind == ErrorKind::EndpointRefused
        ));
    }
}
