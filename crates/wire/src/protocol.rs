//! The API families Conduit speaks ([`Protocol`]) and the providers that answer them
//! ([`Provider`]), and what differs between them at the edge: how a client authenticates, how the
//! real credential is attached, where the public API is.
//!
//! A family is what the *client* speaks; the provider behind it can differ (an OpenAI client
//! reaching Azure OpenAI, an Anthropic client reaching Bedrock): see
//! [`crate::upstream::Upstream::provider`]. Everything provider-specific that other crates need
//! is a method here, so a new provider is one more variant in this file (the compiler lists
//! every `match` to extend) plus its `[upstream]` selection in `upstream.rs`.

use std::fmt;

/// An API family, decided per request by the `route` stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// Anthropic Messages API (`/v1/messages`, `x-api-key`, `anthropic-version`).
    Anthropic,
    /// OpenAI API (`/v1/chat/completions`, `/v1/responses`, `Authorization: Bearer`), and Azure
    /// OpenAI's (`/openai/deployments/…`, `api-key`).
    OpenAi,
    /// AWS Bedrock runtime (`/model/{id}/invoke…`, `/converse…`) and its control-plane listings
    /// (`/inference-profiles`, `/foundation-models`), as Bedrock-native clients send them.
    Bedrock,
}

impl Protocol {
    /// All families, in a stable order (config keys, listings).
    pub const ALL: [Protocol; 3] = [Protocol::Anthropic, Protocol::OpenAi, Protocol::Bedrock];

    /// The lowercase name used in config, CLI arguments, logs and the store.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Anthropic => "anthropic",
            Protocol::OpenAi => "openai",
            Protocol::Bedrock => "bedrock",
        }
    }

    /// Parses a provider name as typed by an operator.
    pub fn parse(name: &str) -> Option<Protocol> {
        match name.to_ascii_lowercase().as_str() {
            "anthropic" => Some(Protocol::Anthropic),
            "openai" => Some(Protocol::OpenAi),
            "bedrock" => Some(Protocol::Bedrock),
            _ => None,
        }
    }

    /// The public API the family talks to when no upstream is configured.
    pub fn default_upstream(self) -> &'static str {
        match self {
            Protocol::Anthropic => "https://api.anthropic.com",
            Protocol::OpenAi => "https://api.openai.com",
            // The region is filled in by the config (`[upstream.bedrock] region`).
            Protocol::Bedrock => "https://bedrock-runtime.{region}.amazonaws.com",
        }
    }

    /// The environment variable that overrides the upstream base URL.
    pub fn upstream_env(self) -> &'static str {
        match self {
            Protocol::Anthropic => "UPSTREAM_ANTHROPIC_URL",
            Protocol::OpenAi => "UPSTREAM_OPENAI_URL",
            Protocol::Bedrock => "UPSTREAM_BEDROCK_URL",
        }
    }

    /// How the real credential is presented upstream unless the operator overrides it.
    pub fn default_auth_style(self) -> AuthStyle {
        match self {
            Protocol::Anthropic => AuthStyle::XApiKey,
            Protocol::OpenAi => AuthStyle::Bearer,
            Protocol::Bedrock => AuthStyle::Sigv4,
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which header carries the real provider credential on the way upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AuthStyle {
    /// `x-api-key: <secret>` (Anthropic API keys).
    XApiKey,
    /// `Authorization: Bearer <secret>` (OpenAI, LiteLLM, most proxies).
    Bearer,
    /// `api-key: <secret>` (Azure OpenAI).
    ApiKey,
    /// `x-portkey-config: <sealed JSON config>` (a Portkey gateway in front of the provider: the
    /// config names the provider, its key and optionally `custom_host`).
    PortkeyConfig,
    /// AWS Signature Version 4 over the whole request, with a sealed access key pair (Bedrock).
    /// A Bedrock API key as the credential is sent as `Authorization: Bearer` instead.
    Sigv4,
}

/// Who answers a request: the provider whose prices bill it, whose sealed credential is attached
/// and under whose name the ledger and the audit record keep it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    /// Anthropic's API.
    Anthropic,
    /// OpenAI's API.
    #[serde(rename = "openai")]
    OpenAi,
    /// Azure OpenAI (the OpenAI family, `api-key`, deployments).
    Azure,
    /// AWS Bedrock (its own family, or Anthropic-API clients translated).
    Bedrock,
}

impl Provider {
    /// Every provider, in a stable order (listings, `conduit credentials set <provider>`).
    pub const ALL: [Provider; 4] = [
        Provider::Anthropic,
        Provider::OpenAi,
        Provider::Bedrock,
        Provider::Azure,
    ];

    /// The lowercase name used in config, CLI arguments, prices, the ledger, the audit record
    /// and the store.
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Anthropic => "anthropic",
            Provider::OpenAi => "openai",
            Provider::Azure => "azure",
            Provider::Bedrock => "bedrock",
        }
    }

    /// Parses a provider name as typed by an operator (case-insensitive).
    pub fn parse(name: &str) -> Option<Provider> {
        Provider::ALL
            .into_iter()
            .find(|p| p.as_str().eq_ignore_ascii_case(name.trim()))
    }

    /// `anthropic, openai, bedrock, azure`: for messages that list the valid names.
    pub fn names() -> String {
        Provider::ALL.map(Provider::as_str).join(", ")
    }

    /// The provider a family reaches when nothing else is configured.
    pub fn native(family: Protocol) -> Provider {
        match family {
            Protocol::Anthropic => Provider::Anthropic,
            Protocol::OpenAi => Provider::OpenAi,
            Protocol::Bedrock => Provider::Bedrock,
        }
    }

    /// How an operator sets this provider's credential (for the refusal when none is set).
    pub fn credential_hint(self) -> String {
        match self {
            Provider::Bedrock => "`conduit credentials set bedrock --from-aws-env` (an access key pair) or `--from-env VAR` (a Bedrock API key)".into(),
            p => format!("`conduit credentials set {p} --from-env VAR`"),
        }
    }

    /// Whose rows price this provider's models when it has none of its own (Azure OpenAI serves
    /// OpenAI's models at OpenAI's list prices unless the operator imports its own).
    pub fn price_fallback(self) -> Option<Provider> {
        match self {
            Provider::Azure => Some(Provider::OpenAi),
            _ => None,
        }
    }

    /// The provider's public price list (the source of a row the price map gives none for).
    pub fn pricing_page(self) -> &'static str {
        match self {
            Provider::Anthropic => "https://platform.claude.com/docs/en/about-claude/pricing",
            Provider::OpenAi => "https://openai.com/api/pricing",
            Provider::Azure => "https://azure.microsoft.com/pricing/details/cognitive-services/openai-service/",
            Provider::Bedrock => "https://aws.amazon.com/bedrock/pricing/",
        }
    }

    /// The provider a LiteLLM price-map entry (`litellm_provider`) belongs to, if Conduit routes it.
    pub fn from_litellm(name: &str) -> Option<Provider> {
        match name {
            "anthropic" => Some(Provider::Anthropic),
            "openai" => Some(Provider::OpenAi),
            "azure" => Some(Provider::Azure),
            "bedrock" | "bedrock_converse" => Some(Provider::Bedrock),
            _ => None,
        }
    }
}

/// Ordered by name, as every listing, report and generated file sorts providers.
impl Ord for Provider {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.as_str().cmp(other.as_str())
    }
}

impl PartialOrd for Provider {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provider_names_round_trip_in_text_and_serde() {
        for p in Provider::ALL {
            assert_eq!(Provider::parse(p.as_str()), Some(p));
            assert_eq!(Provider::parse(&p.as_str().to_ascii_uppercase()), Some(p));
            let json = serde_json::to_string(&p).unwrap();
            assert_eq!(json, format!("\"{p}\""));
            assert_eq!(serde_json::from_str::<Provider>(&json).unwrap(), p);
        }
        assert_eq!(Provider::parse("gemini"), None);
        assert_eq!(Provider::names(), "anthropic, openai, bedrock, azure");
        let mut sorted = Provider::ALL;
        sorted.sort();
        assert_eq!(
            sorted.map(Provider::as_str),
            ["anthropic", "azure", "bedrock", "openai"]
        );
    }
}
