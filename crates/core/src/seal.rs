//! Sealing provider credentials at rest: AES-256-GCM under the operator's master key.
//!
//! Each seal uses a fresh random 96-bit nonce and binds provider, credential id and version as
//! associated data, so a sealed blob cannot be swapped between providers or rolled back to an older
//! version unnoticed. The master key never enters the store: only its id (a hash) does, so that a
//! wrong key is refused at start-up with a clear message rather than producing garbage.

use aes_gcm::aead::{Aead, KeyInit as _, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::error::{Error, Result};

/// The key that seals credentials. Zeroized on drop; `Debug` shows only its id.
pub struct MasterKey {
    key: Zeroizing<[u8; 32]>,
    id: String,
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MasterKey({})", self.id)
    }
}

impl MasterKey {
    /// Parses base64 of exactly 32 bytes. `what` names the source in the error (never the value).
    pub fn from_base64(encoded: &str, what: &str) -> Result<MasterKey> {
        let decoded = Zeroizing::new(B64.decode(encoded.trim()).map_err(|e| {
            Error::msg(format!(
                "{what}: not valid base64 ({e}); generate a master key with `conduit master-key generate` or `openssl rand -base64 32`"
            ))
        })?);
        let key: [u8; 32] = decoded.as_slice().try_into().map_err(|_| {
            Error::msg(format!(
                "{what}: expected base64 of 32 bytes, got {} bytes; generate a master key with `conduit master-key generate` or `openssl rand -base64 32`",
                decoded.len()
            ))
        })?;
        Ok(MasterKey::from_bytes(key))
    }

    /// Generates a new random key; returns it with its base64 form for the operator to store.
    pub fn generate() -> Result<(MasterKey, Zeroizing<String>)> {
        let mut key = Zeroizing::new([0u8; 32]);
        getrandom::fill(key.as_mut()).map_err(|e| Error::msg(format!("OS random source failed: {e}")))?;
        let encoded = Zeroizing::new(B64.encode(key.as_ref()));
        Ok((MasterKey::from_bytes(*key), encoded))
    }

    fn from_bytes(key: [u8; 32]) -> MasterKey {
        let mut h = Sha256::new();
        h.update(b"conduit master key id v1\0");
        h.update(key);
        let id = format!("mk_{}", crate::hex::encode(&h.finalize()[..8]));
        MasterKey {
            key: Zeroizing::new(key),
            id,
        }
    }

    /// The key in base64, for writing it where the operator keeps it. Zeroized on drop.
    pub fn to_base64(&self) -> Zeroizing<String> {
        Zeroizing::new(B64.encode(self.key.as_ref()))
    }

    /// A 32-byte key for another purpose, derived from this one (HMAC-SHA256 of `label`): it
    /// changes when the master key does, and reveals nothing about it.
    pub fn derive(&self, label: &str) -> Zeroizing<[u8; 32]> {
        use hmac::digest::KeyInit;
        use hmac::{Hmac, Mac};
        // HMAC pads a key shorter than the block with zeros: the same MAC as the 32-byte key.
        let mut block = Zeroizing::new([0u8; 64]);
        block[..32].copy_from_slice(self.key.as_ref());
        let mut mac = <Hmac<Sha256> as KeyInit>::new(block.as_ref().into());
        mac.update(label.as_bytes());
        Zeroizing::new(mac.finalize().into_bytes().into())
    }

    /// Public identifier of this key (a hash); safe to store and print.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Seals `plaintext` as version `version` of credential `id` for `provider`.
    pub fn seal(&self, provider: &str, id: &str, version: u32, plaintext: &[u8], now: i64) -> Result<SealedCredential> {
        let mut nonce = [0u8; 12];
        getrandom::fill(&mut nonce).map_err(|e| Error::msg(format!("OS random source failed: {e}")))?;
        let aad = associated_data(provider, id, version);
        let ciphertext = self
            .cipher()
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad: aad.as_bytes(),
                },
            )
            .map_err(|_| Error::msg("sealing the credential failed"))?;
        Ok(SealedCredential {
            provider: provider.to_string(),
            id: id.to_string(),
            version,
            master_key_id: self.id.clone(),
            nonce: B64.encode(nonce),
            ciphertext: B64.encode(ciphertext),
            updated_at: now,
        })
    }

    /// Opens a sealed credential; the plaintext is zeroized when the returned value drops.
    pub fn unseal(&self, sealed: &SealedCredential) -> Result<Zeroizing<Vec<u8>>> {
        if sealed.master_key_id != self.id {
            return Err(Error::msg(format!(
                "the {} credential was sealed under master key {} but the gateway holds {}; start it with the original master key",
                sealed.provider, sealed.master_key_id, self.id
            )));
        }
        let nonce = B64
            .decode(&sealed.nonce)
            .map_err(|e| Error::msg(format!("sealed nonce: {e}")))?;
        let ciphertext = B64
            .decode(&sealed.ciphertext)
            .map_err(|e| Error::msg(format!("sealed ciphertext: {e}")))?;
        if nonce.len() != 12 {
            return Err(Error::msg("sealed credential has a malformed nonce"));
        }
        let aad = associated_data(&sealed.provider, &sealed.id, sealed.version);
        self.cipher()
            .decrypt(Nonce::from_slice(&nonce), Payload { msg: &ciphertext, aad: aad.as_bytes() })
            .map(Zeroizing::new)
            .map_err(|_| {
                Error::msg(format!(
                    "the sealed {} credential failed authentication: it was altered, or sealed for another provider or version",
                    sealed.provider
                ))
            })
    }

    fn cipher(&self) -> Aes256Gcm {
        Aes256Gcm::new(self.key.as_ref().into())
    }
}

fn associated_data(provider: &str, id: &str, version: u32) -> String {
    format!("conduit/credential/v1|{provider}|{id}|{version}")
}

/// A provider credential at rest. Carries no plaintext and no hash of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedCredential {
    /// `anthropic`, `openai`, ….
    pub provider: String,
    /// Credential name within the provider (`default`).
    pub id: String,
    /// Incremented on every set; bound into the associated data.
    pub version: u32,
    /// Which master key sealed it.
    pub master_key_id: String,
    /// Base64 of the 96-bit nonce.
    pub nonce: String,
    /// Base64 of ciphertext + tag.
    pub ciphertext: String,
    /// Unix seconds of the last set or re-seal.
    pub updated_at: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_binding() {
        let (mk, _) = MasterKey::generate().unwrap();
        let sealed = mk.seal("anthropic", "default", 3, b"sk-ant-secret", 0).unwrap();
        assert_eq!(mk.unseal(&sealed).unwrap().as_slice(), b"sk-ant-secret");
        assert!(!sealed.ciphertext.contains("sk-ant"));

        // Same plaintext twice → different nonces and ciphertexts.
        let again = mk.seal("anthropic", "default", 3, b"sk-ant-secret", 0).unwrap();
        assert_ne!(sealed.nonce, again.nonce);
        assert_ne!(sealed.ciphertext, again.ciphertext);

        // Moving the blob to another provider or version breaks authentication.
        let mut moved = sealed.clone();
        moved.provider = "openai".into();
        assert!(mk.unseal(&moved).is_err());
        let mut rolled = sealed.clone();
        rolled.version = 2;
        assert!(mk.unseal(&rolled).is_err());
    }

    #[test]
    fn wrong_master_key_is_refused_by_id() {
        let (a, _) = MasterKey::generate().unwrap();
        let (b, _) = MasterKey::generate().unwrap();
        let sealed = a.seal("openai", "default", 1, b"sk-proj-x", 0).unwrap();
        let err = b.unseal(&sealed).unwrap_err().to_string();
        assert!(err.contains(a.id()) && err.contains(b.id()), "{err}");
    }

    #[test]
    fn master_key_parsing_names_the_problem_not_the_value() {
        let err = MasterKey::from_base64("c2hvcnQ=", "CONDUIT_MASTER_KEY")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("CONDUIT_MASTER_KEY") && err.contains("got 5 bytes"),
            "{err}"
        );
        assert!(!err.contains("c2hvcnQ="));
        let (_, b64) = MasterKey::generate().unwrap();
        assert!(MasterKey::from_base64(&b64, "x").is_ok());
    }
}

/// A configured secret: `Debug` never shows it, so a config printed while debugging leaks nothing.
#[derive(Clone, Deserialize)]
#[serde(transparent)]
pub struct Redacted(String);

impl Redacted {
    /// Wraps a secret.
    pub fn new(secret: String) -> Redacted {
        Redacted(secret)
    }

    /// The secret, moved out.
    pub fn into_inner(self) -> String {
        self.0
    }

    /// The secret itself, for the one place that uses it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Redacted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}
