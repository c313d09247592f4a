//! Stand-in keys: the revocable secrets Conduit issues to engineers in place of provider keys.
//!
//! Format: `ck_` + 40 base62 characters of randomness (~238 bits) + 6 base62 characters of CRC32
//! over those 40. The fixed prefix and the checksum let secret scanners (ours included) recognise
//! a leaked key without a lookup, and let the gateway reject typos before touching the store.
//! Only the SHA-256 of the full key is stored; the key is shown once, at creation.

use sha2::{Digest, Sha256};

/// Prefix every stand-in key starts with.
pub const PREFIX: &str = "ck_";
const BODY_LEN: usize = 40;
const CHECK_LEN: usize = 6;
/// Total length of a well-formed key.
pub const KEY_LEN: usize = PREFIX.len() + BODY_LEN + CHECK_LEN;
const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// SHA-256 of a stand-in key: how the store finds a key without holding it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyHash(pub [u8; 32]);

impl KeyHash {
    /// Hashes a presented key.
    pub fn of(key: &str) -> KeyHash {
        KeyHash(Sha256::digest(key.as_bytes()).into())
    }
}

/// A freshly generated stand-in key (the only time the secret exists in Conduit's memory).
pub struct NewKey {
    /// The secret, to show the engineer once.
    pub secret: String,
    /// Its hash, to store.
    pub hash: KeyHash,
    /// Public id (`key_…`), used in logs, audit and CLI.
    pub id: String,
    /// Last four characters, to help a person match a key to its id.
    pub hint: String,
}

impl std::fmt::Debug for NewKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewKey")
            .field("id", &self.id)
            .field("hint", &self.hint)
            .finish_non_exhaustive()
    }
}

/// Generates a new key from the OS random source.
pub fn generate() -> Result<NewKey, getrandom::Error> {
    let mut secret = String::with_capacity(KEY_LEN);
    secret.push_str(PREFIX);
    // Rejection sampling keeps every base62 digit uniform.
    let mut filled = 0;
    let mut buf = [0u8; 64];
    while filled < BODY_LEN {
        getrandom::fill(&mut buf)?;
        for &b in &buf {
            if filled == BODY_LEN {
                break;
            }
            if b < 248 {
                secret.push(BASE62[(b % 62) as usize] as char);
                filled += 1;
            }
        }
    }
    let check = crc32fast::hash(&secret.as_bytes()[PREFIX.len()..]);
    secret.push_str(&base62_fixed(check));
    let mut id_bytes = [0u8; 6];
    getrandom::fill(&mut id_bytes)?;
    let id = format!("key_{}", crate::hex::encode(&id_bytes));
    let hint = secret[secret.len() - 4..].to_string();
    Ok(NewKey {
        hash: KeyHash::of(&secret),
        secret,
        id,
        hint,
    })
}

/// Why a presented token is not a well-formed stand-in key (checked before any store lookup).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Malformed {
    /// Does not start with `ck_`.
    Prefix,
    /// Wrong length or a character outside base62.
    Shape,
    /// Checksum mismatch: a typo or a truncated copy.
    Checksum,
}

/// Checks prefix, length, alphabet and checksum.
pub fn check_format(token: &str) -> Result<(), Malformed> {
    let Some(rest) = token.strip_prefix(PREFIX) else {
        return Err(Malformed::Prefix);
    };
    if rest.len() != BODY_LEN + CHECK_LEN || !rest.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(Malformed::Shape);
    }
    let (body, check) = rest.split_at(BODY_LEN);
    if base62_fixed(crc32fast::hash(body.as_bytes())) != check {
        return Err(Malformed::Checksum);
    }
    Ok(())
}

fn base62_fixed(mut n: u32) -> String {
    let mut out = [b'0'; CHECK_LEN];
    for slot in out.iter_mut().rev() {
        *slot = BASE62[(n % 62) as usize];
        n /= 62;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_are_well_formed_and_distinct() {
        let a = generate().unwrap();
        let b = generate().unwrap();
        assert_eq!(a.secret.len(), KEY_LEN);
        assert!(a.secret.starts_with(PREFIX));
        assert_eq!(check_format(&a.secret), Ok(()));
        assert_ne!(a.secret, b.secret);
        assert_ne!(a.id, b.id);
        assert_eq!(KeyHash::of(&a.secret), a.hash);
        assert!(!format!("{a:?}").contains(&a.secret), "Debug must not print the secret");
    }

    #[test]
    fn typos_are_caught_by_the_checksum() {
        let k = generate().unwrap().secret;
        let mut flipped = k.clone().into_bytes();
        let i = PREFIX.len() + 7;
        flipped[i] = if flipped[i] == b'a' { b'b' } else { b'a' };
        assert_eq!(
            check_format(std::str::from_utf8(&flipped).unwrap()),
            Err(Malformed::Checksum)
        );
        assert_eq!(check_format(&k[..k.len() - 1]), Err(Malformed::Shape));
        assert_eq!(check_format("sk-ant-api03-abc"), Err(Malformed::Prefix));
        assert_eq!(check_format(&k.replace('_', "-")), Err(Malformed::Prefix));
    }

    /// Property: arbitrary text, including multi-byte characters, never panics the format check,
    /// and every single-character substitution in a valid key is rejected.
    #[test]
    fn arbitrary_tokens_never_panic_and_substitutions_fail() {
        let mut rng = crate::testing::Rng(7);
        let alphabet: Vec<char> = "ck_AZaz09-é日\u{0}".chars().collect();
        for _ in 0..20_000 {
            let len = rng.below(60);
            let t: String = (0..len).map(|_| alphabet[rng.below(alphabet.len())]).collect();
            let _ = check_format(&t);
        }
        let k = generate().unwrap().secret;
        for i in PREFIX.len()..k.len() {
            for c in [b'0', b'Z', b'z'] {
                let mut b = k.clone().into_bytes();
                if b[i] == c {
                    continue;
                }
                b[i] = c;
                assert!(
                    check_format(std::str::from_utf8(&b).unwrap()).is_err(),
                    "substitution at {i} accepted"
                );
            }
        }
    }
}
