//! The provider API families Conduit speaks, and what differs between them at the edge:
//! how a client authenticates, how the real credential is attached, and the error shape.
//!
//! Everything protocol-specific that the request stages need goes through [`Protocol`], so that a
//! new family is one more variant here rather than `if` chains across stages. A family is what the
//! *client* speaks; the provider behind it can differ (an OpenAI client reaching Azure OpenAI, an
//! Anthropic client reaching Bedrock): see [`crate::config::Upstream::provider`].

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

/// The providers a credential can be set for: the families plus the providers reached through
/// them. `conduit credentials set <provider>` takes one of these names.
pub const CREDENTIAL_PROVIDERS: [&str; 4] = ["anthropic", "openai", "bedrock", "azure"];
