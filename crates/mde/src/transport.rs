//! The HTTP client's transport: trusted CAs, verification, and the proxy.

use std::time::Duration as StdDuration;

use secrecy::ExposeSecret;
use url::Url;

use crate::cloud::Endpoints;
use crate::config::{ClientConfig, user_agent};
use crate::error::MdeError;

/// Reached directly even with a proxy: the twin and local gateways live there.
const LOOPBACK: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

pub(crate) fn build_http(
    cfg: &ClientConfig,
    endpoints: &Endpoints,
) -> Result<reqwest::Client, MdeError> {
    let b = reqwest::Client::builder()
        .user_agent(user_agent(cfg.user_agent_suffix.as_deref()))
        .timeout(cfg.timeout)
        // Microsoft's APIs do not redirect; following one could carry the token elsewhere.
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(cfg.timeout.min(StdDuration::from_secs(10)));
    let b = with_tls(b, cfg)?;
    let b = with_proxy(b, cfg, endpoints)?;
    b.build().map_err(|e| MdeError::InvalidConfig {
        field: "http client",
        reason: e.to_string(),
    })
}

fn with_tls(
    mut b: reqwest::ClientBuilder,
    cfg: &ClientConfig,
) -> Result<reqwest::ClientBuilder, MdeError> {
    let bad = |reason: String| MdeError::InvalidConfig {
        field: "tls.ca_file",
        reason,
    };
    match &cfg.ca_file {
        Some(path) => {
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
        None if cfg.ca_only => {
            return Err(bad(
                "is required when only it is trusted (ca_only)".to_owned()
            ));
        }
        None => {}
    }
    if cfg.ca_only {
        b = b.tls_built_in_root_certs(false);
    }
    if cfg.danger_accept_invalid_certs {
        tracing::warn!(
            "TLS certificate verification is OFF (danger_accept_invalid_certs): anyone on the \
             path can read the client secret and the telemetry; use this only in a lab"
        );
        b = b.danger_accept_invalid_certs(true);
    }
    Ok(b)
}

fn with_proxy(
    b: reqwest::ClientBuilder,
    cfg: &ClientConfig,
    endpoints: &Endpoints,
) -> Result<reqwest::ClientBuilder, MdeError> {
    let Some(p) = cfg.proxy.as_deref() else {
        // The twin on loopback must never go through an environment proxy.
        return Ok(if endpoints.all_loopback() {
            b.no_proxy()
        } else {
            b
        });
    };
    let bad = |field: &'static str, reason: &str| MdeError::InvalidConfig {
        field,
        reason: reason.to_owned(),
    };
    // The proxy URL may hold credentials: errors never repeat it.
    let url = Url::parse(p).map_err(|_| bad("proxy", "not a URL"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(bad("proxy", "scheme must be http or https"));
    }
    let mut exempt: Vec<&str> = LOOPBACK.to_vec();
    for (i, host) in cfg.no_proxy.iter().enumerate() {
        let host = host.trim();
        if host.is_empty() || host.contains([',', ' ']) {
            return Err(MdeError::InvalidConfig {
                field: "no_proxy",
                reason: format!("entry {i} must be one non-empty host, domain, IP or CIDR"),
            });
        }
        exempt.push(host);
    }
    let mut proxy = reqwest::Proxy::all(url)
        .map_err(|_| bad("proxy", "not a usable proxy URL"))?
        .no_proxy(reqwest::NoProxy::from_string(&exempt.join(",")));
    if let Some(auth) = &cfg.proxy_auth {
        proxy = proxy.basic_auth(&auth.username, auth.password.expose_secret());
    }
    Ok(b.proxy(proxy))
}
