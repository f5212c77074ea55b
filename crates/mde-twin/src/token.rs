//! JWT-shaped access tokens, signed with HMAC-SHA256 under a key made at start, so the twin can
//! check on every call who the caller is, for which API, with which roles, until when.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Audiences of Microsoft Graph (commercial and gov clouds).
pub const GRAPH_AUDIENCES: &[&str] = &[
    "https://graph.microsoft.com",
    "https://graph.microsoft.us",
    "https://dod-graph.microsoft.us",
    "00000003-0000-0000-c000-000000000000",
];

/// Audiences of the WindowsDefenderATP resource (mde-api.md §1.2).
pub const MDE_AUDIENCES: &[&str] = &[
    "https://api.securitycenter.microsoft.com",
    "https://securitycenter.onmicrosoft.com/windowsatpservice",
    "https://api.securitycenter.windows.com",
    "https://api.security.microsoft.com",
    "https://api-gcc.securitycenter.microsoft.us",
    "https://api-gov.securitycenter.microsoft.us",
    "fc780465-2017-40d4-a0c5-307022471b92",
];

/// Which API a token's audience names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resource {
    Graph,
    Mde,
}

/// Maps a requested resource (v1 `resource`, or a v2 scope without `/.default`) to the API.
pub fn resource_of(aud: &str) -> Option<Resource> {
    let aud = aud.trim_end_matches('/');
    let matches = |list: &[&str]| list.iter().any(|a| a.eq_ignore_ascii_case(aud));
    if matches(GRAPH_AUDIENCES) {
        Some(Resource::Graph)
    } else if matches(MDE_AUDIENCES) {
        Some(Resource::Mde)
    } else {
        None
    }
}

/// Which API a role belongs to: Graph's hunting role or the MDE ones.
pub fn role_resource(role: &str) -> Resource {
    if role.starts_with("ThreatHunting.") {
        Resource::Graph
    } else {
        Resource::Mde
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Claims {
    pub aud: String,
    pub iss: String,
    pub iat: i64,
    pub nbf: i64,
    pub exp: i64,
    pub appid: String,
    pub tid: String,
    pub roles: Vec<String>,
    pub oid: String,
    pub ver: String,
}

/// Signs and checks tokens.
pub struct Signer {
    key: [u8; 32],
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Signer([redacted])")
    }
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the token is not a well-formed JWT")]
    Malformed,
    #[error("the token's signature is invalid")]
    BadSignature,
}

impl Signer {
    /// A fresh random key: tokens of one twin run are not accepted by another.
    pub fn random() -> Self {
        let a = uuid::Uuid::new_v4();
        let b = uuid::Uuid::new_v4();
        let mut key = [0u8; 32];
        key[..16].copy_from_slice(a.as_bytes());
        key[16..].copy_from_slice(b.as_bytes());
        Signer { key }
    }

    pub fn issue(&self, claims: &Claims) -> String {
        let header = URL_SAFE_NO_PAD.encode(br#"{"typ":"JWT","alg":"HS256"}"#);
        let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).unwrap_or_default());
        let signing_input = format!("{header}.{payload}");
        let sig = URL_SAFE_NO_PAD.encode(hmac_sha256(&self.key, signing_input.as_bytes()));
        format!("{signing_input}.{sig}")
    }

    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        let mut parts = token.split('.');
        let (Some(h), Some(p), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Malformed);
        };
        let sig = URL_SAFE_NO_PAD
            .decode(s)
            .map_err(|_| TokenError::Malformed)?;
        let expected = hmac_sha256(&self.key, format!("{h}.{p}").as_bytes());
        if !constant_time_eq(&sig, &expected) {
            return Err(TokenError::BadSignature);
        }
        let payload = URL_SAFE_NO_PAD
            .decode(p)
            .map_err(|_| TokenError::Malformed)?;
        serde_json::from_slice(&payload).map_err(|_| TokenError::Malformed)
    }
}

fn hmac_sha256(key: &[u8; 32], msg: &[u8]) -> [u8; 32] {
    // RFC 2104 with a 64-byte block; the key is shorter than a block, so it is zero-padded.
    let mut ipad = [0x36u8; 64];
    let mut opad = [0x5cu8; 64];
    for (i, k) in key.iter().enumerate() {
        ipad[i] ^= k;
        opad[i] ^= k;
    }
    let inner = Sha256::new()
        .chain_update(ipad)
        .chain_update(msg)
        .finalize();
    Sha256::new()
        .chain_update(opad)
        .chain_update(inner)
        .finalize()
        .into()
}

pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims() -> Claims {
        Claims {
            aud: "https://graph.microsoft.com".into(),
            iss: "https://sts.windows.net/t/".into(),
            iat: 1,
            nbf: 1,
            exp: 2,
            appid: "app".into(),
            tid: "t".into(),
            roles: vec!["ThreatHunting.Read.All".into()],
            oid: "o".into(),
            ver: "1.0".into(),
        }
    }

    #[test]
    fn tokens_round_trip_and_tampering_is_caught() {
        let s = Signer::random();
        let t = s.issue(&claims());
        assert_eq!(s.verify(&t), Ok(claims()));
        let other = Signer::random();
        assert_eq!(other.verify(&t), Err(TokenError::BadSignature));
        assert_eq!(s.verify("abc"), Err(TokenError::Malformed));
        let mut forged = claims();
        forged.roles.push("Machine.Isolate".into());
        let parts: Vec<&str> = t.split('.').collect();
        let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&forged).unwrap());
        let tampered = format!("{}.{}.{}", parts[0], payload, parts[2]);
        assert_eq!(s.verify(&tampered), Err(TokenError::BadSignature));
    }

    #[test]
    fn hmac_matches_rfc4231_case_2_shape() {
        // RFC 4231 test case 2 uses key "Jefe"; zero-padding to 32 bytes gives the same HMAC.
        let mut key = [0u8; 32];
        key[..4].copy_from_slice(b"Jefe");
        let mac = hmac_sha256(&key, b"what do ya want for nothing?");
        let hex: String = mac.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn audiences_map_to_their_api() {
        assert_eq!(
            resource_of("https://graph.microsoft.com/"),
            Some(Resource::Graph)
        );
        assert_eq!(
            resource_of("https://api.securitycenter.microsoft.com"),
            Some(Resource::Mde)
        );
        assert_eq!(resource_of("https://management.azure.com"), None);
    }
}
