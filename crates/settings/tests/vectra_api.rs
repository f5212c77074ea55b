#![allow(clippy::unwrap_used, clippy::expect_used)]
//! `vectra_api` sources: the documented example's source validates, mistakes are named by key,
//! and secrets come from the environment without showing in the rendered settings.

use std::path::PathBuf;

use culprit_settings::Settings;

fn example() -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../deploy/culprit.example.toml");
    std::fs::read_to_string(path).unwrap()
}

/// The example's commented `vectra_rux` source, uncommented.
fn example_source() -> String {
    let text = example();
    let start = text.find("# [ingest.sources.vectra_rux]").unwrap();
    text[start..]
        .lines()
        .take_while(|l| l.starts_with('#'))
        .map(|l| l.strip_prefix("# ").unwrap_or(""))
        .filter(|l| !l.starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n")
}

fn load(extra: &str, env: &[(&str, &str)]) -> Result<Settings, String> {
    let text = example().replace("[ingest.sources]\n", "") + "\n" + extra + "\n";
    let path = std::env::temp_dir().join(format!(
        "culprit-vectra-api-{}-{:x}.toml",
        std::process::id(),
        rand_bits(extra)
    ));
    std::fs::write(&path, text).unwrap();
    // The example's tenant needs its secret too; only the source's keys are under test.
    let env: Vec<(String, String)> = env
        .iter()
        .chain(&[("CULPRIT__TENANTS__ACME__CLIENT_SECRET", "tenant-secret")])
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    let loaded = Settings::load_from(Some(&path), &env);
    let _ = std::fs::remove_file(&path);
    let s = loaded.map_err(|e| e.to_string())?;
    s.validate().map_err(|e| e.to_string())?;
    Ok(s)
}

fn rand_bits(s: &str) -> u64 {
    s.bytes().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100000001b3)
    })
}

#[test]
fn the_documented_source_validates_with_its_secret_from_the_environment() {
    let src = example_source();
    assert!(src.contains("kind = \"vectra_api\""), "{src}");
    let with_id = src.replace("client_id = \"\"", "client_id = \"culprit\"");
    let secret = "s3cr3t-from-env-77";
    let s = load(
        &with_id,
        &[(
            "CULPRIT__INGEST__SOURCES__VECTRA_RUX__API__CLIENT_SECRET",
            secret,
        )],
    )
    .unwrap();
    let api = &s.ingest.sources["vectra_rux"].api;
    assert_eq!(api.mode, "events");
    assert_eq!(api.page_size, 500);
    let shown = toml::to_string(&s).unwrap();
    assert!(
        !shown.contains(secret),
        "secrets are redacted when rendered"
    );
    assert!(!format!("{s:?}").contains(secret));

    // Without the secret: named, with the variable to set.
    let err = load(&with_id, &[]).unwrap_err();
    assert!(
        err.contains("ingest.sources.vectra_rux.api.client_secret")
            && err.contains("CULPRIT__INGEST__SOURCES__VECTRA_RUX__API__CLIENT_SECRET"),
        "{err}"
    );
}

#[test]
fn each_mistake_is_named_by_its_key() {
    let src = example_source().replace("client_id = \"\"", "client_id = \"culprit\"");
    let env = [(
        "CULPRIT__INGEST__SOURCES__VECTRA_RUX__API__CLIENT_SECRET",
        "x",
    )];
    let cases = [
        (
            "url = \"https://123456789.uw2.portal.vectra.ai\"",
            "url = \"ftp://x\"",
            "api.url",
        ),
        ("auth = \"oauth\"", "auth = \"basic\"", "api.auth"),
        ("auth = \"oauth\"", "auth = \"token\"", "api.api_token"),
        ("mode = \"events\"", "mode = \"stream\"", "api.mode"),
        (
            "api_version = \"v3.3\"",
            "api_version = \"3.3\"",
            "api.api_version",
        ),
        ("page_size = 500", "page_size = 0", "api.page_size"),
        (
            "poll_interval_secs = 30",
            "poll_interval_secs = 0",
            "api.poll_interval_secs",
        ),
        (
            "start_checkpoint = \"\"",
            "start_checkpoint = \"yesterday\"",
            "api.start_checkpoint",
        ),
    ];
    for (from, to, key) in cases {
        assert!(src.contains(from), "{from}");
        let err = load(&src.replace(from, to), &env).unwrap_err();
        assert!(
            err.contains(&format!("ingest.sources.vectra_rux.{key}")),
            "{to}: {err}"
        );
    }
    let err = load(&src.replace("page_size = 500", "page_sise = 5"), &env).unwrap_err();
    assert!(err.contains("page_sise"), "{err}");
}
