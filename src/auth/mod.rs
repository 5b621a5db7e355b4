//! Authentication and entitlements: who a client is, and what it may read.
//!
//! In: the token a client presents at the handshake (or later, in a
//! `refresh`), a JSON Web Token signed with the operator's HMAC secret
//! (`--auth-jwt-secret`) or matching the operator's public key
//! (`--auth-public-key`, RSA or EC). Out: a [`Grant`]: the token's subject,
//! its expiry, and its compiled [`Entitlements`] (symbol patterns, replay
//! sources, a subscription limit), shared as an `Arc` with the engine,
//! which checks them when a session subscribes and never per message.
//!
//! - [`token`]: where a handshake carries its token (header, query,
//!   subprotocol).
//! - [`entitlements`]: the claims, compiled, and their checks.
//!
//! Without a [`Verifier`] (no `--auth-*` flag) the server is open: every
//! client reads every symbol and every recording.
//!
//! Imports: nothing of the crate; it is a leaf.

pub mod entitlements;
pub mod token;

use std::fmt;
use std::sync::Arc;

use jsonwebtoken::{decode, decode_header, Algorithm, DecodingKey, Validation};

pub use entitlements::{Claims, Entitlements, PatternError};

/// Shortest HMAC secret accepted: 32 bytes, the output size of SHA-256
/// (RFC 7518 §3.2 asks for a key at least that long for HS256).
pub const MIN_SECRET_BYTES: usize = 32;

/// Why a token is refused. Its text is the plain-text body of the HTTP 401
/// at the handshake, or the message of the `error` a `refresh` gets.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No token in `Authorization: Bearer`, `?token=` or a
    /// `base64url.bearer.` subprotocol entry.
    #[error("missing token: send Authorization: Bearer <jwt>, ?token=<jwt>, or a Sec-WebSocket-Protocol entry base64url.bearer.<jwt>")]
    Missing,
    /// The token's `exp` is in the past.
    #[error("token expired")]
    Expired,
    /// The token's `nbf` is in the future.
    #[error("token not valid yet (nbf)")]
    NotYetValid,
    /// The signature does not verify with the server's key.
    #[error("invalid token: bad signature")]
    BadSignature,
    /// The token's `alg` is not one the server's keys verify.
    #[error("invalid token: algorithm {0} is not accepted by this server")]
    Algorithm(String),
    /// Not a JWT, or its claims are not JSON of the documented shape.
    #[error("invalid token: {0}")]
    Malformed(String),
    /// A claim has the right type but a bad value (e.g. a symbol pattern
    /// with `*` in the middle).
    #[error("invalid token claims: {0}")]
    Claims(String),
}

/// Why the operator's key could not be used (a start-up error).
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The HMAC secret is shorter than [`MIN_SECRET_BYTES`].
    #[error("the JWT secret is {0} bytes: use at least {MIN_SECRET_BYTES} random bytes")]
    ShortSecret(usize),
    /// The PEM holds neither an RSA nor an EC public key.
    #[error("not an RSA or EC public key in PEM form: {0}")]
    BadPublicKey(String),
}

/// The kind of public key, which decides the algorithms it verifies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PublicKind {
    Rsa,
    Ec,
}

/// Verifies tokens with the operator's keys: the HMAC secret, a public
/// key, or both (each token's `alg` picks which; an HMAC `alg` is never
/// tried against a public key, so the classic algorithm-confusion attack
/// has nothing to work with).
pub struct Verifier {
    /// `--auth-jwt-secret`: HS256, HS384, HS512.
    secret: Option<DecodingKey>,
    /// `--auth-public-key`: RS256/RS384/RS512 for RSA, ES256/ES384 for EC.
    public: Option<(DecodingKey, PublicKind)>,
}

impl fmt::Debug for Verifier {
    /// Never prints key material.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verifier")
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .field("public", &self.public.as_ref().map(|(_, kind)| kind))
            .finish()
    }
}

impl Verifier {
    /// A verifier with an HMAC secret, a PEM public key, or both. `None`
    /// for both is a verifier that refuses every token.
    pub fn new(secret: Option<&[u8]>, public_key_pem: Option<&[u8]>) -> Result<Verifier, KeyError> {
        let secret = match secret {
            Some(s) if s.len() < MIN_SECRET_BYTES => return Err(KeyError::ShortSecret(s.len())),
            Some(s) => Some(DecodingKey::from_secret(s)),
            None => None,
        };
        let public = match public_key_pem {
            Some(pem) => Some(match DecodingKey::from_rsa_pem(pem) {
                Ok(key) => (key, PublicKind::Rsa),
                Err(_) => match DecodingKey::from_ec_pem(pem) {
                    Ok(key) => (key, PublicKind::Ec),
                    Err(e) => return Err(KeyError::BadPublicKey(e.to_string())),
                },
            }),
            None => None,
        };
        Ok(Verifier { secret, public })
    }

    /// Checks a token's signature, expiry (`exp`, no leeway) and
    /// not-before (`nbf`), and compiles its entitlements.
    pub fn verify(&self, token: &str) -> Result<Grant, AuthError> {
        use jsonwebtoken::errors::ErrorKind;
        let header = decode_header(token).map_err(|e| AuthError::Malformed(e.to_string()))?;
        let key = match header.alg {
            Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => self.secret.as_ref(),
            Algorithm::RS256 | Algorithm::RS384 | Algorithm::RS512 => {
                self.public.as_ref().filter(|(_, kind)| *kind == PublicKind::Rsa).map(|(k, _)| k)
            }
            Algorithm::ES256 | Algorithm::ES384 => {
                self.public.as_ref().filter(|(_, kind)| *kind == PublicKind::Ec).map(|(k, _)| k)
            }
            _ => None,
        };
        let Some(key) = key else {
            return Err(AuthError::Algorithm(format!("{:?}", header.alg)));
        };
        let mut validation = Validation::new(header.alg);
        // Expiry is exact: a token is refused the second it expires.
        validation.leeway = 0;
        validation.validate_nbf = true;
        // `exp` is optional (a token without one never expires); `aud`
        // and `iss` are not checked.
        validation.set_required_spec_claims::<&str>(&[]);
        validation.validate_aud = false;
        let claims = decode::<Claims>(token, key, &validation)
            .map_err(|e| match e.kind() {
                ErrorKind::ExpiredSignature => AuthError::Expired,
                ErrorKind::ImmatureSignature => AuthError::NotYetValid,
                ErrorKind::InvalidSignature => AuthError::BadSignature,
                _ => AuthError::Malformed(e.to_string()),
            })?
            .claims;
        Grant::from_claims(claims)
    }
}

/// What a verified token grants: compiled once at the handshake (or a
/// refresh), then only read.
#[derive(Clone, Debug)]
pub struct Grant {
    /// The token's `sub`, if any: a refresh must carry the same one.
    pub subject: Option<String>,
    /// The token's `exp`, seconds since the Unix epoch; `None`: never.
    pub expires_at: Option<u64>,
    /// What the holder may read, shared with the engine.
    pub entitlements: Arc<Entitlements>,
}

impl Grant {
    /// Compiles verified claims.
    pub fn from_claims(claims: Claims) -> Result<Grant, AuthError> {
        let subject = claims.sub.clone();
        let expires_at = claims.exp;
        let entitlements = Entitlements::from_claims(&claims).map_err(|e| AuthError::Claims(e.to_string()))?;
        Ok(Grant { subject, expires_at, entitlements: Arc::new(entitlements) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{encode, EncodingKey, Header};

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn now() -> u64 {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
    }

    fn sign(claims: serde_json::Value, secret: &[u8]) -> String {
        encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(secret)).unwrap()
    }

    #[test]
    fn hs256_tokens_verify_and_compile() {
        let v = Verifier::new(Some(SECRET), None).unwrap();
        let t = sign(serde_json::json!({"sub":"ann","exp": now() + 60, "symbols":["BTC*","AAPL"]}), SECRET);
        let g = v.verify(&t).unwrap();
        assert_eq!(g.subject.as_deref(), Some("ann"));
        assert!(g.entitlements.allows_symbol("BTCUSDT") && g.entitlements.allows_symbol("AAPL"));
        assert!(!g.entitlements.allows_symbol("ETHUSDT"));
    }

    #[test]
    fn bad_tokens_say_why() {
        let v = Verifier::new(Some(SECRET), None).unwrap();
        let wrong = sign(serde_json::json!({"symbols":["*"]}), b"another-secret-another-secret-xx");
        assert_eq!(v.verify(&wrong).unwrap_err(), AuthError::BadSignature);
        let expired = sign(serde_json::json!({"exp": now() - 5}), SECRET);
        assert_eq!(v.verify(&expired).unwrap_err(), AuthError::Expired);
        assert!(matches!(v.verify("not a jwt").unwrap_err(), AuthError::Malformed(_)));
        let bad_claim = sign(serde_json::json!({"symbols":["A*B"]}), SECRET);
        assert!(matches!(v.verify(&bad_claim).unwrap_err(), AuthError::Claims(_)));
        let bad_type = sign(serde_json::json!({"symbols":"AAPL"}), SECRET);
        assert!(matches!(v.verify(&bad_type).unwrap_err(), AuthError::Malformed(_)));
        // An HMAC token when only a public key is configured: refused by alg.
        let pem = b"-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEr7VkguX5+dMbKaNi2NwCKzYO4jYj\n47yK9YVy/AsgoxDPEnm/FQVnlaMZTrPkG15NVddp5ic0xmKBt4RyHClOFQ==\n-----END PUBLIC KEY-----\n";
        let public_only = Verifier::new(None, Some(pem)).unwrap();
        assert!(matches!(public_only.verify(&sign(serde_json::json!({}), SECRET)), Err(AuthError::Algorithm(_))));
    }

    #[test]
    fn keys_are_checked_at_start() {
        assert!(matches!(Verifier::new(Some(b"short"), None), Err(KeyError::ShortSecret(5))));
        assert!(matches!(Verifier::new(None, Some(b"not a pem")), Err(KeyError::BadPublicKey(_))));
        assert!(!format!("{:?}", Verifier::new(Some(SECRET), None).unwrap()).contains("0123"));
    }
}
