//! The layering: defaults → TOML file → environment, merged as TOML values and then
//! deserialised once, so an unknown key anywhere is caught with its full path.

use secrecy::SecretString;
use serde::Serializer;

use crate::Settings;

/// Environment variables under this prefix override the file: `CULPRIT__HUNTER__BATCH_WINDOW_MS=500`.
pub const ENV_PREFIX: &str = "CULPRIT__";

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("cannot read configuration file {path}: {reason}")]
    Read { path: String, reason: String },
    #[error("configuration is not valid TOML: {0}")]
    Syntax(String),
    #[error("configuration key `{path}`: {reason}")]
    Key { path: String, reason: String },
    #[error("environment variable {var}: {reason}")]
    Env { var: String, reason: String },
    #[error("configuration problems:\n  - {}", .0.join("\n  - "))]
    Invalid(Vec<String>),
}

/// Secrets serialise as a placeholder: the defaults layer is built by serialising, and a
/// printed configuration must not leak.
pub(crate) fn redact<S: Serializer>(_: &SecretString, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str("<redacted>")
}

pub(crate) fn build(
    file: Option<&str>,
    env: &[(String, String)],
) -> Result<Settings, SettingsError> {
    let mut root = toml::Table::new();
    if let Some(text) = file {
        let parsed: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| SettingsError::Syntax(e.to_string()))?;
        root = parsed;
    }
    for (var, value) in env {
        let Some(rest) = var.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        let path: Vec<String> = rest.split("__").map(|p| p.to_ascii_lowercase()).collect();
        if path.iter().any(String::is_empty) {
            return Err(SettingsError::Env {
                var: var.clone(),
                reason: "empty path segment".into(),
            });
        }
        set_path(&mut root, &path, env_value(value)).map_err(|reason| SettingsError::Env {
            var: var.clone(),
            reason,
        })?;
    }
    let de = toml::Value::Table(root);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        SettingsError::Key {
            path,
            reason: e.into_inner().to_string(),
        }
    })
}

/// An environment value is TOML when it parses as a TOML value (numbers, booleans, arrays),
/// else a plain string: `CULPRIT__BUS__KIND=rabbitmq` needs no quotes.
fn env_value(raw: &str) -> toml::Value {
    let probe = format!("v = {raw}");
    match probe.parse::<toml::Table>() {
        Ok(mut t) => t
            .remove("v")
            .unwrap_or_else(|| toml::Value::String(raw.to_owned())),
        Err(_) => toml::Value::String(raw.to_owned()),
    }
}

fn set_path(root: &mut toml::Table, path: &[String], value: toml::Value) -> Result<(), String> {
    let Some((last, parents)) = path.split_last() else {
        return Err("no key".into());
    };
    let mut cur = root;
    for p in parents {
        let entry = cur
            .entry(p.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        cur = match entry {
            toml::Value::Table(t) => t,
            _ => return Err(format!("`{p}` is not a section")),
        };
    }
    cur.insert(last.clone(), value);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn defaults_need_no_file() {
        let s = build(None, &[]).unwrap();
        assert_eq!(s.hunter.calls_per_minute, 45);
        assert_eq!(s.bus.kind, "in_process");
        s.validate().unwrap();
    }

    #[test]
    fn file_then_environment_override() {
        let file = "[hunter]\nbatch_window_ms = 500\ncalls_per_minute = 30\n";
        let s = build(
            Some(file),
            &env(&[
                ("CULPRIT__HUNTER__CALLS_PER_MINUTE", "10"),
                ("CULPRIT__BUS__KIND", "rabbitmq"),
            ]),
        )
        .unwrap();
        assert_eq!(s.hunter.batch_window_ms, 500);
        assert_eq!(s.hunter.calls_per_minute, 10);
        assert_eq!(s.bus.kind, "rabbitmq");
    }

    #[test]
    fn unknown_keys_are_named_with_their_path() {
        let err = build(Some("[hunter]\nbatch_windw_ms = 5\n"), &[]).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("hunter"), "{msg}");
        assert!(msg.contains("batch_windw_ms"), "{msg}");
        let err = build(None, &env(&[("CULPRIT__NOPE__X", "1")])).unwrap_err();
        assert!(err.to_string().contains("nope"), "{err}");
    }

    #[test]
    fn missing_tenant_keys_are_named() {
        let err = build(
            Some("[tenants.acme]\nclient_id = \"c\"\nclient_secret = \"s\"\n"),
            &[],
        )
        .unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("tenants.acme"), "{msg}");
        assert!(msg.contains("tenant_id"), "{msg}");
    }

    #[test]
    fn secrets_come_from_the_environment_and_never_print() {
        let file = "[tenants.acme]\ntenant_id = \"t\"\nclient_id = \"c\"\nclient_secret = \"\"\n";
        let s = build(
            Some(file),
            &env(&[(
                "CULPRIT__TENANTS__ACME__CLIENT_SECRET",
                "hunter2-very-secret",
            )]),
        )
        .unwrap();
        let t = &s.tenants["acme"];
        assert_eq!(t.client_secret.expose_secret(), "hunter2-very-secret");
        assert!(!format!("{s:?}").contains("hunter2"));
        assert!(!toml::to_string(&s).unwrap().contains("hunter2"));
    }

    #[test]
    fn invalid_values_are_listed_by_key() {
        let s = build(
            Some("[bus]\nkind = \"kafka\"\n[store]\nkind = \"etcd\"\n"),
            &[],
        )
        .unwrap();
        let msg = s.validate().unwrap_err().to_string();
        assert!(
            msg.contains("bus.kind") && msg.contains("store.kind"),
            "{msg}"
        );
    }

    #[test]
    fn telemetry_addresses_are_checked() {
        let bad = "[telemetry]\nmetrics_listen = \"9464\"\notlp_endpoint = \"collector:4318\"\n";
        let msg = build(Some(bad), &[])
            .unwrap()
            .validate()
            .unwrap_err()
            .to_string();
        assert!(msg.contains("telemetry.metrics_listen"), "{msg}");
        assert!(msg.contains("telemetry.otlp_endpoint"), "{msg}");
        let good = "[telemetry]\nmetrics_listen = \"0.0.0.0:9464\"\notlp_endpoint = \"http://collector:4318\"\n";
        build(Some(good), &[]).unwrap().validate().unwrap();
    }
}

#[cfg(test)]
mod example_file {
    use crate::Settings;

    /// The documented example must stay loadable and list every key the types know.
    #[test]
    fn example_config_is_valid_and_complete() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../deploy/culprit.example.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        let s = super::build(Some(&text), &[]).unwrap();
        assert_eq!(s.tenants.len(), 1);
        let file: toml::Table = text.parse().unwrap();
        let defaults: toml::Table = toml::to_string(&Settings::default())
            .unwrap()
            .parse()
            .unwrap();
        for (section, keys) in &defaults {
            let Some(keys) = keys.as_table() else {
                continue;
            };
            let in_file = file[section].as_table().unwrap();
            for k in keys.keys() {
                assert!(in_file.contains_key(k), "{section}.{k} is not documented");
            }
        }
    }
}
