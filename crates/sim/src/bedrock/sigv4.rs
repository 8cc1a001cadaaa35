//! AWS Signature Version 4 verification for the Bedrock simulator, and the signing helper tests
//! (and documentation) use.
//!
//! The simulator recomputes the signature the way AWS does: from the request's method, path and
//! query, the headers named in the `Authorization` header's `SignedHeaders`, `x-amz-date`,
//! `x-amz-security-token` (when signed) and the SHA-256 of the body, with the `aws-sigv4` crate
//! (the signer the AWS SDK for Rust uses), for service `bedrock`. References: "Signature Version 4
//! signing process" and "Elements of an AWS API request signature"
//! (<https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_sigv-signing-elements.html>,
//! <https://docs.aws.amazon.com/IAM/latest/UserGuide/create-signed-request.html>). AWS rejects a
//! request whose `x-amz-date` is more than 5 minutes from its clock.
//!
//! Error types and messages are the ones AWS services answer with:
//! `MissingAuthenticationTokenException` "Missing Authentication Token",
//! `IncompleteSignatureException`, `UnrecognizedClientException` "The security token included in
//! the request is invalid.", `InvalidSignatureException` "The request signature we calculated does
//! not match the signature you provided. ..." and "Signature expired: ...". All are 403.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use http::{header, HeaderMap, Method, Uri};

/// The signing name of Bedrock Runtime.
pub const SERVICE: &str = "bedrock";

/// How far `x-amz-date` may be from the simulator's clock.
const MAX_CLOCK_SKEW: Duration = Duration::from_secs(5 * 60);

/// Why a request's signature was refused: the AWS error type and message.
#[derive(Debug, PartialEq)]
pub struct Rejection {
    pub error_type: &'static str,
    pub message: String,
}

fn reject(error_type: &'static str, message: impl Into<String>) -> Rejection {
    Rejection {
        error_type,
        message: message.into(),
    }
}

const MISMATCH: &str = "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method. Consult the service documentation for details.";

/// The keys a simulator accepts.
pub struct Keys<'a> {
    pub access_key_id: &'a str,
    pub secret_access_key: &'a str,
    pub region: &'a str,
}

/// The parts of `Authorization: AWS4-HMAC-SHA256 Credential=..., SignedHeaders=..., Signature=...`.
struct AuthorizationHeader<'a> {
    access_key_id: &'a str,
    date: &'a str,
    region: &'a str,
    service: &'a str,
    signed_headers: Vec<&'a str>,
    signature: &'a str,
}

fn parse_authorization(value: &str) -> Option<AuthorizationHeader<'_>> {
    let rest = value.strip_prefix("AWS4-HMAC-SHA256 ")?;
    let (mut credential, mut signed, mut signature) = (None, None, None);
    for part in rest.split(',') {
        let (key, val) = part.trim().split_once('=')?;
        match key {
            "Credential" => credential = Some(val),
            "SignedHeaders" => signed = Some(val),
            "Signature" => signature = Some(val),
            _ => {}
        }
    }
    let scope: Vec<&str> = credential?.split('/').collect();
    let [access_key_id, date, region, service, "aws4_request"] = scope.as_slice() else {
        return None;
    };
    Some(AuthorizationHeader {
        access_key_id,
        date,
        region,
        service,
        signed_headers: signed?.split(';').filter(|h| !h.is_empty()).collect(),
        signature: signature?,
    })
}

/// `20150830T123600Z` -> time, or `None` when malformed.
pub(crate) fn parse_amz_date(s: &str) -> Option<SystemTime> {
    let b = s.as_bytes();
    if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' {
        return None;
    }
    let num = |from: usize, to: usize| -> Option<i64> { s.get(from..to)?.parse().ok() };
    let (y, mo, d) = (num(0, 4)?, num(4, 6)?, num(6, 8)?);
    let (h, mi, sec) = (num(9, 11)?, num(11, 13)?, num(13, 15)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    // Days from civil (Howard Hinnant's algorithm), proleptic Gregorian.
    let y = if mo <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + h * 3600 + mi * 60 + sec;
    u64::try_from(secs)
        .ok()
        .map(|s| UNIX_EPOCH + Duration::from_secs(s))
}

/// Checks the SigV4 signature of a request against `keys`, at time `now`.
pub fn verify(
    keys: &Keys<'_>,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
    now: SystemTime,
) -> Result<(), Rejection> {
    let Some(authorization) = headers.get(header::AUTHORIZATION) else {
        return Err(reject(
            "MissingAuthenticationTokenException",
            "Missing Authentication Token",
        ));
    };
    let auth = authorization
        .to_str()
        .ok()
        .and_then(parse_authorization)
        .ok_or_else(|| {
            reject(
                "IncompleteSignatureException",
                "Authorization header requires 'Credential', 'SignedHeaders' and 'Signature' parameters (AWS4-HMAC-SHA256).",
            )
        })?;
    if auth.access_key_id != keys.access_key_id {
        return Err(reject(
            "UnrecognizedClientException",
            "The security token included in the request is invalid.",
        ));
    }
    let amz_date = headers
        .get("x-amz-date")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| {
            reject(
                "IncompleteSignatureException",
                "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header.",
            )
        })?;
    let signed_at = parse_amz_date(amz_date).ok_or_else(|| {
        reject(
            "IncompleteSignatureException",
            format!("Date must be in ISO-8601 'basic format'. Got '{amz_date}'."),
        )
    })?;
    let skew = now
        .duration_since(signed_at)
        .or_else(|_| signed_at.duration_since(now))
        .unwrap_or_default();
    if skew > MAX_CLOCK_SKEW {
        return Err(reject(
            "InvalidSignatureException",
            format!("Signature expired: {amz_date} is now earlier or later than the server time by more than 5 min."),
        ));
    }
    if auth.service != SERVICE || auth.region != keys.region || !amz_date.starts_with(auth.date) {
        return Err(reject(
            "InvalidSignatureException",
            format!(
                "Credential should be scoped to a valid region and service, and to the date of X-Amz-Date. Expected {}/{}/{SERVICE}.",
                &amz_date[..8],
                keys.region
            ),
        ));
    }
    let expected = expected_signature(keys, &auth, method, uri, headers, body, signed_at)?;
    // Compare without an early exit so the position of the first wrong
    // character is not observable by timing.
    let same = expected.len() == auth.signature.len()
        && expected
            .bytes()
            .zip(auth.signature.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0;
    if same {
        Ok(())
    } else {
        Err(reject("InvalidSignatureException", MISMATCH))
    }
}

/// The signature a correct client computes for this request.
fn expected_signature(
    keys: &Keys<'_>,
    auth: &AuthorizationHeader<'_>,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
    signed_at: SystemTime,
) -> Result<String, Rejection> {
    let mismatch = || reject("InvalidSignatureException", MISMATCH);
    // Host is the Host header (HTTP/1) or the :authority (HTTP/2, in the URI).
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or_else(|| uri.authority().map(|a| a.as_str().to_owned()))
        .ok_or_else(mismatch)?;
    let mut session_token = None;
    let mut signable_headers: Vec<(&str, &str)> = vec![("host", host.as_str())];
    for &name in &auth.signed_headers {
        match name {
            // Added by the signer itself (from the time and the credentials).
            "host" | "x-amz-date" => {}
            "x-amz-security-token" => {
                session_token = headers.get(name).and_then(|v| v.to_str().ok());
                if session_token.is_none() {
                    return Err(mismatch());
                }
            }
            _ => {
                let mut found = false;
                for value in headers.get_all(name) {
                    signable_headers.push((name, value.to_str().map_err(|_| mismatch())?));
                    found = true;
                }
                if !found {
                    // A header listed as signed but not sent: nothing to verify against.
                    return Err(mismatch());
                }
            }
        }
    }
    let credentials = Credentials::new(
        keys.access_key_id,
        keys.secret_access_key,
        session_token.map(str::to_owned),
        None,
        "switchyard-sim",
    );
    let identity: Identity = credentials.into();
    let mut settings = SigningSettings::default();
    // Verify exactly what the client listed; the default exclusions
    // (user-agent, ...) are a signer-side choice.
    settings.excluded_headers = None;
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(keys.region)
        .name(SERVICE)
        .time(signed_at)
        .settings(settings)
        .build()
        .map_err(|_| mismatch())?
        .into();
    let path_and_query = uri.path_and_query().map_or("/", |p| p.as_str());
    let signable = SignableRequest::new(
        method.as_str(),
        path_and_query,
        signable_headers.into_iter(),
        SignableBody::Bytes(body),
    )
    .map_err(|_| mismatch())?;
    let (_, signature) = sign(signable, &params)
        .map_err(|_| mismatch())?
        .into_parts();
    Ok(signature)
}

/// Signs `req` for Bedrock (service `bedrock`) at `time`, adding `authorization` and
/// `x-amz-date` (and `x-amz-security-token` when `session_token` is set), as a client such as
/// the AWS SDK or the gateway does. The URI must be absolute (the Host is signed) unless `req`
/// has a Host header. Every header already on `req` is signed.
pub fn sign_request<B>(
    req: &mut http::Request<B>,
    body: &[u8],
    keys: &Keys<'_>,
    session_token: Option<&str>,
    time: SystemTime,
) -> Result<(), String> {
    if req.uri().authority().is_none() && !req.headers().contains_key(header::HOST) {
        return Err("cannot sign a request without a host".into());
    }
    let identity: Identity = Credentials::new(
        keys.access_key_id,
        keys.secret_access_key,
        session_token.map(str::to_owned),
        None,
        "switchyard-sim",
    )
    .into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(keys.region)
        .name(SERVICE)
        .time(time)
        .settings(SigningSettings::default())
        .build()
        .map_err(|e| format!("SigV4 parameters: {e}"))?
        .into();
    let uri = req.uri().to_string();
    let headers: Vec<(&str, &str)> = req
        .headers()
        .iter()
        .filter_map(|(k, v)| v.to_str().ok().map(|v| (k.as_str(), v)))
        .collect();
    let signable = SignableRequest::new(
        req.method().as_str(),
        &uri,
        headers.into_iter(),
        SignableBody::Bytes(body),
    )
    .map_err(|e| format!("cannot sign this request: {e}"))?;
    let (instructions, _) = sign(signable, &params)
        .map_err(|e| format!("SigV4 signing failed: {e}"))?
        .into_parts();
    instructions.apply_to_request_http1x(req);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amz_dates_parse_and_reject_garbage() {
        let t = parse_amz_date("20150830T123600Z").expect("valid");
        assert_eq!(
            t.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).ok(),
            Some(1_440_938_160)
        );
        for bad in [
            "",
            "20150830123600Z",
            "20151330T123600Z",
            "2015083xT123600Z",
            "20150830T123600",
        ] {
            assert_eq!(parse_amz_date(bad), None, "{bad}");
        }
    }

    #[test]
    fn authorization_header_parts() {
        let a = parse_authorization("AWS4-HMAC-SHA256 Credential=AKID/20150830/us-east-1/bedrock/aws4_request, SignedHeaders=content-type;host;x-amz-date, Signature=abc")
            .expect("valid");
        assert_eq!(a.access_key_id, "AKID");
        assert_eq!(a.region, "us-east-1");
        assert_eq!(a.signed_headers, ["content-type", "host", "x-amz-date"]);
        assert!(parse_authorization("Bearer x").is_none());
        assert!(parse_authorization(
            "AWS4-HMAC-SHA256 Credential=AKID/x, SignedHeaders=a, Signature=b"
        )
        .is_none());
    }
}
