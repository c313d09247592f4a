//! `conduit-cosign-verify`: checks a Conduit image's signature in a registry the way `cosign
//! verify --key KEY --insecure-ignore-tlog=true IMAGE` does, with the sigstore project's Rust
//! client — an implementation that shares no code with `deploy/sign.py`.
//!
//! ```text
//! conduit-cosign-verify --key cosign.pub [--http] [--identity REPO] REGISTRY/REPO@sha256:… | REGISTRY/REPO:TAG
//! ```
//!
//! Exit 0 when at least one signature stored beside the image (the `sha256-….sig` tag) is a valid
//! ECDSA signature by the key over a payload naming the image's manifest digest (and, with
//! `--identity`, that repository); 1 otherwise, saying why. No transparency log and no network
//! beyond the registry: what an air-gapped site can check.

use std::process::ExitCode;

use sigstore::cosign::verification_constraint::{PublicKeyVerifier, VerificationConstraint};
use sigstore::cosign::{ClientBuilder, CosignCapabilities};
use sigstore::registry::{Auth, ClientConfig, ClientProtocol, OciReference};

struct Args {
    key: String,
    http: bool,
    identity: Option<String>,
    image: String,
}

fn args() -> Result<Args, String> {
    let mut it = std::env::args().skip(1);
    let (mut key, mut http, mut identity, mut image) = (None, false, None, None);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--key" => key = it.next(),
            "--http" => http = true,
            "--identity" => identity = it.next(),
            other if !other.starts_with('-') && image.is_none() => image = Some(other.to_string()),
            other => return Err(format!("unexpected argument {other:?}")),
        }
    }
    Ok(Args {
        key: key.ok_or("--key FILE is required")?,
        http,
        identity,
        image: image.ok_or("the image reference is required")?,
    })
}

async fn verify(a: &Args) -> Result<String, String> {
    let pem = std::fs::read(&a.key).map_err(|e| format!("reading {}: {e}", a.key))?;
    let verifier =
        PublicKeyVerifier::try_from(&pem).map_err(|e| format!("{} is not a usable public key: {e}", a.key))?;
    let image: OciReference = a
        .image
        .parse()
        .map_err(|e| format!("{:?} is not an image reference: {e}", a.image))?;
    let config = ClientConfig {
        protocol: if a.http {
            ClientProtocol::Http
        } else {
            ClientProtocol::Https
        },
        ..Default::default()
    };
    let mut client = ClientBuilder::default()
        .with_oci_client_config(config)
        .build()
        .map_err(|e| format!("building the registry client: {e}"))?;
    let auth = Auth::Anonymous;
    let (_, digest) = client
        .triangulate(&image, &auth)
        .await
        .map_err(|e| format!("resolving {}: {e}", a.image))?;
    let layers = client
        .trusted_signature_layers(&auth, &image)
        .await
        .map_err(|e| format!("reading the signatures of {}: {e}", a.image))?;
    // Each layer on its own: a layer counts only if the key verifies it AND it names this digest
    // (and the identity asked for) — an unsigned layer beside a signed one proves nothing.
    let trusted: Vec<&str> = layers
        .iter()
        .filter(|l| verifier.verify(l).unwrap_or(false))
        .filter(|l| l.simple_signing.critical.image.docker_manifest_digest == digest)
        .map(|l| l.simple_signing.critical.identity.docker_reference.as_str())
        .collect();
    if trusted.is_empty() {
        return Err(format!(
            "no signature of {} ({digest}) verifies with {} ({} found)",
            a.image,
            a.key,
            layers.len()
        ));
    }
    let signed = match &a.identity {
        Some(want) if !trusted.contains(&want.as_str()) => {
            return Err(format!("signed by that key for {trusted:?}, not for {want:?}"));
        }
        _ => trusted.join(", "),
    };
    Ok(format!("{digest} signed by {} for {signed}", a.key))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let a = match args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("conduit-cosign-verify: {e}");
            return ExitCode::from(2);
        }
    };
    match verify(&a).await {
        Ok(what) => {
            println!("Verified OK: {what}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("conduit-cosign-verify: {e}");
            ExitCode::FAILURE
        }
    }
}
