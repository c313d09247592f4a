//! ID tokens: compact JWS parsing and signature verification against the IdP's JWKS (RS256/384/512,
//! PS256/384/512, ES256/384 through ring), then the OIDC Core §3.1.3.7 claim checks — `iss` exact,
//! `aud` holds our client id (and `azp` is it when there are several), `exp`/`nbf`/`iat` within
//! the configured clock skew, `nonce` equal to the one this sign-in sent.
//!
//! Refused outright: `alg: none` and every HMAC algorithm (an IdP's public key must never work as
//! a shared secret), a `crit` header, a key whose `use` is not `sig` or whose `alg` disagrees with
//! the token's, more than one key with the token's `kid` when the token names none.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::signature::{self, RsaPublicKeyComponents, UnparsedPublicKey};
use serde::Deserialize;
use serde_json::Value;

/// One key of a JWKS.
#[derive(Debug, Clone, Deserialize)]
pub struct Jwk {
    /// `RSA` or `EC`.
    pub kty: String,
    /// Key id.
    #[serde(default)]
    pub kid: Option<String>,
    /// `sig`, `enc`, or absent.
    #[serde(default, rename = "use")]
    pub use_: Option<String>,
    /// The algorithm the key is for, if the IdP says.
    #[serde(default)]
    pub alg: Option<String>,
    /// RSA modulus.
    #[serde(default)]
    pub n: Option<String>,
    /// RSA exponent.
    #[serde(default)]
    pub e: Option<String>,
    /// EC curve.
    #[serde(default)]
    pub crv: Option<String>,
    /// EC x.
    #[serde(default)]
    pub x: Option<String>,
    /// EC y.
    #[serde(default)]
    pub y: Option<String>,
}

/// A JWKS document.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Jwks {
    /// Its keys.
    pub keys: Vec<Jwk>,
}

#[derive(Debug, Deserialize)]
struct Header {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    crit: Option<Value>,
}

/// Why a token was refused: one sentence, never the token.
pub type Refused = String;

/// A parsed, not yet verified, compact JWS.
#[derive(Debug)]
pub struct Parsed<'a> {
    alg: String,
    /// The key id the header names.
    pub kid: Option<String>,
    signing_input: &'a str,
    signature: Vec<u8>,
    /// The payload's claims.
    pub claims: serde_json::Map<String, Value>,
}

/// Splits and decodes a compact JWS.
pub fn parse(token: &str) -> Result<Parsed<'_>, Refused> {
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err("the ID token is not a compact JWS (three dot-separated parts)".into());
    };
    let decode = |what: &str, part: &str| {
        URL_SAFE_NO_PAD
            .decode(part)
            .map_err(|_| format!("the ID token's {what} is not base64url"))
    };
    let header: Header = serde_json::from_slice(&decode("header", h)?)
        .map_err(|_| "the ID token's header is not a JSON object with an alg".to_string())?;
    if header.crit.is_some() {
        return Err("the ID token's header has a crit parameter, which Conduit does not understand".into());
    }
    let claims = match serde_json::from_slice(&decode("payload", p)?) {
        Ok(Value::Object(m)) => m,
        _ => return Err("the ID token's payload is not a JSON object".into()),
    };
    Ok(Parsed {
        alg: header.alg,
        kid: header.kid,
        signing_input: &token[..h.len() + 1 + p.len()],
        signature: decode("signature", s)?,
        claims,
    })
}

impl Parsed<'_> {
    /// Verifies the signature with the one key of `jwks` that fits the header.
    pub fn verify(&self, jwks: &Jwks) -> Result<(), Refused> {
        let alg = self.alg.as_str();
        let kty = match alg {
            "RS256" | "RS384" | "RS512" | "PS256" | "PS384" | "PS512" => "RSA",
            "ES256" | "ES384" => "EC",
            "none" => return Err("the ID token is unsigned (alg none)".into()),
            other => {
                return Err(format!(
                    "the ID token is signed with {other}, which Conduit does not accept"
                ));
            }
        };
        let candidates: Vec<&Jwk> = jwks
            .keys
            .iter()
            .filter(|k| k.kty == kty)
            .filter(|k| k.use_.as_deref().is_none_or(|u| u == "sig"))
            .filter(|k| k.alg.as_deref().is_none_or(|a| a == alg))
            .filter(|k| match (&self.kid, &k.kid) {
                (Some(want), Some(have)) => want == have,
                (Some(_), None) => false,
                (None, _) => true,
            })
            .collect();
        let key = match candidates.as_slice() {
            [one] => *one,
            [] => {
                return Err(match &self.kid {
                    Some(kid) => format!("no {kty} signing key with kid {kid:?} in the IdP's JWKS"),
                    None => format!("no {kty} signing key in the IdP's JWKS"),
                });
            }
            _ => return Err("the ID token names no kid and the IdP's JWKS has several keys that fit".into()),
        };
        let message = self.signing_input.as_bytes();
        let b64 = |field: &Option<String>, name: &str| -> Result<Vec<u8>, Refused> {
            let v = field
                .as_deref()
                .ok_or_else(|| format!("the IdP's {kty} key lacks {name}"))?;
            URL_SAFE_NO_PAD
                .decode(v.trim_end_matches('='))
                .map_err(|_| format!("the IdP's {kty} key's {name} is not base64url"))
        };
        let ok = if kty == "RSA" {
            let n = b64(&key.n, "n")?;
            let e = b64(&key.e, "e")?;
            let strip = |v: &[u8]| v.iter().position(|&b| b != 0).map_or(Vec::new(), |i| v[i..].to_vec());
            let params: &signature::RsaParameters = match alg {
                "RS256" => &signature::RSA_PKCS1_2048_8192_SHA256,
                "RS384" => &signature::RSA_PKCS1_2048_8192_SHA384,
                "RS512" => &signature::RSA_PKCS1_2048_8192_SHA512,
                "PS256" => &signature::RSA_PSS_2048_8192_SHA256,
                "PS384" => &signature::RSA_PSS_2048_8192_SHA384,
                _ => &signature::RSA_PSS_2048_8192_SHA512,
            };
            RsaPublicKeyComponents {
                n: strip(&n),
                e: strip(&e),
            }
            .verify(params, message, &self.signature)
            .is_ok()
        } else {
            let (curve, size, params): (&str, usize, &'static signature::EcdsaVerificationAlgorithm) = match alg {
                "ES256" => ("P-256", 32, &signature::ECDSA_P256_SHA256_FIXED),
                _ => ("P-384", 48, &signature::ECDSA_P384_SHA384_FIXED),
            };
            if key.crv.as_deref() != Some(curve) {
                return Err(format!("the IdP's key for {alg} is not on curve {curve}"));
            }
            let (x, y) = (b64(&key.x, "x")?, b64(&key.y, "y")?);
            if x.len() != size || y.len() != size {
                return Err(format!("the IdP's {curve} key has coordinates of the wrong length"));
            }
            let mut point = Vec::with_capacity(1 + 2 * size);
            point.push(4);
            point.extend_from_slice(&x);
            point.extend_from_slice(&y);
            UnparsedPublicKey::new(params, point)
                .verify(message, &self.signature)
                .is_ok()
        };
        if ok {
            Ok(())
        } else {
            Err("the ID token's signature does not verify against the IdP's key".into())
        }
    }
}

/// What the claims must say.
#[derive(Debug, Clone)]
pub struct Expect<'a> {
    /// The issuer, exactly.
    pub issuer: &'a str,
    /// Our client id.
    pub client_id: &'a str,
    /// The nonce this sign-in sent (`None` on a refresh, where OIDC allows none).
    pub nonce: Option<&'a str>,
    /// Now, Unix seconds.
    pub now: i64,
    /// Tolerated clock difference, seconds.
    pub skew: i64,
}

/// Checks the registered claims of a verified token.
pub fn check_claims(claims: &serde_json::Map<String, Value>, expect: &Expect<'_>) -> Result<(), Refused> {
    let iss = claims.get("iss").and_then(Value::as_str).unwrap_or_default();
    if iss != expect.issuer {
        return Err(format!(
            "the ID token was issued by {iss:?}, not the configured issuer {:?}",
            expect.issuer
        ));
    }
    let audiences: Vec<&str> = match claims.get("aud") {
        Some(Value::String(a)) => vec![a.as_str()],
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    if !audiences.contains(&expect.client_id) {
        return Err(format!(
            "the ID token is for audience {audiences:?}, not this gateway's client id {:?}",
            expect.client_id
        ));
    }
    let azp = claims.get("azp").and_then(Value::as_str);
    if (audiences.len() > 1 || azp.is_some()) && azp != Some(expect.client_id) {
        return Err(format!(
            "the ID token's authorized party {azp:?} is not this gateway's client id {:?}",
            expect.client_id
        ));
    }
    let time = |name: &str| claims.get(name).and_then(Value::as_i64);
    let Some(exp) = time("exp") else {
        return Err("the ID token has no exp".into());
    };
    if exp + expect.skew <= expect.now {
        return Err(format!("the ID token expired {} s ago", expect.now - exp));
    }
    if let Some(nbf) = time("nbf")
        && nbf - expect.skew > expect.now
    {
        return Err("the ID token is not valid yet (nbf in the future beyond the clock skew)".into());
    }
    match time("iat") {
        Some(iat) if iat - expect.skew > expect.now => {
            return Err("the ID token was issued in the future (check the clocks)".into());
        }
        Some(_) => {}
        None => return Err("the ID token has no iat".into()),
    }
    if let Some(want) = expect.nonce {
        let got = claims.get("nonce").and_then(Value::as_str);
        let same = got.is_some_and(|g| {
            use subtle::ConstantTimeEq;
            g.len() == want.len() && bool::from(g.as_bytes().ct_eq(want.as_bytes()))
        });
        if !same {
            return Err("the ID token's nonce is not the one this sign-in sent (a replayed or swapped token)".into());
        }
    }
    let sub = claims.get("sub").and_then(Value::as_str).unwrap_or_default();
    if sub.is_empty() {
        return Err("the ID token has no sub".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::rand::SystemRandom;
    use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};

    fn key() -> (EcdsaKeyPair, Jwk) {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng).unwrap();
        let public = pair.public_key().as_ref();
        let jwk = Jwk {
            kty: "EC".into(),
            kid: Some("k1".into()),
            use_: Some("sig".into()),
            alg: None,
            n: None,
            e: None,
            crv: Some("P-256".into()),
            x: Some(URL_SAFE_NO_PAD.encode(&public[1..33])),
            y: Some(URL_SAFE_NO_PAD.encode(&public[33..])),
        };
        (pair, jwk)
    }

    fn sign(pair: &EcdsaKeyPair, header: &str, claims: &Value) -> String {
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let sig = pair.sign(&SystemRandom::new(), input.as_bytes()).unwrap();
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref()))
    }

    fn claims(now: i64) -> Value {
        serde_json::json!({"iss": "https://idp", "aud": "conduit", "sub": "u1", "exp": now + 300, "iat": now, "nonce": "n1"})
    }

    fn expect(now: i64) -> Expect<'static> {
        Expect {
            issuer: "https://idp",
            client_id: "conduit",
            nonce: Some("n1"),
            now,
            skew: 60,
        }
    }

    #[test]
    fn a_good_token_verifies_and_each_tampering_is_refused() {
        let (pair, jwk) = key();
        let jwks = Jwks { keys: vec![jwk] };
        let token = sign(&pair, r#"{"alg":"ES256","kid":"k1"}"#, &claims(1000));
        let parsed = parse(&token).unwrap();
        parsed.verify(&jwks).unwrap();
        check_claims(&parsed.claims, &expect(1000)).unwrap();

        // A changed payload under the old signature.
        let mut parts: Vec<&str> = token.split('.').collect();
        let forged = URL_SAFE_NO_PAD.encode(claims(1000).to_string().replace("u1", "u2"));
        parts[1] = &forged;
        let err = parse(&parts.join(".")).unwrap().verify(&jwks).unwrap_err();
        assert!(err.contains("does not verify"), "{err}");

        // Another key's signature, and an unknown kid.
        let (other, _) = key();
        let err = parse(&sign(&other, r#"{"alg":"ES256","kid":"k1"}"#, &claims(1000)))
            .unwrap()
            .verify(&jwks)
            .unwrap_err();
        assert!(err.contains("does not verify"), "{err}");
        let err = parse(&sign(&pair, r#"{"alg":"ES256","kid":"k9"}"#, &claims(1000)))
            .unwrap()
            .verify(&jwks)
            .unwrap_err();
        assert!(err.contains("k9"), "{err}");

        // alg none and HMAC: never.
        for alg in ["none", "HS256"] {
            let t = sign(&pair, &format!(r#"{{"alg":"{alg}","kid":"k1"}}"#), &claims(1000));
            assert!(parse(&t).unwrap().verify(&jwks).is_err(), "{alg} accepted");
        }
        let err = parse(&sign(&pair, r#"{"alg":"ES256","crit":["x"]}"#, &claims(1000))).unwrap_err();
        assert!(err.contains("crit"), "{err}");
    }

    #[test]
    fn claims_are_checked_one_by_one() {
        let now = 10_000;
        let refused = |c: Value, e: Expect<'_>| check_claims(c.as_object().unwrap(), &e).unwrap_err();
        let mut c = claims(now);
        c["iss"] = "https://evil".into();
        assert!(refused(c, expect(now)).contains("configured issuer"));
        let mut c = claims(now);
        c["aud"] = serde_json::json!(["other", "conduit"]);
        assert!(refused(c, expect(now)).contains("authorized party"));
        let mut c = claims(now);
        c["aud"] = "other".into();
        assert!(refused(c, expect(now)).contains("audience"));
        let mut c = claims(now);
        c["exp"] = (now - 61).into();
        assert!(refused(c, expect(now)).contains("expired"));
        let mut c = claims(now);
        c["exp"] = (now - 59).into();
        assert!(
            check_claims(c.as_object().unwrap(), &expect(now)).is_ok(),
            "within the skew"
        );
        let mut c = claims(now);
        c["iat"] = (now + 120).into();
        assert!(refused(c, expect(now)).contains("future"));
        let mut c = claims(now);
        c["nonce"] = "n2".into();
        assert!(refused(c, expect(now)).contains("nonce"));
        let mut c = claims(now);
        c.as_object_mut().unwrap().remove("nonce");
        assert!(refused(c.clone(), expect(now)).contains("nonce"));
        let refresh = Expect {
            nonce: None,
            ..expect(now)
        };
        assert!(
            check_claims(c.as_object().unwrap(), &refresh).is_ok(),
            "no nonce on a refresh"
        );
        let mut c = claims(now);
        c["sub"] = "".into();
        assert!(refused(c, expect(now)).contains("sub"));
    }
}
