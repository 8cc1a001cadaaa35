//! Agent cards signed by the gateway (A2A v1.0 §8.4), so a card whose URLs the gateway
//! rewrote is never served with stale signatures, nor unsigned when the operator has a key.
//!
//! What is signed, per §8.4.2: the JWS signing input
//! `BASE64URL(UTF8(protected header)) || '.' || BASE64URL(JCS(card without "signatures"))`,
//! with the protected header `{"alg", "typ": "JOSE", "kid", "jku"}`. The payload is the card
//! exactly as the gateway serves it (minus `signatures`): the agent already chose which fields
//! to send (the proto field-presence rule of §8.4.1 applies where a card is built from proto
//! objects; on the wire the JSON is the record of presence), so a verifier that canonicalizes
//! the card it received reproduces the payload byte for byte.
//!
//! Keys are PEM files: PKCS#8 (`BEGIN PRIVATE KEY`) for ES256 (P-256), RS256 and EdDSA
//! (Ed25519); PKCS#1 (`BEGIN RSA PRIVATE KEY`) for RS256 too. The public half is published as
//! a JWK set ([`CardSigner::jwks`]).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ring::rand::SystemRandom;
use ring::signature::{self, KeyPair as _};
use serde_json::{json, Value};

use crate::jcs;

/// JWS algorithms the gateway signs cards with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Alg {
    Es256,
    Rs256,
    EdDsa,
}

impl Alg {
    pub fn as_str(self) -> &'static str {
        match self {
            Alg::Es256 => "ES256",
            Alg::Rs256 => "RS256",
            Alg::EdDsa => "EdDSA",
        }
    }
}

enum Key {
    Ec(signature::EcdsaKeyPair),
    Rsa(signature::RsaKeyPair),
    Ed(signature::Ed25519KeyPair),
}

/// A gateway key that signs agent cards.
pub struct CardSigner {
    alg: Alg,
    kid: String,
    key: Key,
    rng: SystemRandom,
    /// The public key as a JWK (with `kid`, `alg`, `use`).
    jwk: Value,
}

impl std::fmt::Debug for CardSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CardSigner")
            .field("alg", &self.alg)
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

impl CardSigner {
    /// A signer from a PEM private key, or why the key does not fit `alg`.
    pub fn from_pem(pem_text: &str, alg: Alg, kid: &str) -> Result<CardSigner, String> {
        let block = pem::parse(pem_text.trim())
            .map_err(|e| format!("the key is not a PEM private key: {e}"))?;
        let der = block.contents();
        let tag = block.tag();
        let rng = SystemRandom::new();
        let pkcs8_hint = "convert it with `openssl pkcs8 -topk8 -nocrypt -in KEY -out KEY.p8`";
        let (key, mut jwk) = match alg {
            Alg::Es256 => {
                if tag != "PRIVATE KEY" {
                    return Err(format!(
                        "ES256 needs a PKCS#8 P-256 key (BEGIN PRIVATE KEY), not {tag:?}: \
                         {pkcs8_hint}"
                    ));
                }
                let kp = signature::EcdsaKeyPair::from_pkcs8(
                    &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
                    der,
                    &rng,
                )
                .map_err(|e| format!("not a P-256 key for ES256: {e}"))?;
                // Uncompressed point: 0x04 || X (32) || Y (32).
                let point = kp.public_key().as_ref();
                if point.len() != 65 {
                    return Err("unexpected P-256 public key encoding".into());
                }
                let jwk = json!({
                    "kty": "EC",
                    "crv": "P-256",
                    "x": b64(&point[1..33]),
                    "y": b64(&point[33..]),
                });
                (Key::Ec(kp), jwk)
            }
            Alg::Rs256 => {
                let kp = match tag {
                    "PRIVATE KEY" => signature::RsaKeyPair::from_pkcs8(der),
                    "RSA PRIVATE KEY" => signature::RsaKeyPair::from_der(der),
                    other => {
                        return Err(format!(
                            "RS256 needs an RSA key (BEGIN PRIVATE KEY or BEGIN RSA PRIVATE \
                             KEY), not {other:?}"
                        ))
                    }
                }
                .map_err(|e| format!("not an RSA key for RS256: {e}"))?;
                let parts = signature::RsaPublicKeyComponents::<Vec<u8>>::from(kp.public());
                let strip = |b: &[u8]| -> Vec<u8> {
                    let first = b.iter().position(|&x| x != 0).unwrap_or(b.len());
                    b[first..].to_vec()
                };
                let jwk = json!({
                    "kty": "RSA",
                    "n": b64(&strip(&parts.n)),
                    "e": b64(&strip(&parts.e)),
                });
                (Key::Rsa(kp), jwk)
            }
            Alg::EdDsa => {
                if tag != "PRIVATE KEY" {
                    return Err(format!(
                        "EdDSA needs a PKCS#8 Ed25519 key (BEGIN PRIVATE KEY), not {tag:?}"
                    ));
                }
                let kp = signature::Ed25519KeyPair::from_pkcs8_maybe_unchecked(der)
                    .map_err(|e| format!("not an Ed25519 key for EdDSA: {e}"))?;
                let jwk = json!({
                    "kty": "OKP",
                    "crv": "Ed25519",
                    "x": b64(kp.public_key().as_ref()),
                });
                (Key::Ed(kp), jwk)
            }
        };
        jwk["kid"] = Value::String(kid.to_string());
        jwk["alg"] = Value::String(alg.as_str().to_string());
        jwk["use"] = Value::String("sig".to_string());
        Ok(CardSigner {
            alg,
            kid: kid.to_string(),
            key,
            rng,
            jwk,
        })
    }

    pub fn alg(&self) -> Alg {
        self.alg
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public key, as a JWK.
    pub fn jwk(&self) -> &Value {
        &self.jwk
    }

    /// The JWK set publishing these keys (`{"keys": [...]}`).
    pub fn jwks<'a>(signers: impl IntoIterator<Item = &'a CardSigner>) -> Value {
        let keys: Vec<Value> = signers.into_iter().map(|s| s.jwk.clone()).collect();
        json!({ "keys": keys })
    }

    /// The signature of `card` (its `signatures` member left out of the payload) as an
    /// `AgentCardSignature` object. `jku`: where the JWK set is served, if it is to be named.
    pub fn signature(&self, card: &Value, jku: Option<&str>) -> Result<Value, String> {
        let payload = match card {
            Value::Object(map) if map.contains_key("signatures") => {
                let mut m = map.clone();
                m.remove("signatures");
                jcs::canonicalize(&Value::Object(m))
            }
            other => jcs::canonicalize(other),
        }
        .map_err(|e| format!("the card has no canonical form: {e}"))?;
        // Member order as §8.4.2 lists it; the header is signed as these bytes.
        let mut header = serde_json::Map::new();
        header.insert("alg".into(), self.alg.as_str().into());
        header.insert("typ".into(), "JOSE".into());
        header.insert("kid".into(), self.kid.clone().into());
        if let Some(jku) = jku {
            header.insert("jku".into(), jku.into());
        }
        let protected = b64(Value::Object(header).to_string().as_bytes());
        let mut input = String::with_capacity(protected.len() + 1 + payload.len() * 4 / 3 + 4);
        input.push_str(&protected);
        input.push('.');
        input.push_str(&b64(payload.as_bytes()));
        let sig = match &self.key {
            Key::Ec(kp) => kp
                .sign(&self.rng, input.as_bytes())
                .map(|s| s.as_ref().to_vec())
                .map_err(|_| "ES256 signing failed".to_string())?,
            Key::Rsa(kp) => {
                let mut out = vec![0u8; kp.public().modulus_len()];
                kp.sign(
                    &signature::RSA_PKCS1_SHA256,
                    &self.rng,
                    input.as_bytes(),
                    &mut out,
                )
                .map_err(|_| "RS256 signing failed".to_string())?;
                out
            }
            Key::Ed(kp) => kp.sign(input.as_bytes()).as_ref().to_vec(),
        };
        Ok(json!({"protected": protected, "signature": b64(&sig)}))
    }

    /// Adds the gateway's signature to `card` (an object; anything else is left alone).
    pub fn sign(&self, card: &mut Value, jku: Option<&str>) -> Result<(), String> {
        if !card.is_object() {
            return Ok(());
        }
        let sig = self.signature(card, jku)?;
        match card.get_mut("signatures") {
            Some(Value::Array(sigs)) => sigs.push(sig),
            _ => card["signatures"] = Value::Array(vec![sig]),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A P-256 PKCS#8 key made for these tests (`openssl genpkey -algorithm EC -pkeyopt
    /// ec_paramgen_curve:P-256`).
    pub(crate) const P256_PEM: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgSDcD5W8oTA/xt2bB
6NVAbHZjAN17D3XoPMM7qzyYuKShRANCAAQnn73bKQmiPimg3s5NSep/3GHr5vTK
/nvL8FJ0ydx26cK48JN5i/+K0AcYPimYKn8ReQEC/SSK5meY4L8NE8qU
-----END PRIVATE KEY-----";

    fn verify(signer: &CardSigner, card: &Value, sig: &Value) -> bool {
        let protected = sig["protected"].as_str().unwrap();
        let mut unsigned = card.clone();
        unsigned.as_object_mut().unwrap().remove("signatures");
        let input = format!(
            "{protected}.{}",
            b64(jcs::canonicalize(&unsigned).unwrap().as_bytes())
        );
        let raw = URL_SAFE_NO_PAD
            .decode(sig["signature"].as_str().unwrap())
            .unwrap();
        let (alg, key): (&dyn signature::VerificationAlgorithm, Vec<u8>) = match &signer.key {
            Key::Ec(kp) => (
                &signature::ECDSA_P256_SHA256_FIXED,
                kp.public_key().as_ref().to_vec(),
            ),
            Key::Ed(kp) => (&signature::ED25519, kp.public_key().as_ref().to_vec()),
            Key::Rsa(kp) => (
                &signature::RSA_PKCS1_2048_8192_SHA256,
                kp.public_key().as_ref().to_vec(),
            ),
        };
        signature::UnparsedPublicKey::new(alg, key)
            .verify(input.as_bytes(), &raw)
            .is_ok()
    }

    #[test]
    fn es256_signature_covers_the_canonical_card_without_signatures() {
        let signer = CardSigner::from_pem(P256_PEM, Alg::Es256, "gw-1").unwrap();
        let mut card = json!({
            "name": "Echo",
            "supportedInterfaces": [{"url": "http://gw/a", "protocolBinding": "JSONRPC"}],
            "signatures": [{"protected": "old", "signature": "old"}]
        });
        signer.sign(&mut card, Some("http://gw/jwks.json")).unwrap();
        let sigs = card["signatures"].as_array().unwrap();
        assert_eq!(sigs.len(), 2, "appended to the signatures already there");
        let ours = &sigs[1].clone();
        assert!(verify(&signer, &card, ours));
        let header: Value = serde_json::from_slice(
            &URL_SAFE_NO_PAD
                .decode(ours["protected"].as_str().unwrap())
                .unwrap(),
        )
        .unwrap();
        assert_eq!(
            header,
            json!({"alg": "ES256", "typ": "JOSE", "kid": "gw-1", "jku": "http://gw/jwks.json"})
        );
        // Any change to the card breaks it.
        card["name"] = "Evil".into();
        assert!(!verify(&signer, &card, ours));

        let jwk = signer.jwk();
        assert_eq!(
            (
                jwk["kty"].as_str(),
                jwk["crv"].as_str(),
                jwk["kid"].as_str()
            ),
            (Some("EC"), Some("P-256"), Some("gw-1"))
        );
        assert_eq!(
            URL_SAFE_NO_PAD
                .decode(jwk["x"].as_str().unwrap())
                .unwrap()
                .len(),
            32
        );
        assert!(jwk.get("d").is_none(), "never the private part");
        assert_eq!(CardSigner::jwks([&signer])["keys"][0], *jwk);
    }

    /// An RSA-2048 PKCS#8 key made for these tests (`openssl genpkey -algorithm RSA`).
    const RSA_PEM: &str = "-----BEGIN PRIVATE KEY-----
MIIEvAIBADANBgkqhkiG9w0BAQEFAASCBKYwggSiAgEAAoIBAQDR/C8GZ9miphTQ
jeomqaXwu8FeBqf4ZpROFHwOZm3JBUUxWeKqRZB5fGqV8JIUuKGiYKJtbNJOvksT
pfQIU9jqNbmtDdJXGlraBHU2lcoiZnU6KsTkDBtYYDV4afftiphSl6Df6Voqu9gB
GlwveNg7UF+JShBta5euCOPGKTmlqqlpuOaQaV/NsYdVqte+uErlhA8wrdufdjpO
HxusYVjASOcDH3mD8WRBn+RhX5//Ci7SZvBJEEKww1oPnFsYMsxADY+siaeoIgH5
ibtUj3pRboz2vGvRXGUSYi31fwUSKIIWDEZYI3i1lDwul6UlWckykmwStNIAIB7H
164N2DSXAgMBAAECggEAEIVNnSySKrdJX50tZRb8124A3n5vPF5fCwOWkmV2/BVT
kSNCxOW4jQOqY8XrywCPCvZHtoyUwUg8d5JwxYT0mydYm+fApZoNDXvDTbpG5Hej
f8zkn700xjpk3+aVGysdJTEJIa9mKNg4PDdQNcCatpPyEvGbou2Pn0wowNWhKPTv
ZlOr+Eqqbk+2Oqkb+NWqwK05Ijo7U7s3gf+3SLCPlieCk1ogHAR7hloocqoN6IAw
WUtcst++utb6YSOVvzROLrLbxuhfD4xC8OEEyM1TByebexrDrkUey9Db18B1uCmX
BpczXSFJ7IOxfQ76717IvJscsKuXw+5/u823Kczs7QKBgQDsMDZLgE/AfIGzkma8
ByBeaoH+8V5fXQPRGj8Vy2QJU9qy6RXP9r6VpLLOZFw0MtwLzIBkB030GJusxt42
qMhjiFMbRLNo/meuDMQswi2IgZ9hUsiahaZuyiOXgzdOnS8vkcD1Bj2Upjhi0Ps2
5Qbq020oWpsnrk0GN7mKLdu3WwKBgQDjmUvxlB58NTxHZN2u+LF9Ihh9UirXbP6C
Za/h2LBwfu/EuokfSamfvnah80HVvPdW+TzhS1xUmyHEGbfmhDdTV+2R4lKVr4dy
NlZgMzMTaKf5UZJzDSmd5KHNzMR5e0W06aZ3vYWVyhV81Ot7Hiuwpm7SYXCe9xxJ
j2AiSyy4dQKBgF5wpLUp2DnSTxZbesLCYrn+An7LSn39NlJ9GS6Axj5IjlEtjDA8
rFYvpeOLE6c3ku8Q1WGp3gy1bkH2vtHCSWYrE3f6z3YzC4f3yNVQy14i3nTO4jGP
MU5pezPRHuNLTJvLvwj6dtMiZ7dzco+vokVxRtt050dFlbzfuUu8LHezAoGAZz2C
VXL64RzE2x3F8TieSkTNFwvOoymtyTiXL7s7TcxGttZmnOqtJukepxfRJUMybyFf
nFKy7y3vgySnZslSz1tzSFmBXKTiq8w6IikXYhZ3G4EFDWtLFXRAcToRZYmldQsH
mAlAL1IbrSRoLNDiwJ6+ZnAMxg8RpcyDrwqqnoECgYAJKDyUKJyT2TvaRdU0lpRs
QOkQDOyuRzVHayfYfCnQ9BqpPR/y1ZY1NhWufCXsrOKO32iVneN0QxfXoY4FSPsM
YZ+b85ugkZmMa9XQuaRmjlVVGdMJoqFVZZrgqB319U+GtFz4F1/Y+KcwSjc5W8Go
QsG1LkbKAMgefAG28RYUWA==
-----END PRIVATE KEY-----";

    #[test]
    fn rs256_signs_and_publishes_modulus_and_exponent() {
        let signer = CardSigner::from_pem(RSA_PEM, Alg::Rs256, "rsa-1").unwrap();
        let mut card = json!({"name": "x", "skills": []});
        signer.sign(&mut card, None).unwrap();
        assert!(verify(&signer, &card, &card["signatures"][0]));
        let jwk = signer.jwk();
        assert_eq!(
            (jwk["kty"].as_str(), jwk["alg"].as_str()),
            (Some("RSA"), Some("RS256"))
        );
        assert_eq!(jwk["e"], "AQAB");
        let n = URL_SAFE_NO_PAD.decode(jwk["n"].as_str().unwrap()).unwrap();
        assert_eq!(n.len(), 256, "2048-bit modulus without a leading zero");
    }

    #[test]
    fn eddsa_signs_and_wrong_keys_are_refused() {
        let rng = SystemRandom::new();
        let doc = signature::Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
        let pem_text = pem::encode(&pem::Pem::new("PRIVATE KEY", doc.as_ref().to_vec()));
        let signer = CardSigner::from_pem(&pem_text, Alg::EdDsa, "ed").unwrap();
        let mut card = json!({"name": "x"});
        signer.sign(&mut card, None).unwrap();
        assert!(verify(&signer, &card, &card["signatures"][0]));
        assert_eq!(signer.jwk()["kty"], "OKP");

        let e = CardSigner::from_pem(&pem_text, Alg::Es256, "k").unwrap_err();
        assert!(e.contains("P-256"), "{e}");
        let e = CardSigner::from_pem("not pem", Alg::Es256, "k").unwrap_err();
        assert!(e.contains("PEM"), "{e}");
        let sec1 = "-----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----";
        let e = CardSigner::from_pem(sec1, Alg::Es256, "k").unwrap_err();
        assert!(e.contains("openssl pkcs8"), "{e}");
    }
}
