//! `culprit mde check`: the operator's first step when "no process context appears". Tests a
//! tenant's configuration end to end and says in plain words what is missing.

use std::fmt::Write as _;

use culprit_mde::{Audience, HuntingApi, MdeClient, MdeError};

/// One line of the check: what was tried, whether it worked, what to do if not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckLine {
    pub what: String,
    pub ok: bool,
    pub detail: String,
}

/// The roles each part of Culprit needs, by audience.
fn needed(api: HuntingApi) -> Vec<(Audience, &'static str, &'static str)> {
    let hunting = match api {
        HuntingApi::Graph => (
            Audience::Graph,
            "ThreatHunting.Read.All",
            "hunting (Microsoft Graph)",
        ),
        HuntingApi::Mde => (Audience::Mde, "AdvancedQuery.Read.All", "hunting (MDE API)"),
    };
    vec![
        hunting,
        (Audience::Mde, "Machine.Read.All", "device look-ups"),
        (
            Audience::Mde,
            "Machine.Isolate",
            "isolation (response actions)",
        ),
    ]
}

/// Runs every check; all must pass for the tenant to be usable.
pub async fn check(client: &MdeClient) -> Vec<CheckLine> {
    let api = client.config().hunting_api;
    let mut lines = Vec::new();
    for (audience, role, purpose) in needed(api) {
        let line = match client.granted_roles(audience).await {
            Ok(Some(roles)) if roles.iter().any(|r| r == role) => CheckLine {
                what: format!("{role} for {purpose}"),
                ok: true,
                detail: "granted".into(),
            },
            Ok(Some(_)) => CheckLine {
                what: format!("{role} for {purpose}"),
                ok: false,
                detail: format!(
                    "not granted: add the application permission {role} to the app registration and grant admin consent"
                ),
            },
            Ok(None) => CheckLine {
                what: format!("{role} for {purpose}"),
                ok: false,
                detail: "the token names no roles: grant application (not delegated) permissions and admin consent".into(),
            },
            Err(e) => token_failure(role, purpose, &e),
        };
        lines.push(line);
    }
    let hunt = client
        .hunt("DeviceInfo | take 1 | project DeviceId", None)
        .await;
    lines.push(match hunt {
        Ok(r) => CheckLine {
            what: "one hunting query".into(),
            ok: true,
            detail: format!(
                "answered ({} row{})",
                r.table.len(),
                if r.table.len() == 1 { "" } else { "s" }
            ),
        },
        Err(e) => CheckLine {
            what: "one hunting query".into(),
            ok: false,
            detail: e.to_string(),
        },
    });
    let machines = client.machines_top(1).await;
    lines.push(match machines {
        Ok(m) => CheckLine {
            what: "one machine look-up".into(),
            ok: true,
            detail: format!(
                "answered ({} machine{})",
                m.len(),
                if m.len() == 1 { "" } else { "s" }
            ),
        },
        Err(e) => CheckLine {
            what: "one machine look-up".into(),
            ok: false,
            detail: e.to_string(),
        },
    });
    lines
}

fn token_failure(role: &str, purpose: &str, e: &MdeError) -> CheckLine {
    CheckLine {
        what: format!("{role} for {purpose}"),
        ok: false,
        detail: format!("no token: {e}"),
    }
}

/// The report for people.
pub fn render(tenant: &str, lines: &[CheckLine]) -> String {
    let mut out = format!("tenant {tenant}\n");
    for l in lines {
        let mark = if l.ok { "ok  " } else { "FAIL" };
        let _ = writeln!(out, "  {mark} {:<48} {}", l.what, l.detail);
    }
    let failed = lines.iter().filter(|l| !l.ok).count();
    let _ = writeln!(
        out,
        "{}",
        if failed == 0 {
            "everything Culprit needs works".to_owned()
        } else {
            format!(
                "{failed} check{} failed",
                if failed == 1 { "" } else { "s" }
            )
        }
    );
    out
}
