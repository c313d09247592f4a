//! **credential** — reads: the sealed credential of the route's provider (`anthropic`, `openai`,
//! `azure`, `bedrock`). Decides: nothing but whether one is set (fail closed: without it the
//! request is refused, never sent unauthenticated). Returns: how the real credential goes upstream
//! — a header, marked sensitive so hyper never logs or indexes it, or an AWS credential that
//! `forward` signs the outgoing request with. The unsealed plaintext is zeroized as soon as it has
//! been turned into either.

use http::{HeaderName, HeaderValue};
use zeroize::Zeroizing;

use crate::config::Upstream;
use crate::error::{ErrorKind, GatewayError};
use crate::protocol::AuthStyle;
use crate::seal::MasterKey;
use crate::sigv4::AwsCredential;
use conduit_state::store::CredentialStore;

/// The real credential, as the upstream takes it.
pub enum UpstreamAuth<'a> {
    /// One header (value sensitive).
    Header(HeaderName, HeaderValue),
    /// AWS: SigV4 over the final request, or a Bedrock API key as a bearer token.
    Aws {
        /// The unsealed credential (secret parts zeroized on drop).
        credential: AwsCredential,
        /// Region signed for.
        region: &'a str,
    },
}

/// What the credential stage reads besides the route.
pub struct Reads<'a> {
    /// The sealed credentials.
    pub credentials: &'a dyn CredentialStore,
    /// The master key that unseals a credential sealed under the given key id (during a
    /// rotation, the new key for what is already re-sealed).
    pub unsealing_key: &'a (dyn Fn(&str) -> std::sync::Arc<MasterKey> + Sync),
}

/// Unseals the credential for `upstream`'s provider and renders it in its auth style.
pub async fn for_upstream<'a>(reads: &Reads<'_>, upstream: &'a Upstream) -> Result<UpstreamAuth<'a>, GatewayError> {
    let provider = upstream.provider;
    let sealed = reads
        .credentials
        .get(provider.as_str(), "default")
        .await
        .map_err(|e| GatewayError::internal(format!("credential lookup failed: {e}")))?
        .ok_or_else(|| {
            let how = provider.credential_hint();
            GatewayError::new(
                ErrorKind::NotConfigured,
                crate::error::Fault::Gateway,
                format!("no {provider} credential is set in this gateway; an operator must run {how}"),
            )
        })?;
    let plaintext = (reads.unsealing_key)(&sealed.master_key_id)
        .unseal(&sealed)
        .map_err(|e| GatewayError::internal(format!("unsealing the {provider} credential failed: {e}")))?;
    let secret = std::str::from_utf8(&plaintext)
        .map_err(|_| GatewayError::internal(format!("the {provider} credential is not valid text")))?;
    let (name, text) = match upstream.auth {
        AuthStyle::Sigv4 => {
            let credential = AwsCredential::parse(secret).map_err(GatewayError::internal)?;
            let region = upstream.bedrock.as_ref().map_or("us-east-1", |b| b.region.as_str());
            return Ok(UpstreamAuth::Aws { credential, region });
        }
        AuthStyle::XApiKey => (HeaderName::from_static("x-api-key"), Zeroizing::new(secret.to_string())),
        AuthStyle::Bearer => (http::header::AUTHORIZATION, Zeroizing::new(format!("Bearer {secret}"))),
        AuthStyle::ApiKey => (HeaderName::from_static("api-key"), Zeroizing::new(secret.to_string())),
        AuthStyle::PortkeyConfig => (
            HeaderName::from_static("x-portkey-config"),
            Zeroizing::new(secret.to_string()),
        ),
    };
    let mut value = HeaderValue::from_str(&text).map_err(|_| {
        GatewayError::internal(format!(
            "the {provider} credential contains characters not allowed in a header"
        ))
    })?;
    value.set_sensitive(true);
    Ok(UpstreamAuth::Header(name, value))
}
