//! The HTTP client: token acquisition, one request path with 401 handling, and the calls.

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration as StdDuration;

use culprit_model::Timestamp;
use reqwest::{Method, header};
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use url::Url;

use crate::classify::{Call, classify};
use crate::cloud::{Endpoints, join};
use crate::config::{ClientConfig, HuntingApi, TokenForm};
use crate::error::MdeError;
use crate::hunt::{self, HuntResult, HuntSpan};
use crate::machines::{
    self, ActionStatus, IsolationState, IsolationType, Machine, MachineAction, exactly_one,
};
use crate::token::{AccessToken, Clock, SystemClock, TokenCache, parse_token};

/// Which API a token is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Audience {
    Graph,
    Mde,
}

/// How to find one machine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MachineSelector {
    Id(String),
    DnsName(String),
    /// `findbyip` at a moment (machines seen with that internal IP within ±15 minutes).
    IpAt(IpAddr, Timestamp),
    /// The machine whose last reported IP is this one.
    LastIp(IpAddr),
}

/// A cheap-to-clone handle; clones share the HTTP pool and the token cache.
#[derive(Clone, Debug)]
pub struct MdeClient {
    inner: Arc<Inner>,
}

struct Inner {
    cfg: ClientConfig,
    endpoints: Endpoints,
    http: reqwest::Client,
    tokens: TokenCache,
    clock: Arc<dyn Clock>,
}

impl fmt::Debug for Inner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `cfg`'s Debug redacts the secret; the token cache prints nothing.
        f.debug_struct("Inner")
            .field("cfg", &self.cfg)
            .field("endpoints", &self.endpoints)
            .finish_non_exhaustive()
    }
}

struct Answer {
    status: u16,
    retry_after: Option<String>,
    body: Vec<u8>,
}

fn check_id(field: &'static str, value: &str) -> Result<(), MdeError> {
    // Only dots would be `.`/`..` path segments once joined into a URL.
    let ok = value.bytes().any(|b| b != b'.')
        && value.len() <= 256
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(MdeError::InvalidInput {
            field,
            reason: "must be 1-256 characters of letters, digits, `-`, `.` or `_`, not only dots"
                .to_owned(),
        })
    }
}

impl MdeClient {
    /// Validates the configuration and builds the client (no network call).
    pub fn new(cfg: ClientConfig) -> Result<Self, MdeError> {
        Self::with_clock(cfg, Arc::new(SystemClock))
    }

    /// As [`MdeClient::new`] with an injected clock (token lifetimes, action deadlines).
    pub fn with_clock(cfg: ClientConfig, clock: Arc<dyn Clock>) -> Result<Self, MdeError> {
        check_id("tenant_id", &cfg.tenant_id)?;
        check_id("client_id", &cfg.client_id)?;
        if cfg.client_secret.expose_secret().is_empty() {
            return Err(MdeError::InvalidConfig {
                field: "client_secret",
                reason: "is empty".to_owned(),
            });
        }
        let endpoints = cfg.effective_endpoints();
        endpoints.validate()?;
        let http = crate::transport::build_http(&cfg, &endpoints)?;
        Ok(MdeClient {
            inner: Arc::new(Inner {
                cfg,
                endpoints,
                http,
                tokens: TokenCache::default(),
                clock,
            }),
        })
    }

    pub fn config(&self) -> &ClientConfig {
        &self.inner.cfg
    }

    pub fn endpoints(&self) -> &Endpoints {
        &self.inner.endpoints
    }

    /// The portal host links should point at.
    pub fn portal(&self) -> &Url {
        &self.inner.endpoints.portal
    }

    fn audience(&self, a: Audience) -> &'static str {
        let info = self.inner.cfg.cloud.info();
        match a {
            Audience::Graph => info.graph_audience,
            Audience::Mde => info.mde_audience,
        }
    }

    async fn token(&self, a: Audience) -> Result<SecretString, MdeError> {
        let audience = self.audience(a);
        let clock = self.inner.clock.clone();
        self.inner
            .tokens
            .get(
                &self.inner.cfg.tenant_id,
                audience,
                move || clock.now(),
                || self.fetch_token(audience),
            )
            .await
    }

    /// One client-credentials request.
    async fn fetch_token(&self, audience: &str) -> Result<AccessToken, MdeError> {
        let cfg = &self.inner.cfg;
        let (path, field, value) = match cfg.token_form {
            TokenForm::V2Scope => ("oauth2/v2.0/token", "scope", format!("{audience}/.default")),
            TokenForm::V1Resource => ("oauth2/token", "resource", audience.to_owned()),
        };
        let url = join(
            &self.inner.endpoints.login,
            &format!("{}/{path}", cfg.tenant_id),
        )?;
        let form = [
            ("grant_type", "client_credentials"),
            ("client_id", cfg.client_id.as_str()),
            ("client_secret", cfg.client_secret.expose_secret()),
            (field, value.as_str()),
        ];
        tracing::debug!(tenant = %cfg.tenant_id, audience, "requesting an access token");
        let req = self.inner.http.post(url).form(&form);
        let answer = self.send(req).await?;
        let now = self.inner.clock.now();
        if (200..300).contains(&answer.status) {
            parse_token(&answer.body, now)
        } else {
            let call = Call::Token {
                tenant: cfg.tenant_id.clone(),
            };
            Err(classify(
                answer.status,
                answer.retry_after.as_deref(),
                &answer.body,
                &call,
                now,
            ))
        }
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> Result<Answer, MdeError> {
        let resp = req.send().await.map_err(|e| MdeError::from_reqwest(&e))?;
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get(header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = resp
            .bytes()
            .await
            .map_err(|e| MdeError::from_reqwest(&e))?
            .to_vec();
        Ok(Answer {
            status,
            retry_after,
            body,
        })
    }

    /// An authorised call: on 401 the token is dropped and the call made once more.
    async fn call(
        &self,
        a: Audience,
        method: Method,
        url: Url,
        body: Option<Vec<u8>>,
        timeout: Option<StdDuration>,
        call: &Call,
    ) -> Result<Answer, MdeError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let token = self.token(a).await?;
            let mut req = self
                .inner
                .http
                .request(method.clone(), url.clone())
                .bearer_auth(token.expose_secret());
            if let Some(b) = &body {
                req = req
                    .header(header::CONTENT_TYPE, "application/json; charset=utf-8")
                    .body(b.clone());
            }
            if let Some(t) = timeout {
                req = req.timeout(t);
            }
            let answer = self.send(req).await?;
            tracing::debug!(?call, status = answer.status, attempt, "microsoft call");
            if (200..300).contains(&answer.status) {
                return Ok(answer);
            }
            if answer.status == 401 && attempt == 1 {
                let audience = self.audience(a);
                self.inner
                    .tokens
                    .invalidate(&self.inner.cfg.tenant_id, audience, &token)
                    .await;
                continue;
            }
            let err = classify(
                answer.status,
                answer.retry_after.as_deref(),
                &answer.body,
                call,
                self.inner.clock.now(),
            );
            tracing::info!(?call, status = answer.status, kind = err.kind(), error = %err, "microsoft call failed");
            return Err(err);
        }
    }

    fn mde_url(&self, rel: &str) -> Result<Url, MdeError> {
        join(&self.inner.endpoints.mde_api, rel)
    }

    /// The application roles in the token for `audience` (its `roles` claim), for checking a
    /// tenant's set-up without acting. `None` when the token is not a readable JWT. The claim
    /// is read, not verified: it is advice for the operator, never an authorisation decision.
    pub async fn granted_roles(&self, audience: Audience) -> Result<Option<Vec<String>>, MdeError> {
        let token = self.token(audience).await?;
        Ok(crate::token::jwt_roles(token.expose_secret()))
    }

    /// Runs a hunting query on the configured API.
    pub async fn hunt(&self, query: &str, span: Option<HuntSpan>) -> Result<HuntResult, MdeError> {
        self.hunt_via(self.inner.cfg.hunting_api, query, span).await
    }

    /// Runs a hunting query on a chosen API. `span` is Graph's `Timespan`; the MDE API has no
    /// such parameter, so there the query must bound its own time.
    pub async fn hunt_via(
        &self,
        api: HuntingApi,
        query: &str,
        span: Option<HuntSpan>,
    ) -> Result<HuntResult, MdeError> {
        if query.trim().is_empty() {
            return Err(MdeError::InvalidInput {
                field: "query",
                reason: "is empty".to_owned(),
            });
        }
        let (audience, url) = match api {
            HuntingApi::Graph => (
                Audience::Graph,
                join(&self.inner.endpoints.graph, "v1.0/security/runHuntingQuery")?,
            ),
            HuntingApi::Mde => (Audience::Mde, self.mde_url("api/advancedqueries/run")?),
        };
        if api == HuntingApi::Mde && span.is_some() {
            tracing::debug!("the MDE hunting API takes no timespan; the query bounds its own time");
        }
        let body = hunt::request_body(api, query, span)?;
        let timeout = Some(self.inner.cfg.hunt_timeout);
        let answer = self
            .call(
                audience,
                Method::POST,
                url,
                Some(body),
                timeout,
                &Call::Hunt(api),
            )
            .await?;
        hunt::parse_result(&answer.body, api)
    }

    async fn get_mde(&self, url: Url, call: &Call) -> Result<Vec<u8>, MdeError> {
        let answer = self
            .call(Audience::Mde, Method::GET, url, None, None, call)
            .await?;
        Ok(answer.body)
    }

    /// A collection GET; the MDE API answers an empty collection with 404.
    async fn get_list<T>(
        &self,
        url: Url,
        call: &Call,
        parse: fn(&[u8]) -> Result<Vec<T>, MdeError>,
    ) -> Result<Vec<T>, MdeError> {
        match self.get_mde(url, call).await {
            Ok(body) => parse(&body),
            Err(MdeError::NotFound { .. }) => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }

    async fn post_mde<T: Serialize>(
        &self,
        url: Url,
        body: &T,
        call: &Call,
    ) -> Result<Vec<u8>, MdeError> {
        let bytes = serde_json::to_vec(body).map_err(|e| MdeError::InvalidInput {
            field: "body",
            reason: e.to_string(),
        })?;
        let answer = self
            .call(Audience::Mde, Method::POST, url, Some(bytes), None, call)
            .await?;
        Ok(answer.body)
    }

    fn entity_url(&self, collection: &str, id: &str, tail: Option<&str>) -> Result<Url, MdeError> {
        check_id("id", id)?;
        let rel = match tail {
            Some(t) => format!("api/{collection}/{id}/{t}"),
            None => format!("api/{collection}/{id}"),
        };
        self.mde_url(&rel)
    }

    /// One machine by MDE id.
    pub async fn machine(&self, id: &str) -> Result<Machine, MdeError> {
        let url = self.entity_url("machines", id, None)?;
        let call = Call::Machine {
            what: format!("machine {id}"),
        };
        machines::parse_machine(&self.get_mde(url, &call).await?)
    }

    /// `GET api/machines?$filter=...`; the API's 404 for "no machines" is an empty list.
    async fn machines_where(&self, filter: &str, what: String) -> Result<Vec<Machine>, MdeError> {
        let mut url = self.mde_url("api/machines")?;
        url.set_query(Some(&format!(
            "$filter={}",
            machines::encode_query_value(filter)
        )));
        self.get_list(url, &Call::Machine { what }, machines::parse_machines)
            .await
    }

    /// Up to `top` machines (at most 10,000): the cheapest check that machine reads work.
    pub async fn machines_top(&self, top: u32) -> Result<Vec<Machine>, MdeError> {
        let mut url = self.mde_url("api/machines")?;
        url.set_query(Some(&format!("$top={}", top.clamp(1, 10_000))));
        let call = Call::Machine {
            what: "machines".to_owned(),
        };
        self.get_list(url, &call, machines::parse_machines).await
    }

    /// Machines whose last reported IP is `ip`.
    pub async fn machines_by_ip(&self, ip: IpAddr) -> Result<Vec<Machine>, MdeError> {
        let filter = format!(
            "lastIpAddress eq {}",
            machines::odata_string(&ip.to_string())
        );
        self.machines_where(&filter, format!("machines with last IP {ip}"))
            .await
    }

    /// Machines with this DNS name (exact match).
    pub async fn machines_by_dns_name(&self, name: &str) -> Result<Vec<Machine>, MdeError> {
        if name.is_empty() || name.len() > 255 || name.chars().any(char::is_control) {
            return Err(MdeError::InvalidInput {
                field: "dns name",
                reason: "must be 1-255 characters without control characters".to_owned(),
            });
        }
        let filter = format!("computerDnsName eq {}", machines::odata_string(name));
        self.machines_where(&filter, format!("machines named {name}"))
            .await
    }

    /// Machines seen with internal IP `ip` within ±15 minutes of `at` (last 30 days only).
    pub async fn find_by_ip(&self, ip: IpAddr, at: Timestamp) -> Result<Vec<Machine>, MdeError> {
        let ts = at.to_kusto_string();
        let whole = ts.get(..19).unwrap_or(&ts);
        let url = self.mde_url(&format!(
            "api/machines/findbyip(ip='{ip}',timestamp={whole}Z)"
        ))?;
        let what = format!("machines with IP {ip} at {whole}Z");
        self.get_list(url, &Call::Machine { what }, machines::parse_machines)
            .await
    }

    /// Exactly one machine: zero or several are errors, never a silent pick.
    pub async fn resolve(&self, selector: &MachineSelector) -> Result<Machine, MdeError> {
        match selector {
            MachineSelector::Id(id) => self.machine(id).await,
            MachineSelector::DnsName(n) => exactly_one(
                self.machines_by_dns_name(n).await?,
                &format!("DNS name {n}"),
            ),
            MachineSelector::IpAt(ip, at) => exactly_one(
                self.find_by_ip(*ip, *at).await?,
                &format!("IP {ip} at {at}"),
            ),
            MachineSelector::LastIp(ip) => {
                exactly_one(self.machines_by_ip(*ip).await?, &format!("last IP {ip}"))
            }
        }
    }

    /// Isolates a machine. 201 gives the new action; a pending action gives
    /// [`MdeError::ActiveRequestAlreadyExists`]; an isolated machine
    /// [`MdeError::AlreadyIsolated`] when the API says so.
    pub async fn isolate(
        &self,
        machine_id: &str,
        isolation: IsolationType,
        comment: &str,
    ) -> Result<MachineAction, MdeError> {
        #[derive(Serialize)]
        struct Body<'a> {
            #[serde(rename = "Comment")]
            comment: &'a str,
            #[serde(rename = "IsolationType")]
            isolation: IsolationType,
        }
        let call = Call::Isolate {
            machine_id: machine_id.to_owned(),
        };
        let body = Body { comment, isolation };
        self.command(machine_id, "isolate", comment, &body, call)
            .await
    }

    /// Releases a machine from isolation.
    pub async fn release(
        &self,
        machine_id: &str,
        comment: &str,
    ) -> Result<MachineAction, MdeError> {
        #[derive(Serialize)]
        struct Body<'a> {
            #[serde(rename = "Comment")]
            comment: &'a str,
        }
        let call = Call::Release {
            machine_id: machine_id.to_owned(),
        };
        let body = Body { comment };
        self.command(machine_id, "unisolate", comment, &body, call)
            .await
    }

    /// `POST api/machines/{id}/{verb}` returning the new action.
    async fn command<T: Serialize>(
        &self,
        machine_id: &str,
        verb: &str,
        comment: &str,
        body: &T,
        call: Call,
    ) -> Result<MachineAction, MdeError> {
        check_comment(comment)?;
        let url = self.entity_url("machines", machine_id, Some(verb))?;
        let action_type = if verb == "isolate" {
            "Isolate"
        } else {
            "Unisolate"
        };
        match self.post_mde(url, body, &call).await {
            Ok(bytes) => machines::parse_action(&bytes),
            Err(e) => Err(self.with_pending_action(e, action_type).await),
        }
    }

    /// For `ActiveRequestAlreadyExists`, names the pending action of that type when the
    /// machine's action list shows one (best effort: the filter is undocumented).
    async fn with_pending_action(&self, e: MdeError, action_type: &str) -> MdeError {
        let MdeError::ActiveRequestAlreadyExists {
            machine_id,
            message,
            ..
        } = e
        else {
            return e;
        };
        let pending = match self.machine_actions(&machine_id).await {
            Ok(actions) => actions
                .into_iter()
                .filter(|a| !a.status.is_final() && a.action_type.eq_ignore_ascii_case(action_type))
                .max_by_key(|a| a.created)
                .map(|a| a.id),
            Err(lookup) => {
                tracing::debug!(kind = lookup.kind(), error = %lookup, "cannot list pending actions");
                None
            }
        };
        MdeError::ActiveRequestAlreadyExists {
            machine_id,
            message,
            pending_action_id: pending,
        }
    }

    /// One machine action.
    pub async fn action(&self, action_id: &str) -> Result<MachineAction, MdeError> {
        let url = self.entity_url("machineactions", action_id, None)?;
        let call = Call::Action {
            action_id: action_id.to_owned(),
        };
        machines::parse_action(&self.get_mde(url, &call).await?)
    }

    /// A machine's actions (`$filter=machineId eq '...'`; filter support is undocumented).
    pub async fn machine_actions(&self, machine_id: &str) -> Result<Vec<MachineAction>, MdeError> {
        check_id("machine_id", machine_id)?;
        let mut url = self.mde_url("api/machineactions")?;
        let filter = format!("machineId eq {}", machines::odata_string(machine_id));
        url.set_query(Some(&format!(
            "$filter={}",
            machines::encode_query_value(&filter)
        )));
        let call = Call::Machine {
            what: format!("actions of machine {machine_id}"),
        };
        self.get_list(url, &call, machines::parse_actions).await
    }

    /// Isolation state from the newest isolate/release action.
    pub async fn isolation_state(&self, machine_id: &str) -> Result<IsolationState, MdeError> {
        Ok(isolation_from_actions(
            self.machine_actions(machine_id).await?,
        ))
    }

    /// Polls an action every `poll` until it is final or `deadline` (on the client's clock)
    /// has passed. Retryable errors while polling are logged and polled through.
    pub async fn wait_for_action(
        &self,
        action_id: &str,
        poll: StdDuration,
        deadline: StdDuration,
    ) -> Result<MachineAction, MdeError> {
        let clock = &self.inner.clock;
        let end = clock.now() + culprit_model::Duration::from_std(deadline);
        let mut last_status = ActionStatus::Other("unknown".to_owned());
        loop {
            match self.action(action_id).await {
                Ok(a) if a.status.is_final() => return Ok(a),
                Ok(a) => last_status = a.status,
                Err(e) if e.is_retryable() => {
                    tracing::warn!(action_id, kind = e.kind(), error = %e, "polling a machine action");
                }
                Err(e) => return Err(e),
            }
            if clock.now() >= end {
                return Err(MdeError::ActionDeadline {
                    action_id: action_id.to_owned(),
                    status: last_status.as_str().to_owned(),
                });
            }
            tokio::time::sleep(poll).await;
        }
    }
}

fn check_comment(comment: &str) -> Result<(), MdeError> {
    if comment.trim().is_empty() || comment.chars().count() > 1000 {
        return Err(MdeError::InvalidInput {
            field: "comment",
            reason: "is required and at most 1000 characters".to_owned(),
        });
    }
    Ok(())
}

/// The newest isolate/release action decides; a pending one wins.
pub(crate) fn isolation_from_actions(actions: Vec<MachineAction>) -> IsolationState {
    let mut relevant: Vec<MachineAction> = actions
        .into_iter()
        .filter(|a| {
            a.action_type.eq_ignore_ascii_case("Isolate")
                || a.action_type.eq_ignore_ascii_case("Unisolate")
        })
        .collect();
    relevant.sort_by_key(|a| std::cmp::Reverse(a.created));
    if let Some(p) = relevant.iter().find(|a| !a.status.is_final()) {
        return IsolationState::Pending(p.clone());
    }
    match relevant
        .into_iter()
        .find(|a| a.status == ActionStatus::Succeeded)
    {
        Some(a) if a.action_type.eq_ignore_ascii_case("Isolate") => IsolationState::Isolated(a),
        other => IsolationState::NotIsolated(other),
    }
}
