//! Bearer API keys: hashed in the configuration, compared in constant time, each with scopes
//! and a tenant list, and a per-key rate limit.
//!
//! Keys are `culprit_` + 43 base64url characters (256 random bits). The configuration keeps
//! only their SHA-256: with that much entropy a fast hash cannot be brute-forced, and a slow
//! password hash (argon2) would cost milliseconds on every call of a 10,000 calls/s service.
//!
//! Tenant rule: a request that *names* a tenant the key does not cover (in a filter, a target,
//! or inside a detection key) is refused with PERMISSION_DENIED before anything is looked up,
//! so the answer never depends on whether the other tenant's data exists. Listings and watches
//! without a tenant filter are silently narrowed to the key's tenants.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::num::NonZeroU32;
use std::str::FromStr;
use std::sync::Arc;

use base64::Engine;
use culprit_settings::ApiKeySettings;
use governor::clock::{Clock as _, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tonic::{Code, Request, Status};

use crate::GatewayError;
use crate::status::{Refusal, invalid, reason};

/// What a key may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scope {
    /// Get/List/Watch correlations, GetAction.
    Read,
    /// SubmitDetection.
    Submit,
    /// IsolateDevice, ReleaseDevice.
    Respond,
}

impl Scope {
    pub const ALL: [Scope; 3] = [Scope::Read, Scope::Submit, Scope::Respond];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Submit => "submit",
            Scope::Respond => "respond",
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Scope {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Scope::ALL
            .into_iter()
            .find(|x| x.as_str() == s)
            .ok_or_else(|| format!("{s:?} is not a scope (read, submit, respond)"))
    }
}

/// The tenants a key covers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Tenants {
    All,
    Only(BTreeSet<String>),
}

impl Tenants {
    pub fn covers(&self, tenant: &str) -> bool {
        match self {
            Tenants::All => true,
            Tenants::Only(set) => set.contains(tenant),
        }
    }
}

/// The authenticated caller of one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    /// The key's `id`: who, in the audit trail.
    pub key_id: String,
    pub scopes: BTreeSet<Scope>,
    pub tenants: Tenants,
}

impl Principal {
    pub fn require_scope(&self, scope: Scope) -> Result<(), Status> {
        if self.scopes.contains(&scope) {
            Ok(())
        } else {
            Err(Refusal::new(
                Code::PermissionDenied,
                reason::SCOPE_MISSING,
                format!("API key `{}` lacks the `{scope}` scope", self.key_id),
            )
            .meta("key_id", self.key_id.clone())
            .meta("scope", scope.as_str())
            .build())
        }
    }

    pub fn require_tenant(&self, tenant: &str) -> Result<(), Status> {
        if self.tenants.covers(tenant) {
            Ok(())
        } else {
            Err(Refusal::new(
                Code::PermissionDenied,
                reason::TENANT_NOT_ALLOWED,
                format!("API key `{}` may not access tenant `{tenant}`", self.key_id),
            )
            .meta("key_id", self.key_id.clone())
            .meta("tenant", tenant)
            .build())
        }
    }

    /// The tenants a listing may return: the requested ones (each must be covered), or all the
    /// key covers when none are requested (`None` = every tenant).
    pub fn narrow(&self, requested: &[String]) -> Result<Option<BTreeSet<String>>, Status> {
        if requested.is_empty() {
            return Ok(match &self.tenants {
                Tenants::All => None,
                Tenants::Only(set) => Some(set.clone()),
            });
        }
        for t in requested {
            self.require_tenant(t)?;
        }
        Ok(Some(requested.iter().cloned().collect()))
    }

    /// The one tenant a request means: the given one, or the key's only tenant.
    pub fn single_tenant(&self, given: &str, field: &str) -> Result<String, Status> {
        if !given.is_empty() {
            self.require_tenant(given)?;
            return Ok(given.to_owned());
        }
        match &self.tenants {
            Tenants::Only(set) if set.len() == 1 => {
                Ok(set.iter().next().cloned().unwrap_or_default())
            }
            _ => Err(invalid(
                field,
                "required, the API key covers several tenants",
            )),
        }
    }
}

struct KeyEntry {
    /// Shared, so a call's authentication allocates nothing.
    principal: Arc<Principal>,
    hash: [u8; 32],
}

/// The configured keys and their rate limiters.
pub struct KeyRing {
    keys: Vec<KeyEntry>,
    limiters: HashMap<String, DefaultDirectRateLimiter>,
}

impl fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Hashes are not secrets, but there is no reason to print them.
        let ids: Vec<&str> = self
            .keys
            .iter()
            .map(|k| k.principal.key_id.as_str())
            .collect();
        f.debug_struct("KeyRing").field("keys", &ids).finish()
    }
}

fn parse_hash(i: usize, hex: &str) -> Result<[u8; 32], GatewayError> {
    let bad = |reason: &str| GatewayError::config(format!("gateway.api_keys[{i}].hash"), reason);
    if hex.len() != 64 {
        return Err(bad("must be 64 hex digits (the SHA-256 of the key)"));
    }
    let mut out = [0u8; 32];
    for (j, byte) in out.iter_mut().enumerate() {
        let pair = hex.get(2 * j..2 * j + 2).ok_or_else(|| bad("not hex"))?;
        *byte = u8::from_str_radix(pair, 16).map_err(|_| bad("not hex"))?;
    }
    Ok(out)
}

fn entry(i: usize, k: &ApiKeySettings) -> Result<KeyEntry, GatewayError> {
    let key = |f: &str| format!("gateway.api_keys[{i}].{f}");
    if k.id.trim().is_empty() || k.id.chars().any(char::is_control) {
        return Err(GatewayError::config(key("id"), "must be a non-empty name"));
    }
    let scopes = k
        .scopes
        .iter()
        .map(|s| s.parse::<Scope>())
        .collect::<Result<BTreeSet<_>, _>>()
        .map_err(|e| GatewayError::config(key("scopes"), e))?;
    if scopes.is_empty() {
        return Err(GatewayError::config(key("scopes"), "at least one scope"));
    }
    if k.tenants.is_empty() || k.tenants.iter().any(|t| t.trim().is_empty()) {
        return Err(GatewayError::config(
            key("tenants"),
            "at least one non-empty tenant name (or \"*\")",
        ));
    }
    let tenants = if k.tenants.iter().any(|t| t == "*") {
        Tenants::All
    } else {
        Tenants::Only(k.tenants.iter().cloned().collect())
    };
    Ok(KeyEntry {
        principal: Arc::new(Principal {
            key_id: k.id.clone(),
            scopes,
            tenants,
        }),
        hash: parse_hash(i, &k.hash.to_ascii_lowercase())?,
    })
}

impl KeyRing {
    /// Validates every key, naming the offending entry. `rate_per_key` = 0: no limit.
    pub fn from_settings(keys: &[ApiKeySettings], rate_per_key: u32) -> Result<Self, GatewayError> {
        let entries = keys
            .iter()
            .enumerate()
            .map(|(i, k)| entry(i, k))
            .collect::<Result<Vec<_>, _>>()?;
        let mut limiters = HashMap::new();
        for (i, e) in entries.iter().enumerate() {
            if entries[..i]
                .iter()
                .any(|o| o.principal.key_id == e.principal.key_id)
            {
                return Err(GatewayError::config(
                    format!("gateway.api_keys[{i}].id"),
                    format!("`{}` is used twice", e.principal.key_id),
                ));
            }
            if let Some(rate) = NonZeroU32::new(rate_per_key) {
                limiters.insert(
                    e.principal.key_id.clone(),
                    RateLimiter::direct(Quota::per_second(rate)),
                );
            }
        }
        Ok(KeyRing {
            keys: entries,
            limiters,
        })
    }

    /// The caller of `req`: UNAUTHENTICATED without a known bearer key, RESOURCE_EXHAUSTED over
    /// the key's rate.
    pub fn authenticate<T>(&self, req: &Request<T>) -> Result<Arc<Principal>, Status> {
        let missing = |m: &str| {
            Refusal::new(Code::Unauthenticated, reason::API_KEY_MISSING, m.to_owned()).build()
        };
        let header = req
            .metadata()
            .get("authorization")
            .ok_or_else(|| missing("missing `authorization: Bearer <API key>`"))?;
        let value = header
            .to_str()
            .map_err(|_| missing("authorization header is not ASCII"))?;
        let token = value
            .split_once(' ')
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, t)| t.trim())
            .ok_or_else(|| missing("authorization scheme must be Bearer"))?;
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        // Every entry is compared, so timing does not tell which (or whether one) matched.
        let mut found: Option<&KeyEntry> = None;
        for e in &self.keys {
            if bool::from(e.hash.ct_eq(&digest)) {
                found = Some(e);
            }
        }
        let entry = found.ok_or_else(|| {
            Refusal::new(
                Code::Unauthenticated,
                reason::API_KEY_UNKNOWN,
                "unknown API key",
            )
            .build()
        })?;
        if let Some(limiter) = self.limiters.get(&entry.principal.key_id)
            && let Err(not_until) = limiter.check()
        {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            return Err(Refusal::new(
                Code::ResourceExhausted,
                reason::RATE_LIMITED,
                format!(
                    "API key `{}` is over its rate limit; retry in {} ms",
                    entry.principal.key_id,
                    wait.as_millis().max(1)
                ),
            )
            .meta("key_id", entry.principal.key_id.clone())
            .retry_after(wait)
            .build());
        }
        Ok(entry.principal.clone())
    }
}

/// SHA-256 of a key as lowercase hex, as the configuration stores it.
pub fn hash_key(key: &str) -> String {
    Sha256::digest(key.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A new key, shown once.
#[derive(Debug)]
pub struct CreatedKey {
    pub id: String,
    /// The key to hand to the client; never stored.
    pub key: SecretString,
    /// The `gateway.api_keys` entry (a TOML inline table) to put in the configuration.
    pub config_line: String,
}

/// `culprit keys create`: a random key for `scopes` and `tenants` with a generated id.
pub fn create_key(scopes: &[Scope], tenants: &[String]) -> Result<CreatedKey, GatewayError> {
    let id = format!("key-{:08x}", rand::random::<u32>());
    create_key_with_id(&id, scopes, tenants)
}

/// As [`create_key`] with a chosen id (e.g. `soar`).
pub fn create_key_with_id(
    id: &str,
    scopes: &[Scope],
    tenants: &[String],
) -> Result<CreatedKey, GatewayError> {
    let bytes: [u8; 32] = rand::random();
    let key = format!(
        "culprit_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    );
    let settings = ApiKeySettings {
        id: id.to_owned(),
        hash: hash_key(&key),
        scopes: scopes.iter().map(|s| s.as_str().to_owned()).collect(),
        tenants: tenants.to_vec(),
    };
    // Validate exactly as the server will when it loads the line.
    entry(0, &settings)?;
    let list = |v: &[String]| {
        v.iter()
            .map(|s| toml_string(s))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let config_line = format!(
        "{{ id = {}, hash = \"{}\", scopes = [{}], tenants = [{}] }}",
        toml_string(id),
        settings.hash,
        list(&settings.scopes),
        list(&settings.tenants)
    );
    Ok(CreatedKey {
        id: id.to_owned(),
        key: SecretString::from(key),
        config_line,
    })
}

fn toml_string(s: &str) -> String {
    // JSON string escaping is valid TOML basic-string escaping for these characters.
    serde_json::to_string(s).unwrap_or_else(|_| format!("\"{}\"", s.escape_default()))
}

/// The bearer header value for `key` (clients, tests).
pub fn bearer(key: &SecretString) -> String {
    format!("Bearer {}", key.expose_secret())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring_with(scopes: &[Scope], tenants: &[&str]) -> (KeyRing, SecretString) {
        let t: Vec<String> = tenants.iter().map(|s| (*s).to_owned()).collect();
        let created = create_key_with_id("k1", scopes, &t).unwrap();
        let file = format!("[gateway]\napi_keys = [{}]\n", created.config_line);
        let parsed: toml::Table = file.parse().unwrap();
        let keys: Vec<ApiKeySettings> = parsed["gateway"]["api_keys"].clone().try_into().unwrap();
        (KeyRing::from_settings(&keys, 0).unwrap(), created.key)
    }

    fn req(auth: Option<&str>) -> Request<()> {
        let mut r = Request::new(());
        if let Some(a) = auth {
            r.metadata_mut().insert("authorization", a.parse().unwrap());
        }
        r
    }

    #[test]
    fn config_line_round_trips_and_authenticates() {
        let (ring, key) = ring_with(&[Scope::Read], &["acme"]);
        let p = ring.authenticate(&req(Some(&bearer(&key)))).unwrap();
        assert_eq!(p.key_id, "k1");
        assert!(p.tenants.covers("acme") && !p.tenants.covers("globex"));
        assert!(p.require_scope(Scope::Read).is_ok());
        assert_eq!(
            p.require_scope(Scope::Respond).unwrap_err().code(),
            Code::PermissionDenied
        );
    }

    #[test]
    fn missing_wrong_and_malformed_keys_are_unauthenticated() {
        let (ring, key) = ring_with(&[Scope::Read], &["acme"]);
        let wrong = format!("Bearer {}x", key.expose_secret());
        let basic = format!("Basic {}", key.expose_secret());
        for auth in [
            None,
            Some(wrong.as_str()),
            Some(basic.as_str()),
            Some("Bearer"),
        ] {
            let e = ring.authenticate(&req(auth)).unwrap_err();
            assert_eq!(e.code(), Code::Unauthenticated, "{auth:?}");
            assert!(!e.message().contains(key.expose_secret()));
        }
    }

    #[test]
    fn env_variable_form_of_the_keys_loads() {
        let created =
            create_key_with_id("soar", &[Scope::Read, Scope::Respond], &["acme".into()]).unwrap();
        let env = vec![(
            "CULPRIT__GATEWAY__API_KEYS".to_owned(),
            format!("[{}]", created.config_line),
        )];
        let s = culprit_settings::Settings::load_from(None, &env).unwrap();
        let ring = KeyRing::from_settings(&s.gateway.api_keys, 0).unwrap();
        let p = ring
            .authenticate(&req(Some(&bearer(&created.key))))
            .unwrap();
        assert_eq!(p.key_id, "soar");
        assert!(p.require_scope(Scope::Respond).is_ok());
    }

    #[test]
    fn bad_entries_are_named() {
        let mut k = ApiKeySettings {
            id: "a".into(),
            hash: "zz".into(),
            scopes: vec!["read".into()],
            tenants: vec!["acme".into()],
        };
        let e = KeyRing::from_settings(&[k.clone()], 0)
            .unwrap_err()
            .to_string();
        assert!(e.contains("api_keys[0].hash"), "{e}");
        k.hash = hash_key("x");
        k.scopes = vec!["admin".into()];
        let e = KeyRing::from_settings(&[k.clone()], 0)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("api_keys[0].scopes") && e.contains("admin"),
            "{e}"
        );
        k.scopes = vec!["read".into()];
        let e = KeyRing::from_settings(&[k.clone(), k], 0)
            .unwrap_err()
            .to_string();
        assert!(e.contains("api_keys[1].id"), "{e}");
    }

    #[test]
    fn rate_limit_per_key() {
        let created = create_key_with_id("k", &[Scope::Read], &["acme".into()]).unwrap();
        let settings = ApiKeySettings {
            id: "k".into(),
            hash: hash_key(created.key.expose_secret()),
            scopes: vec!["read".into()],
            tenants: vec!["acme".into()],
        };
        let ring = KeyRing::from_settings(&[settings], 3).unwrap();
        let r = req(Some(&bearer(&created.key)));
        for _ in 0..3 {
            ring.authenticate(&r).unwrap();
        }
        assert_eq!(
            ring.authenticate(&r).unwrap_err().code(),
            Code::ResourceExhausted
        );
    }

    #[test]
    fn narrowing_listings() {
        let p = Principal {
            key_id: "k".into(),
            scopes: BTreeSet::from([Scope::Read]),
            tenants: Tenants::Only(BTreeSet::from(["a".to_owned(), "b".to_owned()])),
        };
        assert_eq!(p.narrow(&[]).unwrap().unwrap().len(), 2);
        assert_eq!(
            p.narrow(&["c".into()]).unwrap_err().code(),
            Code::PermissionDenied
        );
        assert_eq!(
            p.single_tenant("", "tenant").unwrap_err().code(),
            Code::InvalidArgument
        );
    }
}
