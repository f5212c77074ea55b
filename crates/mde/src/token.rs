//! Entra ID client-credentials tokens: one per (tenant, audience), shared, refreshed before
//! expiry, fetched by one caller while the others wait (single flight).

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex as StdMutex};

use culprit_model::{Duration, Timestamp};
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value as Json;
use tokio::sync::Mutex;

use crate::error::MdeError;

/// The time source for token lifetimes and action deadlines; tests inject one.
pub trait Clock: Send + Sync + fmt::Debug {
    fn now(&self) -> Timestamp;
}

/// The system's wall clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }
}

/// A bearer token and when to stop using it.
#[derive(Clone)]
pub struct AccessToken {
    pub secret: SecretString,
    /// Refresh from this moment on.
    pub refresh_at: Timestamp,
    pub expires_at: Timestamp,
}

impl fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessToken")
            .field("secret", &"[REDACTED]")
            .field("refresh_at", &self.refresh_at)
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// Refresh two minutes early (as PSMDE does), or at half-life for short-lived tokens.
fn refresh_margin(lifetime: Duration) -> Duration {
    let two_minutes = Duration::from_minutes(2);
    if lifetime.0 / 2 < two_minutes.0 {
        Duration(lifetime.0 / 2)
    } else {
        two_minutes
    }
}

/// Parses a token endpoint 200 body. `expires_in` may be a number (v2) or a string (v1).
pub fn parse_token(body: &[u8], now: Timestamp) -> Result<AccessToken, MdeError> {
    let decode = |message: &str| MdeError::Decode {
        what: "token response",
        message: message.to_owned(),
    };
    let root: Json = serde_json::from_slice(body).map_err(|e| MdeError::Decode {
        what: "token response",
        message: e.to_string(),
    })?;
    let secret = match root.get("access_token") {
        Some(Json::String(s)) if !s.is_empty() => SecretString::from(s.clone()),
        _ => return Err(decode("no `access_token`")),
    };
    let expires_in = match root.get("expires_in") {
        Some(Json::Number(n)) => n.as_i64(),
        Some(Json::String(s)) => s.trim().parse().ok(),
        _ => None,
    }
    // Missing: the documented one hour. Nonsense: clamp to a sane range.
    .unwrap_or(3600)
    .clamp(1, 86_400);
    let lifetime = Duration::from_seconds(expires_in);
    Ok(AccessToken {
        secret,
        refresh_at: now + lifetime - refresh_margin(lifetime),
        expires_at: now + lifetime,
    })
}

/// The `roles` claim of a JWT's payload, without verifying the signature.
pub fn jwt_roles(token: &str) -> Option<Vec<String>> {
    use base64::Engine;
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let claims: Json = serde_json::from_slice(&bytes).ok()?;
    Some(match claims.get("roles") {
        Some(Json::Array(roles)) => roles
            .iter()
            .filter_map(|r| r.as_str().map(str::to_owned))
            .collect(),
        _ => Vec::new(),
    })
}

type Slot = Arc<Mutex<Option<AccessToken>>>;

/// Tokens by (tenant, audience).
#[derive(Default)]
pub(crate) struct TokenCache {
    slots: StdMutex<HashMap<(String, String), Slot>>,
}

impl fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenCache { .. }")
    }
}

impl TokenCache {
    fn slot(&self, tenant: &str, audience: &str) -> Slot {
        // A poisoned map lock only means another thread panicked mid-insert; the map is
        // still usable.
        let mut map = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        map.entry((tenant.to_owned(), audience.to_owned()))
            .or_default()
            .clone()
    }

    /// The cached token, or one from `fetch`. Callers queue on the slot's lock while one of
    /// them fetches, so a burst of callers makes one request.
    pub(crate) async fn get<F, Fut>(
        &self,
        tenant: &str,
        audience: &str,
        now: impl Fn() -> Timestamp,
        fetch: F,
    ) -> Result<SecretString, MdeError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<AccessToken, MdeError>>,
    {
        let slot = self.slot(tenant, audience);
        let mut guard = slot.lock().await;
        if let Some(t) = guard.as_ref()
            && now() < t.refresh_at
        {
            return Ok(t.secret.clone());
        }
        match fetch().await {
            Ok(t) => {
                let secret = t.secret.clone();
                *guard = Some(t);
                Ok(secret)
            }
            // A failed early refresh keeps the old token while it is still valid.
            Err(e) => match guard.as_ref() {
                Some(old) if now() < old.expires_at => {
                    tracing::warn!(error = %e, kind = e.kind(), "token refresh failed; using the current token until it expires");
                    Ok(old.secret.clone())
                }
                _ => Err(e),
            },
        }
    }

    /// Drops `used` after a 401, unless another caller already replaced it.
    pub(crate) async fn invalidate(&self, tenant: &str, audience: &str, used: &SecretString) {
        let slot = self.slot(tenant, audience);
        let mut guard = slot.lock().await;
        if guard
            .as_ref()
            .is_some_and(|t| t.secret.expose_secret() == used.expose_secret())
        {
            *guard = None;
        }
    }
}
