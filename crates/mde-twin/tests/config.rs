//! The twin's configuration: TOML with defaults, unknown keys rejected, secrets hidden, bad
//! settings and bad data refused at start with the field or file named.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use culprit_mde_twin::{Twin, TwinConfig, TwinError};

const TOML: &str = r#"
token_lifetime_secs = 600

[clock]
start = "2023-08-16T05:10:00Z"
scale = 60.0

[limits]
calls_per_minute = 10

[faults]
seed = 7
error_rate_5xx = 0.1

[[tenants]]
tenant_id = "contoso.example"
data_dirs = ["a", "b"]

[[tenants.clients]]
client_id = "app"
client_secret = "hunter2"
roles = ["AdvancedQuery.Read.All"]
"#;

#[test]
fn toml_config_with_defaults_for_the_rest() {
    let cfg: TwinConfig = toml::from_str(TOML).unwrap();
    assert_eq!(cfg.token_lifetime_secs, 600);
    assert_eq!(cfg.clock.scale, 60.0);
    assert_eq!(
        cfg.clock.start.map(|t| t.to_kusto_string()).as_deref(),
        Some("2023-08-16T05:10:00.0000000Z")
    );
    assert_eq!(cfg.limits.calls_per_minute, 10);
    assert_eq!(cfg.limits.calls_per_hour, 1500);
    assert_eq!(cfg.limits.row_cap, 100_000);
    assert_eq!(cfg.limits.timeout_secs, 200.0);
    assert_eq!(cfg.faults.seed, 7);
    assert_eq!(cfg.tenants[0].data_dirs.len(), 2);
    assert_eq!(cfg.tenants[0].clients[0].roles, ["AdvancedQuery.Read.All"]);
    assert!(
        !format!("{cfg:?}").contains("hunter2"),
        "secrets stay out of Debug"
    );

    let defaults = TwinConfig::default();
    assert_eq!(defaults.token_lifetime_secs, 3599);
    assert_eq!(defaults.limits.calls_per_minute, 45);
}

#[test]
fn unknown_keys_are_rejected_by_name() {
    let err = toml::from_str::<TwinConfig>("[limits]\ncalls_per_minit = 5\n").unwrap_err();
    assert!(err.to_string().contains("calls_per_minit"), "{err}");
}

#[test]
fn single_tenant_grants_all_four_roles() {
    let cfg = TwinConfig::single_tenant("t", "c", "s", vec![]);
    let roles = &cfg.tenants[0].clients[0].roles;
    for r in [
        "ThreatHunting.Read.All",
        "AdvancedQuery.Read.All",
        "Machine.Read.All",
        "Machine.Isolate",
    ] {
        assert!(roles.iter().any(|x| x == r), "{r}");
    }
}

async fn start_err(cfg: TwinConfig) -> TwinError {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    Twin::start(cfg, listener).await.unwrap_err()
}

#[tokio::test]
async fn bad_settings_are_refused_naming_the_field() {
    let mut cfg = config();
    cfg.faults.drop_rate = 1.5;
    let err = start_err(cfg).await.to_string();
    assert!(err.contains("faults.drop_rate"), "{err}");

    let mut cfg = config();
    cfg.clock.scale = 0.0;
    assert!(start_err(cfg).await.to_string().contains("clock.scale"));

    let mut cfg = config();
    cfg.tenants
        .push(tenant(&TENANT.to_uppercase(), vec![scenario()]));
    assert!(
        start_err(cfg)
            .await
            .to_string()
            .contains("configured twice")
    );
}

#[tokio::test]
async fn bad_data_is_refused_naming_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let err = start_err(TwinConfig::single_tenant(
        "t",
        "c",
        "s",
        vec![dir.path().into()],
    ))
    .await;
    assert!(matches!(err, TwinError::Data { .. }), "{err}");

    std::fs::create_dir(dir.path().join("mde")).unwrap();
    std::fs::write(
        dir.path().join("mde/DeviceInfo.jsonl"),
        "{\"DeviceId\":\"a\"}\n{not json\n",
    )
    .unwrap();
    let err = start_err(TwinConfig::single_tenant(
        "t",
        "c",
        "s",
        vec![dir.path().into()],
    ))
    .await
    .to_string();
    assert!(
        err.contains("DeviceInfo.jsonl") && err.contains("line 2"),
        "{err}"
    );
}

#[tokio::test]
async fn an_unknown_table_is_loaded_with_an_inferred_schema() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("mde")).unwrap();
    std::fs::write(
        dir.path().join("mde/CustomTable.jsonl"),
        "{\"Timestamp\":\"2023-08-16T05:00:00.0000000Z\",\"Count\":3,\"Name\":\"x\"}\n",
    )
    .unwrap();
    let env = Env::start(TwinConfig::single_tenant(
        TENANT,
        APP,
        SECRET,
        vec![dir.path().into()],
    ))
    .await;
    let token = env.graph_token().await;
    let r = env.graph_hunt(&token, "CustomTable").await;
    assert_eq!(r.status, 200, "{}", r.body);
    let types: Vec<(String, String)> = r.body["schema"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap().into(),
                c["type"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert!(
        types.contains(&("Count".into(), "Int64".into())),
        "{types:?}"
    );
    assert!(
        types.contains(&("Timestamp".into(), "DateTime".into())),
        "{types:?}"
    );
    assert_eq!(r.body["results"][0]["Name"], "x");
}
