//! HTTP to the Vectra API: the token, GETs with the retry rules, and what a refusal means.

use std::sync::Arc;
use std::time::{Duration, Instant};

use culprit_runtime::{Backoff, Shutdown};
use reqwest::StatusCode;
use reqwest::header::{AUTHORIZATION, HeaderValue, RETRY_AFTER};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::Value;
use url::Url;

use crate::{PollClock, PollerConfig, PollerError, VectraAuth};

/// A token in hand.
struct Cached {
    access: SecretString,
    /// Renew at or after this instant (some margin before the real expiry).
    renew_at: Instant,
    refresh: Option<(SecretString, Instant)>,
}

#[derive(Deserialize)]
struct TokenReply {
    access_token: SecretString,
    expires_in: Option<Value>,
    refresh_token: Option<SecretString>,
    refresh_expires_in: Option<Value>,
}

/// A lifetime in seconds that may arrive as a number or a string.
fn seconds(v: Option<&Value>) -> Option<u64> {
    match v? {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// How long before expiry a token is renewed: a tenth of its life, at most five minutes.
fn margin(lifetime: Duration) -> Duration {
    (lifetime / 10).min(Duration::from_secs(300))
}

pub(crate) struct Api {
    http: reqwest::Client,
    base: Url,
    auth: VectraAuth,
    token: tokio::sync::Mutex<Option<Cached>>,
    clock: Arc<dyn PollClock>,
    backoff_base: Duration,
    backoff_cap: Duration,
    max_retry_after: Duration,
}

impl std::fmt::Debug for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Api")
            .field("base", &self.base.as_str())
            .field("auth", &self.auth)
            .finish_non_exhaustive()
    }
}

/// What one attempt came to.
enum Attempt {
    Done(Value),
    /// 401: the token may be stale.
    Unauthorized(String),
    /// 429 with the wait asked for (if any).
    Throttled(Option<Duration>),
    /// 5xx or a transport failure: back off and try again.
    Transient(String),
}

impl Api {
    pub(crate) fn new(cfg: &PollerConfig, clock: Arc<dyn PollClock>) -> Result<Self, PollerError> {
        let mut b = reqwest::Client::builder()
            .timeout(cfg.request_timeout)
            .connect_timeout(cfg.request_timeout.min(Duration::from_secs(15)))
            .user_agent(concat!("culprit/", env!("CARGO_PKG_VERSION")))
            .https_only(cfg.base_url.scheme() == "https");
        if let Some(path) = &cfg.ca_file {
            let bad = |reason: String| PollerError::Config {
                field: "ca_file",
                reason,
            };
            let shown = path.display();
            let pem = std::fs::read(path).map_err(|e| bad(format!("cannot read {shown}: {e}")))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| bad(format!("{shown} is not a PEM certificate bundle: {e}")))?;
            if certs.is_empty() {
                return Err(bad(format!("{shown} holds no PEM certificate")));
            }
            for cert in certs {
                b = b.add_root_certificate(cert);
            }
        }
        let http = b.build().map_err(|e| PollerError::Config {
            field: "url",
            reason: format!("cannot build the HTTP client: {e}"),
        })?;
        Ok(Api {
            http,
            base: cfg.base_url.clone(),
            auth: cfg.auth.clone(),
            token: tokio::sync::Mutex::new(None),
            clock,
            backoff_base: cfg.backoff_base,
            backoff_cap: cfg.backoff_cap,
            max_retry_after: cfg.max_retry_after,
        })
    }

    pub(crate) fn base(&self) -> &Url {
        &self.base
    }

    /// `{base}/{path}` (path without a leading slash), keeping a base path prefix.
    pub(crate) fn url(&self, path: &str) -> Result<Url, PollerError> {
        let mut base = self.base.clone();
        if !base.path().ends_with('/') {
            let p = format!("{}/", base.path());
            base.set_path(&p);
        }
        base.join(path).map_err(|e| PollerError::Config {
            field: "url",
            reason: format!("cannot form {path}: {e}"),
        })
    }

    async fn wait(&self, d: Duration, shutdown: &Shutdown) -> Result<(), PollerError> {
        if shutdown.is_triggered() {
            return Err(PollerError::Shutdown);
        }
        tokio::select! {
            biased;
            _ = shutdown.triggered() => Err(PollerError::Shutdown),
            _ = self.clock.sleep(d) => Ok(()),
        }
    }

    /// GETs JSON. 429 waits `Retry-After`; 5xx and transport errors back off with jitter and
    /// retry (until shutdown); a 401 renews the token once. `Ok(None)` is a 404.
    pub(crate) async fn get_json(
        &self,
        url: &Url,
        shutdown: &Shutdown,
    ) -> Result<Option<Value>, PollerError> {
        let endpoint = url.path().to_owned();
        let mut backoff = Backoff::new(self.backoff_base, self.backoff_cap);
        let mut renewed = false;
        loop {
            if shutdown.is_triggered() {
                return Err(PollerError::Shutdown);
            }
            let header = self.auth_header(shutdown).await?;
            let sent = self
                .http
                .get(url.clone())
                .header(AUTHORIZATION, header)
                .header(reqwest::header::ACCEPT, "application/json")
                .send()
                .await;
            let attempt = match sent {
                Err(e) => Attempt::Transient(transport(&e)),
                Ok(resp) => match self.read(resp, &endpoint).await? {
                    Some(a) => a,
                    None => return Ok(None),
                },
            };
            match attempt {
                Attempt::Done(v) => return Ok(Some(v)),
                Attempt::Unauthorized(detail) => {
                    if renewed || matches!(self.auth, VectraAuth::Token(_)) {
                        return Err(PollerError::Auth {
                            endpoint,
                            reason: format!("HTTP 401: {detail}"),
                        });
                    }
                    // The token was revoked or expired early: renew once and repeat the call.
                    tracing::info!(endpoint = %endpoint, "vectra API answered 401; renewing the token");
                    *self.token.lock().await = None;
                    renewed = true;
                }
                Attempt::Throttled(after) => {
                    let d = match after {
                        Some(d) => d.min(self.max_retry_after),
                        None => backoff.next_delay(),
                    };
                    tracing::warn!(endpoint = %endpoint, wait_ms = d.as_millis() as u64, "vectra API rate limit (429)");
                    self.wait(d, shutdown).await?;
                }
                Attempt::Transient(reason) => {
                    let d = backoff.next_delay();
                    tracing::warn!(endpoint = %endpoint, error = %reason, retry_in_ms = d.as_millis() as u64, "vectra API call failed; retrying");
                    self.wait(d, shutdown).await?;
                }
            }
        }
    }

    /// Classifies a response; `Ok(None)` is a 404.
    async fn read(
        &self,
        resp: reqwest::Response,
        endpoint: &str,
    ) -> Result<Option<Attempt>, PollerError> {
        let status = resp.status();
        let retry_after = resp
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        if status.is_success() {
            return match resp.json::<Value>().await {
                Ok(v) => Ok(Some(Attempt::Done(v))),
                // A body cut off mid-way is a transport fault, not a wrong shape.
                Err(e) if e.is_body() || e.is_timeout() || e.is_request() => {
                    Ok(Some(Attempt::Transient(transport(&e))))
                }
                Err(e) => Err(PollerError::BadResponse {
                    endpoint: endpoint.to_owned(),
                    reason: format!("not JSON: {e}"),
                }),
            };
        }
        let detail = error_detail(resp).await;
        match status {
            StatusCode::UNAUTHORIZED => Ok(Some(Attempt::Unauthorized(detail))),
            StatusCode::TOO_MANY_REQUESTS => Ok(Some(Attempt::Throttled(retry_after))),
            StatusCode::NOT_FOUND => Ok(None),
            s if s.is_server_error() => Ok(Some(Attempt::Transient(format!(
                "HTTP {}: {detail}",
                s.as_u16()
            )))),
            s => Err(PollerError::Refused {
                endpoint: endpoint.to_owned(),
                status: s.as_u16(),
                detail,
            }),
        }
    }

    /// The `Authorization` value, renewing the OAuth token first when it is due.
    async fn auth_header(&self, shutdown: &Shutdown) -> Result<HeaderValue, PollerError> {
        let (client_id, client_secret) = match &self.auth {
            VectraAuth::Token(t) => return secret_header("Token", t),
            VectraAuth::OAuth {
                client_id,
                client_secret,
            } => (client_id, client_secret),
        };
        let mut slot = self.token.lock().await;
        let now = self.clock.now();
        if let Some(c) = slot.as_ref()
            && now < c.renew_at
        {
            return secret_header("Bearer", &c.access);
        }
        let refresh = slot
            .as_ref()
            .and_then(|c| c.refresh.as_ref())
            .filter(|(_, until)| now < *until)
            .map(|(t, _)| t.clone());
        let fresh = self
            .fetch_token(client_id, client_secret, refresh, shutdown)
            .await?;
        let header = secret_header("Bearer", &fresh.access);
        *slot = Some(fresh);
        header
    }

    async fn fetch_token(
        &self,
        client_id: &str,
        client_secret: &SecretString,
        refresh: Option<SecretString>,
        shutdown: &Shutdown,
    ) -> Result<Cached, PollerError> {
        let url = self.url("oauth2/token")?;
        let endpoint = url.path().to_owned();
        let mut backoff = Backoff::new(self.backoff_base, self.backoff_cap);
        let mut refresh = refresh;
        loop {
            if shutdown.is_triggered() {
                return Err(PollerError::Shutdown);
            }
            let form: Vec<(&str, &str)> = match &refresh {
                Some(r) => vec![
                    ("grant_type", "refresh_token"),
                    ("refresh_token", r.expose_secret()),
                ],
                None => vec![("grant_type", "client_credentials")],
            };
            let sent = self
                .http
                .post(url.clone())
                .basic_auth(client_id, Some(client_secret.expose_secret()))
                .header(reqwest::header::ACCEPT, "application/json")
                .form(&form)
                .send()
                .await;
            let resp = match sent {
                Ok(r) => r,
                Err(e) => {
                    let d = backoff.next_delay();
                    tracing::warn!(endpoint = %endpoint, error = %transport(&e), retry_in_ms = d.as_millis() as u64, "vectra token request failed; retrying");
                    self.wait(d, shutdown).await?;
                    continue;
                }
            };
            let status = resp.status();
            if status.is_success() {
                let started = self.clock.now();
                let reply: TokenReply =
                    resp.json().await.map_err(|e| PollerError::BadResponse {
                        endpoint: endpoint.clone(),
                        reason: format!("token reply without access_token: {e}"),
                    })?;
                // Vectra's default lifetime when the reply leaves it out.
                let life =
                    Duration::from_secs(seconds(reply.expires_in.as_ref()).unwrap_or(21_600));
                let refresh = reply.refresh_token.map(|t| {
                    let rlife = Duration::from_secs(
                        seconds(reply.refresh_expires_in.as_ref()).unwrap_or(0),
                    );
                    (t, started + rlife.saturating_sub(margin(rlife)))
                });
                tracing::debug!(endpoint = %endpoint, lifetime_s = life.as_secs(), "vectra token obtained");
                return Ok(Cached {
                    access: reply.access_token,
                    renew_at: started + life.saturating_sub(margin(life)),
                    refresh,
                });
            }
            let retry_after = resp
                .headers()
                .get(RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            let detail = error_detail(resp).await;
            if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
                let d = match retry_after {
                    Some(d) if status == StatusCode::TOO_MANY_REQUESTS => {
                        d.min(self.max_retry_after)
                    }
                    _ => backoff.next_delay(),
                };
                tracing::warn!(endpoint = %endpoint, status = status.as_u16(), retry_in_ms = d.as_millis() as u64, "vectra token request refused for now; retrying");
                self.wait(d, shutdown).await?;
                continue;
            }
            if refresh.is_some() {
                // A refused refresh token: start over with the client credentials.
                tracing::info!(endpoint = %endpoint, status = status.as_u16(), "vectra refresh token refused; using the client credentials");
                refresh = None;
                continue;
            }
            return Err(PollerError::Auth {
                endpoint,
                reason: format!("HTTP {}: {detail}", status.as_u16()),
            });
        }
    }
}

fn secret_header(scheme: &str, secret: &SecretString) -> Result<HeaderValue, PollerError> {
    let mut v =
        HeaderValue::from_str(&format!("{scheme} {}", secret.expose_secret())).map_err(|_| {
            PollerError::Config {
                field: if scheme == "Token" {
                    "api_token"
                } else {
                    "access_token"
                },
                reason: "holds characters not allowed in an HTTP header".to_owned(),
            }
        })?;
    v.set_sensitive(true);
    Ok(v)
}

/// A transport error without the URL's query (never secret here, but long).
fn transport(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else {
        "transport error"
    };
    let mut source = std::error::Error::source(e);
    let mut detail = String::new();
    while let Some(s) = source {
        detail = s.to_string();
        source = s.source();
    }
    if detail.is_empty() {
        kind.to_owned()
    } else {
        format!("{kind}: {detail}")
    }
}

/// The `detail` / `error` of an error body, clipped; the status text when there is none.
async fn error_detail(resp: reqwest::Response) -> String {
    let status = resp.status();
    let text = resp.text().await.unwrap_or_default();
    let from_json = serde_json::from_str::<Value>(&text).ok().and_then(|v| {
        ["detail", "error_description", "error", "message"]
            .iter()
            .find_map(|k| v.get(*k).and_then(Value::as_str).map(str::to_owned))
    });
    let mut d = from_json.unwrap_or_else(|| {
        status
            .canonical_reason()
            .unwrap_or("no reason given")
            .to_owned()
    });
    if d.len() > 200 {
        let mut cut = 200;
        while !d.is_char_boundary(cut) {
            cut -= 1;
        }
        d.truncate(cut);
        d.push('…');
    }
    d
}
