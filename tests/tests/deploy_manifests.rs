//! `deploy/` and `docker-compose.yml` are checked by parsing, since no cluster and no Docker
//! run in CI: every YAML file parses (all documents), and the structural facts the services
//! rely on hold — one Deployment per role with probes and limits, secrets referenced and never
//! inlined, KEDA scaling the hunters on `culprit.hunt`, the compose stack complete, and the
//! configuration accepted by the real settings loader.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use yaml_rust2::{Yaml, YamlLoader};

const ROLES: [&str; 4] = ["ingest", "hunter", "correlator", "gateway"];
const SECRET: &str = "culprit-secrets";
const SECRET_KEYS: [&str; 4] = [
    "amqp-url",
    "api-key-hashes",
    "mde-client-secret",
    "redis-url",
];
const HUNT_QUEUE: &str = "culprit.hunt";
/// Kept out of kustomization.yaml so an apply never overwrites real secret values.
const SECRET_EXAMPLE: &str = "secret.example.yaml";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn k8s_dir() -> PathBuf {
    repo().join("deploy/k8s")
}

fn load(path: &Path) -> Vec<Yaml> {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    YamlLoader::load_from_str(&text)
        .unwrap_or_else(|e| panic!("{} is not valid YAML: {e}", path.display()))
}

fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let entries =
        std::fs::read_dir(dir).unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()));
    for entry in entries {
        let path = entry
            .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
            .path();
        if path.is_dir() {
            out.extend(yaml_files(&path));
        } else if path.extension().is_some_and(|x| x == "yaml" || x == "yml") {
            out.push(path);
        }
    }
    out.sort();
    out
}

/// Follows a path of map keys; `BadValue` when any is missing.
fn at<'a>(y: &'a Yaml, path: &[&str]) -> &'a Yaml {
    path.iter().fold(y, |node, key| &node[*key])
}

fn text<'a>(y: &'a Yaml, path: &[&str]) -> &'a str {
    at(y, path).as_str().unwrap_or("")
}

fn list(y: &Yaml) -> &[Yaml] {
    y.as_vec().map(Vec::as_slice).unwrap_or(&[])
}

fn strings(y: &Yaml) -> Vec<&str> {
    list(y).iter().filter_map(Yaml::as_str).collect()
}

/// Resolves YAML merge keys (`<<: *anchor`), which compose files use and the parser leaves
/// as plain keys; keys written next to the merge win.
fn merged(y: &Yaml) -> Yaml {
    match y {
        Yaml::Hash(h) => {
            let mut out = yaml_rust2::yaml::Hash::new();
            if let Some(Yaml::Hash(base)) = h.get(&Yaml::String("<<".into())).map(merged) {
                out.extend(base);
            }
            for (k, v) in h {
                if k.as_str() != Some("<<") {
                    out.insert(k.clone(), merged(v));
                }
            }
            Yaml::Hash(out)
        }
        Yaml::Array(a) => Yaml::Array(a.iter().map(merged).collect()),
        other => other.clone(),
    }
}

/// A Kubernetes document with the file it came from, for messages.
struct Doc {
    file: String,
    yaml: Yaml,
}

impl Doc {
    fn kind(&self) -> &str {
        text(&self.yaml, &["kind"])
    }
    fn name(&self) -> &str {
        text(&self.yaml, &["metadata", "name"])
    }
}

fn docs_in(files: &[String]) -> Vec<Doc> {
    files
        .iter()
        .flat_map(|f| {
            load(&k8s_dir().join(f))
                .into_iter()
                .filter(|y| !y.is_null())
                .map(move |yaml| Doc {
                    file: f.clone(),
                    yaml,
                })
        })
        .collect()
}

fn kustomization() -> Yaml {
    load(&k8s_dir().join("kustomization.yaml")).remove(0)
}

/// The documents `kubectl apply -k deploy/k8s` creates.
fn resources() -> Vec<Doc> {
    let names: Vec<String> = strings(&kustomization()["resources"])
        .into_iter()
        .map(str::to_owned)
        .collect();
    docs_in(&names)
}

/// A patch file and the `key=value` label it targets.
struct Patch {
    label: (String, String),
    doc: Doc,
}

fn patches() -> Vec<Patch> {
    list(&kustomization()["patches"])
        .iter()
        .map(|p| {
            assert_eq!(
                text(p, &["target", "kind"]),
                "Deployment",
                "patch target kind"
            );
            let selector = text(p, &["target", "labelSelector"]);
            let (k, v) = selector
                .split_once('=')
                .unwrap_or_else(|| panic!("patch selector {selector:?} is not key=value"));
            let path = text(p, &["path"]).to_owned();
            let doc = docs_in(&[path]).remove(0);
            Patch {
                label: (k.to_owned(), v.to_owned()),
                doc,
            }
        })
        .collect()
}

fn deployments(docs: &[Doc]) -> Vec<&Doc> {
    docs.iter().filter(|d| d.kind() == "Deployment").collect()
}

fn containers(d: &Doc) -> &[Yaml] {
    list(at(&d.yaml, &["spec", "template", "spec", "containers"]))
}

/// The role a Deployment runs: the value after `--role` in `culprit serve --role R`.
fn role_of(d: &Doc) -> String {
    let args = strings(&containers(d)[0]["args"]);
    assert_eq!(args.first(), Some(&"serve"), "{}: args {args:?}", d.file);
    let pos = args.iter().position(|a| *a == "--role");
    let role = pos.and_then(|i| args.get(i + 1)).copied().unwrap_or("");
    role.to_owned()
}

fn patches_for<'a>(d: &Doc, all: &'a [Patch]) -> Vec<&'a Patch> {
    all.iter()
        .filter(|p| text(&d.yaml, &["metadata", "labels", &p.label.0]) == p.label.1)
        .collect()
}

/// The container as kustomize renders it: its own fields, and those of every patch
/// container of the same name (lists are compared as sets elsewhere).
fn container_views<'a>(d: &'a Doc, all: &'a [Patch]) -> Vec<&'a Yaml> {
    let own = &containers(d)[0];
    let name = text(own, &["name"]);
    let mut views = vec![own];
    for p in patches_for(d, all) {
        views.extend(
            containers(&p.doc)
                .iter()
                .filter(|c| text(c, &["name"]) == name),
        );
    }
    views
}

fn env_entries<'a>(views: &[&'a Yaml]) -> Vec<&'a Yaml> {
    views.iter().flat_map(|c| list(&c["env"])).collect()
}

fn port_names(views: &[&Yaml]) -> BTreeSet<String> {
    views
        .iter()
        .flat_map(|c| list(&c["ports"]))
        .flat_map(|p| {
            [
                text(p, &["name"]).to_owned(),
                p["containerPort"].as_i64().unwrap_or(0).to_string(),
            ]
        })
        .collect()
}

fn k8s_files() -> Vec<String> {
    yaml_files(&k8s_dir())
        .iter()
        .filter_map(|p| p.file_name()?.to_str().map(str::to_owned))
        .collect()
}

#[test]
fn every_yaml_file_parses_with_all_its_documents() {
    let mut files = yaml_files(&repo().join("deploy"));
    files.push(repo().join("docker-compose.yml"));
    assert!(
        files.len() >= 10,
        "expected compose, collector and k8s files: {files:?}"
    );
    for f in &files {
        let docs = load(f);
        assert!(
            docs.iter().any(|d| !d.is_null()),
            "{} holds no document",
            f.display()
        );
    }
    let multi = load(&k8s_dir().join("services.yaml"));
    assert_eq!(
        multi.len(),
        2,
        "services.yaml holds the gateway and ingest Services"
    );
}

#[test]
fn every_kubernetes_document_has_api_version_kind_and_name() {
    let files: Vec<String> = k8s_files()
        .into_iter()
        .filter(|f| f != "kustomization.yaml")
        .collect();
    for d in docs_in(&files) {
        assert!(
            !text(&d.yaml, &["apiVersion"]).is_empty(),
            "{}: apiVersion",
            d.file
        );
        assert!(!d.kind().is_empty(), "{}: kind", d.file);
        assert!(
            !d.name().is_empty(),
            "{}: metadata.name of a {}",
            d.file,
            d.kind()
        );
    }
    let k = kustomization();
    assert_eq!(text(&k, &["kind"]), "Kustomization");
    assert!(text(&k, &["apiVersion"]).starts_with("kustomize.config.k8s.io/"));
}

#[test]
fn kustomization_uses_every_manifest_but_the_secret_example() {
    let k = kustomization();
    let mut used: BTreeSet<String> = strings(&k["resources"])
        .into_iter()
        .map(str::to_owned)
        .collect();
    used.extend(
        list(&k["patches"])
            .iter()
            .map(|p| text(p, &["path"]).to_owned()),
    );
    let present: BTreeSet<String> = k8s_files()
        .into_iter()
        .filter(|f| f != "kustomization.yaml" && f != SECRET_EXAMPLE)
        .collect();
    assert_eq!(used, present, "kustomization.yaml and deploy/k8s/ disagree");
    assert!(
        resources().iter().all(|d| d.kind() != "Secret"),
        "a Secret is applied"
    );
    assert!(resources().iter().any(|d| d.kind() == "Namespace"));
    assert_eq!(text(&k, &["namespace"]), "culprit");
}

#[test]
fn one_deployment_per_role_with_limits_and_matching_selectors() {
    let docs = resources();
    let deps = deployments(&docs);
    let roles: Vec<String> = deps.iter().map(|d| role_of(d)).collect();
    let mut sorted = roles.clone();
    sorted.sort();
    let mut expected: Vec<String> = ROLES.iter().map(|r| (*r).to_owned()).collect();
    expected.sort();
    assert_eq!(sorted, expected, "roles of the Deployments");
    for d in deps {
        let c = &containers(d)[0];
        for section in ["requests", "limits"] {
            for res in ["cpu", "memory"] {
                assert!(
                    !at(c, &["resources", section, res]).is_badvalue(),
                    "{}: resources.{section}.{res}",
                    d.file
                );
            }
        }
        let selector = at(&d.yaml, &["spec", "selector", "matchLabels"]);
        let labels = at(&d.yaml, &["spec", "template", "metadata", "labels"]);
        let selector = selector
            .as_hash()
            .unwrap_or_else(|| panic!("{}: selector", d.file));
        for (k, v) in selector {
            assert_eq!(
                labels[k.as_str().unwrap_or("")],
                *v,
                "{}: selector {k:?}",
                d.file
            );
        }
    }
}

#[test]
fn every_deployment_has_probes_of_its_kind() {
    let docs = resources();
    let all = patches();
    for d in deployments(&docs) {
        let views = container_views(d, &all);
        let ports = port_names(&views);
        for probe in ["livenessProbe", "readinessProbe"] {
            let found: Vec<&Yaml> = views
                .iter()
                .map(|c| &c[probe])
                .filter(|p| !p.is_badvalue())
                .collect();
            assert_eq!(
                found.len(),
                1,
                "{}: {probe} must be set exactly once",
                d.file
            );
            let p = found[0];
            if role_of(d) == "gateway" {
                let port = p["grpc"]["port"].as_i64().unwrap_or(0).to_string();
                assert!(
                    ports.contains(&port),
                    "{}: gRPC {probe} on port {port}",
                    d.file
                );
            } else {
                assert_eq!(
                    text(p, &["httpGet", "path"]),
                    "/healthz",
                    "{}: {probe}",
                    d.file
                );
                let port = text(p, &["httpGet", "port"]);
                assert!(ports.contains(port), "{}: {probe} port {port}", d.file);
            }
        }
        assert!(
            ports.contains("9090"),
            "{}: metrics port 9090 ({ports:?})",
            d.file
        );
    }
}

fn secret_refs<'a>(env: &[&'a Yaml]) -> Vec<(&'a str, &'a str)> {
    env.iter()
        .map(|e| at(e, &["valueFrom", "secretKeyRef"]))
        .filter(|r| !r.is_badvalue())
        .map(|r| (text(r, &["name"]), text(r, &["key"])))
        .collect()
}

#[test]
fn secrets_are_referenced_and_never_inlined() {
    let docs = resources();
    let all = patches();
    let mut keys = BTreeSet::new();
    for d in deployments(&docs) {
        let views = container_views(d, &all);
        let env = env_entries(&views);
        for (name, key) in secret_refs(&env) {
            assert_eq!(name, SECRET, "{}: secretKeyRef to {name}", d.file);
            keys.insert(key.to_owned());
        }
        for e in env {
            let var = text(e, &["name"]);
            let looks_secret = ["SECRET", "PASSWORD", "TOKEN", "API_KEY", "__URL"]
                .iter()
                .any(|s| var.contains(s));
            assert!(
                !looks_secret || e["value"].is_badvalue(),
                "{}: {var} is set inline; use a secretKeyRef",
                d.file
            );
        }
    }
    let expected: BTreeSet<String> = SECRET_KEYS.iter().map(|k| (*k).to_owned()).collect();
    assert_eq!(keys, expected, "keys of {SECRET} the Deployments read");
    let example = docs_in(&[SECRET_EXAMPLE.to_owned()]).remove(0);
    assert_eq!(example.name(), SECRET);
    let documented: BTreeSet<String> = at(&example.yaml, &["stringData"])
        .as_hash()
        .map(|h| {
            h.keys()
                .filter_map(|k| k.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(documented, expected, "{SECRET_EXAMPLE} documents every key");
}

/// A Secret's value is acceptable only as an obvious placeholder.
fn is_placeholder(v: &str) -> bool {
    v.is_empty() || (v.starts_with('<') && v.ends_with('>')) || v.starts_with("REPLACE")
}

#[test]
fn no_secret_anywhere_holds_a_real_looking_value() {
    let secrets: Vec<Doc> = docs_in(&k8s_files())
        .into_iter()
        .filter(|d| d.kind() == "Secret")
        .collect();
    assert!(
        !secrets.is_empty(),
        "the secret example is a Secret document"
    );
    for s in &secrets {
        assert!(
            at(&s.yaml, &["data"]).is_badvalue(),
            "{}: base64 `data` is inline",
            s.file
        );
        let values = at(&s.yaml, &["stringData"])
            .as_hash()
            .cloned()
            .unwrap_or_default();
        for (k, v) in values {
            let v = v.as_str().unwrap_or("not a string");
            assert!(
                is_placeholder(v),
                "{}: {k:?} holds a real-looking value",
                s.file
            );
        }
    }
    assert!(is_placeholder("<client secret>") && !is_placeholder("hunter2-very-secret"));
}

#[test]
fn keda_scales_the_hunters_on_the_hunt_queue() {
    let docs = resources();
    let hunter = deployments(&docs)
        .into_iter()
        .find(|d| role_of(d) == "hunter")
        .unwrap_or_else(|| panic!("no hunter Deployment"));
    assert!(
        at(&hunter.yaml, &["spec", "replicas"]).is_badvalue(),
        "KEDA owns the hunter's replicas; a fixed count would fight it"
    );
    let so: Vec<&Doc> = docs.iter().filter(|d| d.kind() == "ScaledObject").collect();
    assert_eq!(so.len(), 1, "one ScaledObject");
    let so = &so[0].yaml;
    assert!(text(so, &["apiVersion"]).starts_with("keda.sh/"));
    assert_eq!(text(so, &["spec", "scaleTargetRef", "name"]), hunter.name());
    let min = at(so, &["spec", "minReplicaCount"]).as_i64().unwrap_or(-1);
    let max = at(so, &["spec", "maxReplicaCount"]).as_i64().unwrap_or(-1);
    assert!(
        0 <= min && min <= max && max > 1,
        "replica range {min}..={max}"
    );
    let triggers = list(at(so, &["spec", "triggers"]));
    let rabbit = triggers
        .iter()
        .find(|t| text(t, &["type"]) == "rabbitmq")
        .unwrap_or_else(|| panic!("no rabbitmq trigger"));
    assert_eq!(text(rabbit, &["metadata", "queueName"]), HUNT_QUEUE);
    let auth_name = text(rabbit, &["authenticationRef", "name"]);
    let auth = docs
        .iter()
        .find(|d| d.kind() == "TriggerAuthentication" && d.name() == auth_name)
        .unwrap_or_else(|| panic!("TriggerAuthentication {auth_name} is not defined"));
    let refs = list(at(&auth.yaml, &["spec", "secretTargetRef"]));
    assert!(
        refs.iter()
            .any(|r| text(r, &["name"]) == SECRET && text(r, &["key"]) == "amqp-url")
    );
}

#[test]
fn services_and_budgets_select_real_pods_and_ports() {
    let docs = resources();
    let all = patches();
    let deps = deployments(&docs);
    let selected = |d: &Doc, selector: &Yaml| -> Option<String> {
        let h = selector.as_hash()?;
        let pod = deps.iter().find(|dep| {
            let labels = at(&dep.yaml, &["spec", "template", "metadata", "labels"]);
            h.iter()
                .all(|(k, v)| labels[k.as_str().unwrap_or("")] == *v)
        });
        let pod = pod.unwrap_or_else(|| panic!("{}: {} selects no pod", d.file, d.name()));
        Some(role_of(pod))
    };
    let mut served = BTreeSet::new();
    for s in docs.iter().filter(|d| d.kind() == "Service") {
        let role = selected(s, at(&s.yaml, &["spec", "selector"])).unwrap_or_default();
        let dep = deps
            .iter()
            .find(|d| role_of(d) == role)
            .map(|d| container_views(d, &all));
        let ports = port_names(&dep.unwrap_or_default());
        for p in list(at(&s.yaml, &["spec", "ports"])) {
            let target = text(p, &["targetPort"]);
            assert!(
                ports.contains(target),
                "{}: targetPort {target} of {role}",
                s.file
            );
        }
        served.insert(role);
    }
    assert_eq!(
        served,
        BTreeSet::from(["gateway".to_owned(), "ingest".to_owned()])
    );
    let pdbs: Vec<&Doc> = docs
        .iter()
        .filter(|d| d.kind() == "PodDisruptionBudget")
        .collect();
    assert!(!pdbs.is_empty(), "a PodDisruptionBudget");
    for p in pdbs {
        assert!(selected(p, at(&p.yaml, &["spec", "selector", "matchLabels"])).is_some());
    }
}

fn placeholder_env(env: &[&Yaml]) -> Vec<(String, String)> {
    env.iter()
        .map(|e| {
            (
                text(e, &["name"]).to_owned(),
                "placeholder-value".to_owned(),
            )
        })
        .collect()
}

#[test]
fn configmap_config_and_shared_env_pass_the_settings_loader() {
    let docs = resources();
    let cm = docs
        .iter()
        .find(|d| d.kind() == "ConfigMap")
        .unwrap_or_else(|| panic!("no ConfigMap"));
    let toml_text = text(&cm.yaml, &["data", "culprit.toml"]);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("culprit.toml");
    std::fs::write(&path, toml_text).unwrap();
    // The variables every role gets (pod-common.yaml) name real keys of the settings.
    let all = patches();
    let common = all
        .iter()
        .find(|p| p.label.0 == "app.kubernetes.io/part-of")
        .unwrap_or_else(|| panic!("no patch for every Deployment"));
    let env = placeholder_env(&env_entries(
        &containers(&common.doc).iter().collect::<Vec<_>>(),
    ));
    assert!(env.len() >= 3, "shared env {env:?}");
    let settings = culprit_settings::Settings::load_from(Some(&path), &env)
        .unwrap_or_else(|e| panic!("ConfigMap culprit.toml with the shared env: {e}"));
    settings.validate().unwrap();
    assert_eq!(settings.bus.kind, "rabbitmq");
    assert_eq!(settings.store.kind, "redis");
    assert!(settings.tenants.contains_key("primary"));
}

fn compose() -> Yaml {
    merged(&load(&repo().join("docker-compose.yml")).remove(0))
}

fn compose_env(service: &Yaml) -> Vec<(String, String)> {
    service["environment"]
        .as_hash()
        .map(|h| {
            h.iter()
                .map(|(k, v)| {
                    let v = v
                        .as_str()
                        .map(str::to_owned)
                        .unwrap_or_else(|| format!("{v:?}"));
                    (k.as_str().unwrap_or("").to_owned(), v)
                })
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn compose_runs_the_infrastructure_the_twin_and_every_role() {
    let c = compose();
    let services = c["services"]
        .as_hash()
        .unwrap_or_else(|| panic!("no services"));
    let names: BTreeSet<&str> = services.keys().filter_map(Yaml::as_str).collect();
    for needed in ["rabbitmq", "redis", "jaeger", "otel-collector", "twin"]
        .iter()
        .chain(&ROLES)
    {
        assert!(
            names.contains(needed),
            "compose service {needed} (have {names:?})"
        );
    }
    assert!(text(&c, &["services", "rabbitmq", "image"]).contains("management"));
    let twin = strings(&c["services"]["twin"]["command"]);
    assert_eq!(
        twin,
        [
            "twin",
            "serve",
            "--data",
            "/scenarios/lsass_01",
            "--listen",
            "0.0.0.0:8443"
        ]
    );
    let example = repo().join("deploy/culprit.example.toml");
    let twin_env = compose_env(&c["services"]["twin"]);
    let twin_secret = twin_env
        .iter()
        .find(|(k, _)| k == "CULPRIT_TWIN_SECRET")
        .map(|(_, v)| v.clone())
        .unwrap_or_else(|| panic!("the twin's secret is not set"));
    for role in ROLES {
        let s = &c["services"][role];
        let cmd = strings(&s["command"]);
        assert_eq!(
            cmd[..3],
            ["serve", "--role", role],
            "{role}: command {cmd:?}"
        );
        assert_eq!(
            text(s, &["build", "dockerfile"]),
            "Dockerfile",
            "{role}: built here"
        );
        // The roles read the mounted example configuration under the compose environment.
        let env = compose_env(s);
        let settings = culprit_settings::Settings::load_from(Some(&example), &env)
            .unwrap_or_else(|e| panic!("{role}: example config + compose environment: {e}"));
        settings
            .validate()
            .unwrap_or_else(|e| panic!("{role}: {e}"));
        assert!(
            env.iter()
                .any(|(k, v)| k.ends_with("__CLIENT_SECRET") && *v == twin_secret),
            "{role} presents the secret the twin accepts"
        );
        assert_eq!(settings.bus.kind, "rabbitmq", "{role}");
        let deps = s["depends_on"]
            .as_hash()
            .unwrap_or_else(|| panic!("{role}: depends_on"));
        for dep in deps.keys().filter_map(Yaml::as_str) {
            assert!(names.contains(dep), "{role} depends on unknown {dep}");
        }
    }
    let gateway = compose_env(&c["services"]["gateway"]);
    assert!(
        gateway
            .iter()
            .any(|(k, v)| k == "CULPRIT__GATEWAY__LISTEN" && v.starts_with("0.0.0.0:"))
    );
}

#[test]
fn compose_mounts_exist_and_telemetry_reaches_jaeger() {
    let c = compose();
    let services = c["services"]
        .as_hash()
        .unwrap_or_else(|| panic!("no services"));
    for (svc, def) in services {
        for v in strings(&def["volumes"])
            .into_iter()
            .filter(|v| v.starts_with('.'))
        {
            let host = v.split(':').next().unwrap_or("");
            assert!(
                repo().join(host).exists(),
                "{svc:?}: mount source {host} is missing"
            );
        }
    }
    let otel = load(&repo().join("deploy/otel-collector.yaml")).remove(0);
    let pipelines = at(&otel, &["service", "pipelines"])
        .as_hash()
        .unwrap_or_else(|| panic!("no collector pipelines"));
    for (name, p) in pipelines {
        for section in ["receivers", "processors", "exporters"] {
            for component in strings(&p[section]) {
                assert!(
                    !otel[section][component].is_badvalue(),
                    "pipeline {name:?} uses undefined {section}.{component}"
                );
            }
        }
    }
    let traces = strings(at(&otel, &["service", "pipelines", "traces", "exporters"]));
    assert!(
        traces
            .iter()
            .any(|e| text(&otel, &["exporters", e, "endpoint"]).starts_with("jaeger:")),
        "traces go to Jaeger: {traces:?}"
    );
    // The roles export OTLP over HTTP (protobuf), so they must point at the HTTP receiver.
    let otlp = text(
        &otel,
        &["receivers", "otlp", "protocols", "http", "endpoint"],
    );
    let port = otlp.rsplit(':').next().unwrap_or("");
    let env = compose_env(&c["services"]["hunter"]);
    assert!(
        env.iter()
            .any(|(k, v)| k == "CULPRIT__TELEMETRY__OTLP_ENDPOINT"
                && v == &format!("http://otel-collector:{port}")),
        "roles export to the collector's OTLP/HTTP port {port}"
    );
}

#[test]
fn merge_keys_resolve_with_local_keys_winning() {
    let y = YamlLoader::load_from_str("a: &a {x: 1, y: 2}\nb:\n  <<: *a\n  y: 3\n").unwrap();
    let m = merged(&y[0]);
    assert_eq!(m["b"]["x"].as_i64(), Some(1));
    assert_eq!(m["b"]["y"].as_i64(), Some(3));
    assert!(m["b"]["<<"].is_badvalue());
}

#[test]
fn dockerfile_builds_the_binary_and_runs_unprivileged() {
    let text = std::fs::read_to_string(repo().join("Dockerfile")).unwrap();
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    let froms: Vec<usize> = (0..lines.len())
        .filter(|i| lines[*i].starts_with("FROM "))
        .collect();
    assert!(froms.len() >= 2, "multi-stage build");
    let last = froms[froms.len() - 1];
    assert!(
        lines[last].contains("-slim"),
        "runtime stage {:?}",
        lines[last]
    );
    assert!(text.contains("cargo build --release") && text.contains("-p culprit"));
    let user = lines[last..]
        .iter()
        .rev()
        .find_map(|l| l.strip_prefix("USER "))
        .unwrap_or_else(|| panic!("no USER in the runtime stage"));
    let uid = user.split(':').next().unwrap_or("");
    assert!(uid != "root" && uid != "0", "runs as {user}");
}
