//! The embedded pipeline: hunt a tenant's detections, attribute each, add portal links.
//! `culprit demo`, `correlate` and `eval` all run through here, against the twin or a real
//! tenant alike.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use culprit_correlator::Options;
use culprit_hunter::{HuntingBackend, MdeBackend, Outcome, Reach};
use culprit_mde::{ClientConfig, Cloud, Endpoints, MdeClient};
use culprit_mde_twin::{Twin, TwinConfig, TwinHandle};
use culprit_model::correlation::Links;
use culprit_model::{Correlation, Detection, Timestamp};
use secrecy::SecretString;
use url::Url;

/// One tenant as the pipeline sees it.
#[derive(Debug, Clone)]
pub struct Tenant {
    pub name: String,
    pub backend: Arc<dyn HuntingBackend>,
    pub portal: Url,
}

/// The twin serving scenario folders, and the tenant that reaches it through the real client.
#[derive(Debug)]
pub struct TwinTenant {
    pub twin: TwinHandle,
    pub tenant: Tenant,
}

/// The tenant id the twin serves scenarios under.
pub const TWIN_TENANT_ID: &str = "00000000-0000-4000-8000-00000000c0de";
pub const TWIN_CLIENT_ID: &str = "11111111-1111-4111-8111-111111111111";

/// Starts the twin on a loopback port with `dirs` as one tenant, and a client for it with a
/// fresh random secret (OAuth is exercised for real).
pub async fn start_twin(name: &str, dirs: Vec<PathBuf>) -> Result<TwinTenant> {
    let secret: String = (0..32)
        .map(|_| char::from(b'a' + rand::random_range(0..26u8)))
        .collect();
    let config = TwinConfig::single_tenant(TWIN_TENANT_ID, TWIN_CLIENT_ID, &secret, dirs);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .context("binding a loopback port for the twin")?;
    let twin = Twin::start(config, listener)
        .await
        .context("starting the twin")?;
    let base = Url::parse(&twin.base_url()).context("twin URL")?;
    let portal = Cloud::Commercial.endpoints().portal;
    let mut cfg = ClientConfig::new(
        Cloud::Commercial,
        TWIN_TENANT_ID,
        TWIN_CLIENT_ID,
        SecretString::from(secret),
    );
    cfg.endpoints = Some(Endpoints {
        portal: portal.clone(),
        ..Endpoints::single(&base)
    });
    let client = MdeClient::new(cfg).context("building the MDE client for the twin")?;
    Ok(TwinTenant {
        twin,
        tenant: Tenant {
            name: name.to_owned(),
            backend: Arc::new(MdeBackend::new(client)),
            portal,
        },
    })
}

/// Hunts all `detections` of one tenant in one batch.
pub async fn hunt(tenant: &Tenant, detections: Vec<Detection>, reach: &Reach) -> Vec<Outcome> {
    // The embedded run makes one call per batch; the shared budget guards the services.
    let spend = || async {};
    culprit_hunter::hunt_batch(tenant.backend.as_ref(), detections, reach, &spend).await
}

/// Attributes hunted detections, in their input order.
pub fn attribute(
    tenant: &Tenant,
    outcomes: &[Outcome],
    opts: &Options,
    now: Timestamp,
) -> Vec<Correlation> {
    outcomes
        .iter()
        .map(|o| {
            let mut c = match &o.result {
                Ok(h) => culprit_correlator::attribute(&o.detection, &h.telemetry(), opts, now),
                Err(e) => culprit_correlator::service::hunt_failed(
                    &o.detection,
                    opts,
                    now,
                    &e.kind,
                    &e.to_string(),
                ),
            };
            c.links = links(&tenant.portal, &c);
            c
        })
        .collect()
}

/// Portal links for an answer on the tenant's portal host.
pub fn links(portal: &Url, c: &Correlation) -> Option<Links> {
    let device = c.device.as_ref()?;
    let from = c.detection.window_start? - culprit_model::Duration::from_minutes(15);
    let to = c.detection.window_end? + culprit_model::Duration::from_minutes(15);
    let hunting = c
        .hunting_query
        .as_ref()
        .map(|q| q.device.as_str())
        .unwrap_or_default();
    Some(Links {
        device_page: culprit_mde::links::device_page(portal, &device.device_id)
            .ok()?
            .to_string(),
        device_timeline: culprit_mde::links::device_timeline(portal, &device.device_id, from, to)
            .ok()?
            .to_string(),
        advanced_hunting: culprit_mde::links::advanced_hunting(
            portal,
            hunting,
            culprit_mde::links::TimeRangeId::Week,
        )
        .map(|u| u.to_string())
        .unwrap_or_default(),
    })
}

/// A tenant from the configuration: the real client, with the configured cloud and overrides.
pub fn configured_tenant(name: &str, t: &culprit_settings::TenantSettings) -> Result<Tenant> {
    let client = configured_client(name, t)?;
    let portal = client.portal().clone();
    Ok(Tenant {
        name: name.to_owned(),
        backend: Arc::new(MdeBackend::new(client)),
        portal,
    })
}

/// The MDE client for a configured tenant.
pub fn configured_client(name: &str, t: &culprit_settings::TenantSettings) -> Result<MdeClient> {
    let cloud: Cloud = serde_json::from_value(serde_json::Value::String(t.cloud.clone()))
        .with_context(|| format!("tenants.{name}.cloud: unknown cloud {:?}", t.cloud))?;
    let mut cfg = ClientConfig::new(cloud, &t.tenant_id, &t.client_id, t.client_secret.clone());
    cfg.hunting_api = match t.hunting_api.as_str() {
        "mde" => culprit_mde::HuntingApi::Mde,
        _ => culprit_mde::HuntingApi::Graph,
    };
    cfg.timeout = std::time::Duration::from_secs(t.request_timeout_secs);
    cfg.danger_accept_invalid_certs = t.tls.danger_accept_invalid_certs;
    cfg.ca_file = Some(PathBuf::from(&t.tls.ca_file)).filter(|_| !t.tls.ca_file.is_empty());
    cfg.proxy = Some(t.proxy.clone()).filter(|p| !p.is_empty());
    cfg.no_proxy = t.no_proxy.clone();
    let mut endpoints = cloud.endpoints();
    let e = &t.endpoints;
    for (field, value, slot) in [
        ("login", &e.login, &mut endpoints.login),
        ("graph", &e.graph, &mut endpoints.graph),
        ("mde_api", &e.mde_api, &mut endpoints.mde_api),
        ("portal", &e.portal, &mut endpoints.portal),
    ] {
        if !value.is_empty() {
            *slot = Url::parse(value)
                .with_context(|| format!("tenants.{name}.endpoints.{field}: {value:?}"))?;
        }
    }
    cfg.endpoints = Some(endpoints);
    MdeClient::new(cfg).with_context(|| format!("tenants.{name}"))
}
