//! Sealed session ids.
//!
//! A downstream session is the list of upstream sessions it maps to (one per target), the
//! protocol version, and the client's `initialize` parameters (so a stdio target can be
//! re-initialized on a replica that never saw the session). All of it travels inside the
//! `Mcp-Session-Id` the client holds, sealed with AES-256-GCM: any gateway with the same key
//! resumes the session, and a client can neither read nor forge it.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use serde::{Deserialize, Serialize};
use std::time::{SystemTime, UNIX_EPOCH};

/// Sealed ids older than this are refused even if their key still opens them.
pub const MAX_SESSION_AGE_SECS: u64 = 24 * 3600;

/// One upstream session of a downstream session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TargetSession {
    /// Target name from the config.
    #[serde(rename = "t")]
    pub target: String,
    /// The upstream's `Mcp-Session-Id`, when it issued one.
    #[serde(rename = "s", default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    /// The protocol version this upstream agreed to.
    #[serde(rename = "v")]
    pub version: String,
}

/// What a sealed session id holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionState {
    /// Random id naming this session in logs, metrics and per-replica state.
    pub id: String,
    /// Issued at, seconds since the epoch.
    pub iat: u64,
    /// Protocol version agreed with the client.
    pub version: String,
    pub targets: Vec<TargetSession>,
    /// The client's `initialize` params, replayed to targets that must be re-initialized.
    #[serde(default)]
    pub init: serde_json::Value,
}

pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A random 128-bit id, hex.
pub fn random_id() -> String {
    format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..))
}

/// A random 256-bit key filled by `fill` (the OS randomness source), or why there is none.
fn random_key(
    fill: impl FnOnce(&mut [u8]) -> Result<(), ring::error::Unspecified>,
) -> Result<[u8; 32], String> {
    let mut k = [0u8; 32];
    fill(&mut k).map_err(|_| {
        "cannot make a random MCP session key: the OS randomness source failed \
         (set sessionKey on the mcp backend, or fix the system's entropy source)"
            .to_string()
    })?;
    Ok(k)
}

pub struct Sealer {
    key: LessSafeKey,
    /// Derives the nonce of a deterministic seal from what is sealed (see
    /// [`Sealer::seal_fixed`]).
    siv: ring::hmac::Key,
}

impl Sealer {
    /// A key derived from configured secret text (SHA-256), or a random one from the OS
    /// randomness source. Fails, rather than use a weaker generator, when that source fails.
    pub fn new(secret: Option<&str>) -> Result<Sealer, String> {
        let bytes: [u8; 32] = match secret {
            Some(s) => {
                let d = ring::digest::digest(&ring::digest::SHA256, s.as_bytes());
                let mut k = [0u8; 32];
                k.copy_from_slice(d.as_ref());
                k
            }
            None => {
                random_key(|k| ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), k))?
            }
        };
        // 32 bytes is always a valid AES-256 key.
        let unbound = UnboundKey::new(&AES_256_GCM, &bytes).expect("AES-256 key length");
        let mut siv = ring::digest::Context::new(&ring::digest::SHA256);
        siv.update(b"switchyard mcp synthetic nonce\0");
        siv.update(&bytes);
        Ok(Sealer {
            key: LessSafeKey::new(unbound),
            siv: ring::hmac::Key::new(ring::hmac::HMAC_SHA256, siv.finish().as_ref()),
        })
    }

    /// The sealed id, or why there is none. A nonce comes only from the OS randomness source:
    /// a guessable or repeated nonce would break AES-GCM, so without one there is no id.
    pub fn seal(&self, state: &SessionState) -> Result<String, &'static str> {
        self.seal_bytes(b"", serde_json::to_vec(state).unwrap_or_default())
    }

    /// The state inside a sealed id, or why it is not a session of ours.
    pub fn open(&self, sealed: &str) -> Result<SessionState, &'static str> {
        let plain = self
            .open_bytes(b"", sealed)
            .map_err(|e| e.unwrap_or("malformed session id"))?;
        let state: SessionState =
            serde_json::from_slice(&plain).map_err(|_| "malformed session id")?;
        if now_secs().saturating_sub(state.iat) > MAX_SESSION_AGE_SECS {
            return Err("session expired");
        }
        Ok(state)
    }

    /// Seals `data` under this key, bound to `aad` (which says what the data is, so a token
    /// sealed for one purpose never opens as another): nonce, ciphertext and tag, base64url.
    pub fn seal_bytes(&self, aad: &[u8], mut data: Vec<u8>) -> Result<String, &'static str> {
        let mut nonce = [0u8; NONCE_LEN];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut nonce)
            .map_err(|_| "the OS randomness source failed; nothing can be sealed")?;
        // Sealing in place only fails on absurd lengths.
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad),
                &mut data,
            )
            .map_err(|_| "the state is too large to seal")?;
        let mut out = Vec::with_capacity(NONCE_LEN + data.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&data);
        Ok(URL_SAFE_NO_PAD.encode(out))
    }

    /// Seals `data` like [`Sealer::seal_bytes`], but the same `aad` and `data` always give
    /// the same token: the nonce is an HMAC of both under a key of its own (a synthetic IV), so
    /// two different plaintexts never share a nonce, and equal ones reveal only that they are
    /// equal. For handles a client compares (task ids seen again in lists and notifications);
    /// [`Sealer::open_bytes`] opens them.
    pub fn seal_fixed(&self, aad: &[u8], mut data: Vec<u8>) -> Result<String, &'static str> {
        let mut mac = ring::hmac::Context::with_key(&self.siv);
        mac.update(&(aad.len() as u64).to_be_bytes());
        mac.update(aad);
        mac.update(&data);
        let tag = mac.sign();
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&tag.as_ref()[..NONCE_LEN]);
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad),
                &mut data,
            )
            .map_err(|_| "the state is too large to seal")?;
        let mut out = Vec::with_capacity(NONCE_LEN + data.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&data);
        Ok(URL_SAFE_NO_PAD.encode(out))
    }

    /// What [`Sealer::seal_bytes`] sealed with this key and `aad`. `Err(None)`: not even the
    /// shape of a sealed token; `Err(Some(_))`: it does not open (another key, another purpose,
    /// or tampered with).
    pub fn open_bytes(&self, aad: &[u8], sealed: &str) -> Result<Vec<u8>, Option<&'static str>> {
        let raw = URL_SAFE_NO_PAD.decode(sealed.trim()).map_err(|_| None)?;
        if raw.len() < NONCE_LEN + 16 {
            return Err(None);
        }
        let (nonce, rest) = raw.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| None)?;
        let mut buf = rest.to_vec();
        let len = self
            .key
            .open_in_place(nonce, Aad::from(aad), &mut buf)
            .map_err(|_| Some("unknown session"))?
            .len();
        buf.truncate(len);
        Ok(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> SessionState {
        SessionState {
            id: random_id(),
            iat: now_secs(),
            version: "2025-06-18".into(),
            targets: vec![TargetSession {
                target: "a".into(),
                session_id: Some("up-1".into()),
                version: "2025-06-18".into(),
            }],
            init: serde_json::json!({"clientInfo": {"name": "t", "version": "1"}}),
        }
    }

    #[test]
    fn a_sealed_id_opens_with_the_same_key_only() {
        let s = state();
        let a = Sealer::new(Some("key-one")).unwrap();
        let sealed = a.seal(&s).unwrap();
        assert!(
            !sealed.contains("up-1"),
            "upstream session id must not be readable"
        );
        assert_eq!(
            Sealer::new(Some("key-one")).unwrap().open(&sealed).unwrap(),
            s
        );
        assert_eq!(
            Sealer::new(Some("key-two")).unwrap().open(&sealed),
            Err("unknown session")
        );
        assert!(Sealer::new(None).unwrap().open(&sealed).is_err());
    }

    #[test]
    fn tampering_and_age_are_refused() {
        let sealer = Sealer::new(Some("k")).unwrap();
        let sealed = sealer.seal(&state()).unwrap();
        let mut bytes = sealed.into_bytes();
        let i = bytes.len() / 2;
        bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
        assert!(sealer.open(std::str::from_utf8(&bytes).unwrap()).is_err());
        assert_eq!(sealer.open("not base64 !"), Err("malformed session id"));
        let mut old = state();
        old.iat = now_secs() - MAX_SESSION_AGE_SECS - 10;
        assert_eq!(
            sealer.open(&sealer.seal(&old).unwrap()),
            Err("session expired")
        );
    }

    #[test]
    fn a_failing_randomness_source_is_an_error_not_a_weaker_key() {
        let err = random_key(|_| Err(ring::error::Unspecified)).unwrap_err();
        assert!(err.contains("OS randomness source failed"), "{err}");
        let key = random_key(|k| {
            k.fill(7);
            Ok(())
        })
        .unwrap();
        assert_eq!(key, [7u8; 32], "the key is exactly what the source gave");
    }

    #[test]
    fn random_keys_differ_per_sealer() {
        let sealed = Sealer::new(None).unwrap().seal(&state()).unwrap();
        assert_eq!(
            Sealer::new(None).unwrap().open(&sealed),
            Err("unknown session")
        );
    }
}
