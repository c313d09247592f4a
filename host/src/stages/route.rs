//! **route** — reads: method, path and the auth/version headers. Decides: which API family the
//! request speaks, and the upstream URL it goes to. Returns: a [`Route`], or a local answer for the
//! probes clients send to the base URL (`HEAD /`, `GET /`).
//!
//! One base URL serves every family. Paths unique to a family decide it — Bedrock's
//! `/model/{id}/invoke…`, `/converse…`, `/inference-profiles`, `/foundation-models` included;
//! shared paths (`/v1/models`, `/v1/files`, `/v1/batches`, anything unknown) are decided by
//! headers: an `anthropic-version` or `x-api-key` header means Anthropic, otherwise an
//! `Authorization` header means OpenAI. A client can also pin a family with a `/anthropic`,
//! `/openai` or `/bedrock` path prefix, which is removed. Unknown paths pass through to the chosen
//! family's upstream. The upstream's own path prefix is kept and the query string is forwarded as
//! sent.
//!
//! Two upstreams take a different URL form than the client sent, and only the path changes:
//! - **Azure OpenAI**: `/v1/chat/completions`, `/v1/completions`, `/v1/embeddings` go to
//!   `/openai/deployments/{deployment}/…?api-version=…`, the deployment found from the body's
//!   model by [`finalize`] (after `inspect`); Azure-native paths (`/openai/deployments/…`) pass as
//!   sent; other `/v1/…` paths go to Azure's `/openai/v1/…`.
//! - **Bedrock**: the model id in `/model/{id}/…` is re-encoded the way AWS SDKs send it (`:` as
//!   `%3A`), since the signature covers the path; `/inference-profiles` and `/foundation-models`
//!   go to the control-plane URL.

use http::{HeaderMap, Method, Uri};

use crate::config::{Upstream, Upstreams};
use crate::error::{ErrorKind, GatewayError};
use crate::protocol::Protocol;
use crate::stages::inspect;

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
    /// Bedrock `POST /model/{id}/invoke` (an Anthropic body without `model`).
    Invoke,
    /// Bedrock `POST /model/{id}/invoke-with-response-stream`.
    InvokeStream,
    /// Bedrock `POST /model/{id}/converse`.
    Converse,
    /// Bedrock `POST /model/{id}/converse-stream`.
    ConverseStream,
    /// Anything else: passed through.
    Other,
}

impl Endpoint {
    /// Whether a body sent here must be JSON (and is parsed by `inspect`).
    pub fn takes_json(self) -> bool {
        !matches!(self, Endpoint::Models | Endpoint::Other)
    }

    /// Whether the endpoint generates tokens the provider bills (token counting and listings do not).
    pub fn billable(self) -> bool {
        !matches!(self, Endpoint::CountTokens | Endpoint::Models | Endpoint::Other)
    }

    /// Whether the response streams because of the endpoint itself (Bedrock's streaming paths).
    pub fn streams(self) -> bool {
        matches!(self, Endpoint::InvokeStream | Endpoint::ConverseStream)
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
    /// The model named by the path (Bedrock `/model/{id}/…`, Azure `/deployments/{name}/…`).
    pub path_model: Option<String>,
    /// Azure: the operation after the deployment (`chat/completions`), until [`finalize`] knows
    /// the deployment from the body.
    azure_operation: Option<&'static str>,
    /// An Anthropic request answered by Bedrock (`crate::bedrock`): [`finalize`] sets the
    /// `/model/{id}/invoke…` path and `path_model` to the Bedrock id; `forward` translates.
    pub translate_to_bedrock: bool,
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
    } else if let Some(rest) = strip_segment(path, "/bedrock") {
        (Some(Protocol::Bedrock), rest)
    } else {
        (None, path)
    };
    if let Some(bedrock) = bedrock_path(path)
        && pinned.is_none_or(|p| p == Protocol::Bedrock)
    {
        return bedrock_route(upstreams, bedrock, uri.query());
    }
    let (family, endpoint) = classify(path);
    let protocol = pinned.or(family).unwrap_or_else(|| by_headers(headers));
    let upstream = upstreams.get(protocol);

    let translate_to_bedrock = protocol == Protocol::Anthropic && upstream.bedrock.is_some();
    if translate_to_bedrock && !matches!(endpoint, Endpoint::Messages | Endpoint::CountTokens) {
        return Err(GatewayError::downstream(
            ErrorKind::NotFound,
            format!(
                "{path} is not available here: this gateway sends Anthropic API requests to AWS Bedrock, which serves only /v1/messages and /v1/messages/count_tokens"
            ),
        ));
    }
    let mut path_model = None;
    let mut azure_operation = None;
    let mut target = String::with_capacity(upstream.path_prefix.len() + uri.path().len() + 48);
    target.push_str(&upstream.path_prefix);
    let mut query = uri.query().map(str::to_owned);
    match &upstream.azure {
        Some(azure) if protocol == Protocol::OpenAi => {
            if let Some(rest) = path.strip_prefix("/deployments/") {
                // Azure-native client: its deployment, its api-version.
                path_model = rest
                    .split('/')
                    .next()
                    .map(|d| inspect::recordable_model(&crate::percent::decode(d)));
                target.push_str("/openai");
                target.push_str(path);
                if query
                    .as_deref()
                    .is_none_or(|q| !q.split('&').any(|kv| kv.starts_with("api-version=")))
                {
                    push_param(&mut query, "api-version", &azure.api_version);
                }
            } else if let Some(op) = deployment_operation(endpoint) {
                azure_operation = Some(op); // completed by `finalize`
            } else {
                target.push_str("/openai");
                target.push_str(path);
            }
        }
        _ => target.push_str(path),
    }
    let uri = build_uri(upstream, target, query.as_deref())?;
    Ok(Routed::Upstream(Route {
        protocol,
        endpoint,
        upstream,
        uri,
        path_model,
        azure_operation,
        translate_to_bedrock,
    }))
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
    let recorded = if route.translate_to_bedrock {
        path_model.clone()
    } else {
        facts.model.clone().or_else(|| path_model.clone())
    };
    if facts.model.is_none() {
        facts.model = match path_model {
            Some(id) if route.protocol == Protocol::Bedrock && id.contains("anthropic.") => {
                Some(crate::prices::bedrock_to_anthropic(&id))
            }
            other => other,
        };
    }
    Ok(recorded)
}

fn complete_uri(route: &mut Route<'_>, facts: &inspect::RequestFacts) -> Result<(), GatewayError> {
    if route.translate_to_bedrock
        && let Some(bedrock) = &route.upstream.bedrock
    {
        let model = facts
            .model
            .as_deref()
            .filter(|m| *m != inspect::INVALID_MODEL)
            .ok_or_else(|| GatewayError::downstream(ErrorKind::BadRequest, "the request body names no `model`"))?;
        let mut id = bedrock
            .translation
            .bedrock_id(model)
            .map_err(|why| GatewayError::downstream(ErrorKind::BadRequest, why))?;
        let op = if route.endpoint == Endpoint::CountTokens {
            // Token counting takes the foundation model id, not an inference profile.
            id = crate::bedrock::foundation_model(&id)
                .ok_or_else(|| {
                    GatewayError::downstream(
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
        GatewayError::downstream(
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
        .map_err(|_| GatewayError::downstream(ErrorKind::BadRequest, "the request path is not a valid URL path"))
}

/// A Bedrock path: runtime `/model/{id}/{operation}` or a control-plane listing.
enum BedrockPath<'p> {
    Runtime { model: &'p str, operation: &'p str },
    Control(&'p str),
}

fn bedrock_path(path: &str) -> Option<BedrockPath<'_>> {
    if let Some(rest) = path.strip_prefix("/model/") {
        let (model, operation) = rest.split_once('/')?;
        let known = [
            "invoke",
            "invoke-with-response-stream",
            "converse",
            "converse-stream",
            "count-tokens",
        ];
        return (!model.is_empty() && known.contains(&operation)).then_some(BedrockPath::Runtime { model, operation });
    }
    [
        "/inference-profiles",
        "/foundation-models",
        "/custom-models",
        "/imported-models",
    ]
    .iter()
    .any(|p| strip_segment(path, p).is_some() || path == *p)
    .then_some(BedrockPath::Control(path))
}

fn bedrock_route<'a>(
    upstreams: &'a Upstreams,
    path: BedrockPath<'_>,
    query: Option<&str>,
) -> Result<Routed<'a>, GatewayError> {
    let runtime = &upstreams.bedrock;
    let (upstream, endpoint, target, path_model) = match path {
        BedrockPath::Runtime { model, operation } => {
            let model = crate::percent::decode(model);
            let endpoint = match operation {
                "invoke" => Endpoint::Invoke,
                "invoke-with-response-stream" => Endpoint::InvokeStream,
                "converse" => Endpoint::Converse,
                "converse-stream" => Endpoint::ConverseStream,
                _ => Endpoint::Other,
            };
            let target = format!(
                "{}/model/{}/{operation}",
                runtime.path_prefix,
                crate::percent::encode(&model)
            );
            (runtime, endpoint, target, Some(inspect::recordable_model(&model)))
        }
        BedrockPath::Control(p) => {
            let control = runtime.bedrock.as_ref().map(|b| b.control.as_ref()).unwrap_or(runtime);
            (control, Endpoint::Other, format!("{}{p}", control.path_prefix), None)
        }
    };
    let uri = build_uri(upstream, target, query)?;
    Ok(Routed::Upstream(Route {
        protocol: Protocol::Bedrock,
        endpoint,
        upstream,
        uri,
        path_model,
        azure_operation: None,
        translate_to_bedrock: false,
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
        let get = |m: Method, p: &str| match resolve(&ups, &m, &p.parse().unwrap(), &h).unwrap() {
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
        match resolve(&ups, &Method::GET, &"/foundation-models".parse().unwrap(), &h).unwrap() {
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
        let mut r = match resolve(&ups, &Method::POST, &"/v1/chat/completions".parse().unwrap(), &h).unwrap() {
            Routed::Upstream(r) => r,
            Routed::Local => panic!(),
        };
        assert_eq!(r.upstream.provider, "azure");
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
            &Method::POST,
            &"/openai/deployments/prod-4o/chat/completions?api-version=2025-01-01-preview"
                .parse()
                .unwrap(),
            &h,
        )
        .unwrap()
        {
            Routed::Upstream(r) => r,
            Routed::Local => panic!(),
        };
        assert_eq!(
            r.uri.to_string(),
            "https://acme.openai.azure.com/openai/deployments/prod-4o/chat/completions?api-version=2025-01-01-preview"
        );
        assert_eq!(r.path_model.as_deref(), Some("prod-4o"));
        // The v1 form for everything else.
        let r = match resolve(&ups, &Method::POST, &"/openai/v1/responses".parse().unwrap(), &h).unwrap() {
            Routed::Upstream(r) => r,
            Routed::Local => panic!(),
        };
        assert_eq!(r.uri.to_string(), "https://acme.openai.azure.com/openai/v1/responses");
        // No model: a clear refusal.
        let mut r = match resolve(&ups, &Method::POST, &"/v1/embeddings".parse().unwrap(), &h).unwrap() {
            Routed::Upstream(r) => r,
            Routed::Local => panic!(),
        };
        let err = finalize(&mut r, &mut inspect::RequestFacts::default()).unwrap_err();
        assert!(err.message.contains("deployment"), "{}", err.message);
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
