//! The Microsoft clouds Culprit talks to: one table of hosts and token audiences.

use serde::{Deserialize, Serialize};
use url::Url;

use crate::error::MdeError;

/// A Microsoft cloud (and, for commercial, the regional MDE API hosts).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Cloud {
    #[default]
    Commercial,
    CommercialUs,
    CommercialEu,
    CommercialUk,
    Gcc,
    GccHigh,
    Dod,
}

/// One row of the cloud table: hosts and the token audiences (v1 `resource`; the v2 scope is
/// the audience plus `/.default`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CloudInfo {
    pub login: &'static str,
    pub graph: &'static str,
    pub mde_api: &'static str,
    pub portal: &'static str,
    pub mde_audience: &'static str,
    pub graph_audience: &'static str,
}

const COMMERCIAL_MDE_AUDIENCE: &str = "https://api.securitycenter.microsoft.com";
const GOV_MDE_AUDIENCE: &str = "https://api-gov.securitycenter.microsoft.us";

const fn commercial(mde_api: &'static str) -> CloudInfo {
    CloudInfo {
        login: "https://login.microsoftonline.com",
        graph: "https://graph.microsoft.com",
        mde_api,
        portal: "https://security.microsoft.com",
        mde_audience: COMMERCIAL_MDE_AUDIENCE,
        graph_audience: "https://graph.microsoft.com",
    }
}

impl Cloud {
    pub const ALL: [Cloud; 7] = [
        Cloud::Commercial,
        Cloud::CommercialUs,
        Cloud::CommercialEu,
        Cloud::CommercialUk,
        Cloud::Gcc,
        Cloud::GccHigh,
        Cloud::Dod,
    ];

    /// The table (sources: defender-docs `gov.md`, msticpy `cloud_mappings.py`, Graph
    /// national-cloud docs; see shared/reference/mde-api.md §1.2 and §4).
    pub const fn info(self) -> CloudInfo {
        match self {
            Cloud::Commercial => commercial("https://api.securitycenter.microsoft.com"),
            Cloud::CommercialUs => commercial("https://api-us.securitycenter.microsoft.com"),
            Cloud::CommercialEu => commercial("https://api-eu.securitycenter.microsoft.com"),
            Cloud::CommercialUk => commercial("https://api-uk.securitycenter.microsoft.com"),
            // GCC signs in and uses Graph in the commercial cloud, but has its own MDE host.
            Cloud::Gcc => CloudInfo {
                mde_api: "https://api-gcc.securitycenter.microsoft.us",
                mde_audience: "https://api-gcc.securitycenter.microsoft.us",
                ..commercial("")
            },
            Cloud::GccHigh => CloudInfo {
                login: "https://login.microsoftonline.us",
                graph: "https://graph.microsoft.us",
                mde_api: GOV_MDE_AUDIENCE,
                portal: "https://security.microsoft.us",
                mde_audience: GOV_MDE_AUDIENCE,
                graph_audience: "https://graph.microsoft.us",
            },
            Cloud::Dod => CloudInfo {
                login: "https://login.microsoftonline.us",
                graph: "https://dod-graph.microsoft.us",
                mde_api: GOV_MDE_AUDIENCE,
                portal: "https://security.apps.mil",
                mde_audience: GOV_MDE_AUDIENCE,
                graph_audience: "https://dod-graph.microsoft.us",
            },
        }
    }

    /// The cloud's public endpoints.
    pub fn endpoints(self) -> Endpoints {
        let info = self.info();
        Endpoints {
            login: table_url(info.login),
            graph: table_url(info.graph),
            mde_api: table_url(info.mde_api),
            portal: table_url(info.portal),
        }
    }
}

/// Parses a literal from the table above. Only compile-time constants reach this (never server
/// or user input), and the cloud-table test parses every one of them.
#[allow(clippy::expect_used)]
fn table_url(literal: &'static str) -> Url {
    Url::parse(literal).expect("cloud table literals are valid URLs")
}

/// Base URLs the client calls. Overridable, e.g. to point at the twin on loopback.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoints {
    /// Entra ID login host (`{login}/{tenant}/oauth2/v2.0/token`).
    pub login: Url,
    /// Microsoft Graph root (`{graph}/v1.0/security/runHuntingQuery`).
    pub graph: Url,
    /// MDE API root (`{mde_api}/api/machines`, `{mde_api}/api/advancedqueries/run`).
    pub mde_api: Url,
    /// Defender portal root, for links.
    pub portal: Url,
}

impl Endpoints {
    /// All four on one base URL: the twin serves every API on one port.
    pub fn single(base: &Url) -> Self {
        Endpoints {
            login: base.clone(),
            graph: base.clone(),
            mde_api: base.clone(),
            portal: base.clone(),
        }
    }

    /// HTTPS everywhere, except plain HTTP to a loopback host (the twin).
    pub fn validate(&self) -> Result<(), MdeError> {
        for (field, url) in [
            ("endpoints.login", &self.login),
            ("endpoints.graph", &self.graph),
            ("endpoints.mde_api", &self.mde_api),
            ("endpoints.portal", &self.portal),
        ] {
            check_url(field, url)?;
        }
        Ok(())
    }

    pub(crate) fn all_loopback(&self) -> bool {
        [&self.login, &self.graph, &self.mde_api]
            .into_iter()
            .all(is_loopback)
    }
}

fn check_url(field: &'static str, url: &Url) -> Result<(), MdeError> {
    let invalid = |reason: String| MdeError::InvalidConfig { field, reason };
    if url.cannot_be_a_base() || url.host().is_none() {
        return Err(invalid(format!(
            "`{url}` is not an absolute http(s) URL with a host"
        )));
    }
    match url.scheme() {
        "https" => Ok(()),
        "http" if is_loopback(url) => Ok(()),
        "http" => Err(invalid(format!(
            "plain HTTP is accepted only for loopback hosts (the twin); use https for `{}`",
            url.host_str().unwrap_or_default()
        ))),
        other => Err(invalid(format!("scheme `{other}` is not http or https"))),
    }
}

pub(crate) fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

/// `base` joined with a relative path, treating `base` as a directory whatever its trailing
/// slash.
pub(crate) fn join(base: &Url, rel: &str) -> Result<Url, MdeError> {
    let mut dir = base.clone();
    if !dir.path().ends_with('/') {
        let p = format!("{}/", dir.path());
        dir.set_path(&p);
    }
    dir.join(rel).map_err(|e| MdeError::InvalidInput {
        field: "url",
        reason: format!("cannot join `{rel}` to `{base}`: {e}"),
    })
}
