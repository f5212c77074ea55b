//! `culprit mde check` against the twin: all green with every role, a named failure and a
//! non-zero exit without `Machine.Isolate`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a panic is the test failure report

use std::path::Path;
use std::process::Command;

use culprit_mde_twin::config::all_roles;
use culprit_mde_twin::{ClientConfig, TenantConfig, Twin, TwinConfig};
use secrecy::SecretString;

const TENANT: &str = "5f1c8a2e-0000-4000-8000-00000000abcd";
const CLIENT: &str = "6a2b9c3d-0000-4000-8000-00000000abcd";
const SECRET: &str = "twin-secret-for-mde-check";

async fn twin(roles: Vec<String>) -> culprit_mde_twin::TwinHandle {
    let scenario = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/scenarios/lsass_01");
    let config = TwinConfig {
        tenants: vec![TenantConfig {
            tenant_id: TENANT.into(),
            clients: vec![ClientConfig {
                client_id: CLIENT.into(),
                client_secret: SecretString::from(SECRET),
                roles,
            }],
            data_dirs: vec![scenario],
        }],
        ..TwinConfig::default()
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    Twin::start(config, listener).await.unwrap()
}

fn config_file(dir: &Path, base: &str) -> std::path::PathBuf {
    let path = dir.join("culprit.toml");
    let text = format!(
        "[tenants.lab]\ntenant_id = \"{TENANT}\"\nclient_id = \"{CLIENT}\"\nclient_secret = \"\"\n\
         [tenants.lab.endpoints]\nlogin = \"{base}\"\ngraph = \"{base}\"\nmde_api = \"{base}\"\n"
    );
    std::fs::write(&path, text).unwrap();
    path
}

fn run_check(config: &Path) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_culprit"))
        .args(["mde", "check", "--config"])
        .arg(config)
        // The secret comes from the environment, as the example configuration advises.
        .env("CULPRIT__TENANTS__LAB__CLIENT_SECRET", SECRET)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(!stdout.contains(SECRET), "the secret never prints");
    (out.status.success(), stdout)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_check_passes_with_every_role() {
    let t = twin(all_roles()).await;
    let dir = tempfile::tempdir().unwrap();
    let (ok, out) = run_check(&config_file(dir.path(), &t.base_url()));
    assert!(ok, "{out}");
    assert!(out.contains("everything Culprit needs works"), "{out}");
    assert_eq!(out.matches("ok  ").count(), 5, "{out}");
    t.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_role_is_named_and_fails_the_check() {
    let roles = all_roles()
        .into_iter()
        .filter(|r| r != "Machine.Isolate")
        .collect();
    let t = twin(roles).await;
    let dir = tempfile::tempdir().unwrap();
    let (ok, out) = run_check(&config_file(dir.path(), &t.base_url()));
    assert!(
        !ok,
        "exit code is non-zero when a permission is missing:\n{out}"
    );
    let line = out
        .lines()
        .find(|l| l.contains("Machine.Isolate"))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(
        line.contains("FAIL") && line.contains("admin consent"),
        "{line}"
    );
    assert!(out.contains("1 check failed"), "{out}");
    t.shutdown().await;
}
