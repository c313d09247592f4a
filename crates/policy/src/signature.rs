//! Policy signatures: ECDSA P-256 over SHA-256 of the `.wasm` file, DER-encoded, in
//! `<file>.wasm.sig` — base64 (what `cosign sign-blob --output-signature` writes) or raw DER
//! (what `openssl dgst -sha256 -sign key.pem -out file.wasm.sig file.wasm` writes). Public keys are
//! PEM `PUBLIC KEY` (SPKI), as `cosign generate-key-pair` and `openssl ec -pubout` produce.

use base64::Engine as _;
use p256::ecdsa::signature::{Signer, Verifier};
use p256::ecdsa::{DerSignature, Signature, SigningKey, VerifyingKey};
use p256::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey, LineEnding};

/// Parses a PEM public key.
pub fn parse_public_key(pem: &str) -> Result<VerifyingKey, String> {
    VerifyingKey::from_public_key_pem(pem.trim()).map_err(|e| {
        format!("not a PEM ECDSA P-256 public key ({e}); make one with `conduit policy keygen` or `cosign generate-key-pair`")
    })
}

/// Decodes a signature file: base64 text or raw DER.
pub fn decode_signature(file: &[u8]) -> Result<Signature, String> {
    let text = std::str::from_utf8(file).ok().map(str::trim);
    let der = match text.and_then(|t| base64::engine::general_purpose::STANDARD.decode(t).ok()) {
        Some(bytes) => bytes,
        None => file.to_vec(),
    };
    Signature::from_der(&der).map_err(|_| {
        "the signature file is neither base64 DER nor DER ECDSA (cosign sign-blob / openssl dgst -sha256 -sign)"
            .to_string()
    })
}

/// Checks `sig` over `data` against each key; returns the index of the key that verified.
pub fn verify(data: &[u8], sig: &Signature, keys: &[VerifyingKey]) -> Option<usize> {
    // openssl may produce high-S signatures; they are equally valid ECDSA.
    let normalized = sig.normalize_s().unwrap_or(*sig);
    keys.iter()
        .position(|k| k.verify(data, sig).is_ok() || k.verify(data, &normalized).is_ok())
}

/// A new key pair: (PKCS#8 PEM private key, SPKI PEM public key).
pub fn keygen() -> Result<(String, String), String> {
    let mut seed = [0u8; 32];
    let key = loop {
        getrandom::fill(&mut seed).map_err(|e| format!("no randomness: {e}"))?;
        if let Ok(k) = SigningKey::from_slice(&seed) {
            break k;
        }
    };
    let private = key
        .to_pkcs8_pem(LineEnding::LF)
        .map_err(|e| format!("encoding the private key: {e}"))?
        .to_string();
    let public = key
        .verifying_key()
        .to_public_key_pem(LineEnding::LF)
        .map_err(|e| format!("encoding the public key: {e}"))?;
    Ok((private, public))
}

/// Signs `data` with a PKCS#8 PEM private key; returns the base64 DER signature.
pub fn sign(private_pem: &str, data: &[u8]) -> Result<String, String> {
    let key = SigningKey::from_pkcs8_pem(private_pem.trim())
        .map_err(|e| format!("not a PEM PKCS#8 P-256 private key ({e})"))?;
    let sig: DerSignature = key.sign(data);
    Ok(base64::engine::general_purpose::STANDARD.encode(sig.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_verify_tamper_wrong_key() {
        let (private, public) = keygen().unwrap();
        let (_, other) = keygen().unwrap();
        let data = b"\0asm component bytes";
        let sig_b64 = sign(&private, data).unwrap();
        let sig = decode_signature(sig_b64.as_bytes()).unwrap();
        let key = parse_public_key(&public).unwrap();
        let other = parse_public_key(&other).unwrap();
        assert_eq!(verify(data, &sig, &[other, key]), Some(1));
        assert_eq!(verify(data, &sig, &[other]), None);
        let mut tampered = data.to_vec();
        tampered[3] ^= 1;
        assert_eq!(verify(&tampered, &sig, &[key]), None);
        // Raw DER is accepted too.
        let der = base64::engine::general_purpose::STANDARD.decode(sig_b64).unwrap();
        assert!(verify(data, &decode_signature(&der).unwrap(), &[key]).is_some());
        assert!(decode_signature(b"not a signature").is_err());
        assert!(parse_public_key("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----").is_err());
    }

    #[test]
    fn openssl_signatures_verify() {
        let Ok(out) = std::process::Command::new("openssl").arg("version").output() else {
            panic!("openssl is needed for this interop test (apt-get install openssl)");
        };
        assert!(out.status.success());
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("key.pem");
        let public = dir.path().join("key.pub");
        let data = dir.path().join("p.wasm");
        let sig = dir.path().join("p.wasm.sig");
        std::fs::write(&data, b"policy bytes").unwrap();
        let run = |args: &[&str]| {
            let s = std::process::Command::new("openssl").args(args).status().unwrap();
            assert!(s.success(), "openssl {args:?}");
        };
        let p = |p: &std::path::Path| p.to_str().unwrap().to_string();
        run(&["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", &p(&key)]);
        run(&["ec", "-in", &p(&key), "-pubout", "-out", &p(&public)]);
        // Several signatures, so high-S ones occur too.
        for _ in 0..4 {
            run(&["dgst", "-sha256", "-sign", &p(&key), "-out", &p(&sig), &p(&data)]);
            let sig = decode_signature(&std::fs::read(&sig).unwrap()).unwrap();
            let k = parse_public_key(&std::fs::read_to_string(&public).unwrap()).unwrap();
            assert_eq!(verify(b"policy bytes", &sig, &[k]), Some(0));
        }
        // And a key made here verifies a signature made by openssl from our PKCS#8 key.
        let (private, public) = keygen().unwrap();
        std::fs::write(&key, private).unwrap();
        run(&["dgst", "-sha256", "-sign", &p(&key), "-out", &p(&sig), &p(&data)]);
        let sig = decode_signature(&std::fs::read(&sig).unwrap()).unwrap();
        assert!(verify(b"policy bytes", &sig, &[parse_public_key(&public).unwrap()]).is_some());
    }
}
