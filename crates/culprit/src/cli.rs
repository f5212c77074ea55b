//! The command line: verbs, their arguments, and what each prints.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use culprit_correlator::{Options, Scorer};
use culprit_hunter::Reach;
use culprit_model::{Correlation, Duration, Timestamp};
use culprit_settings::Settings;

use crate::pipeline;
use crate::render::{self, Style};
use crate::scenario::{self, Feed};

#[derive(Debug, Parser)]
#[command(
    name = "culprit",
    version,
    about = "Which process on the endpoint did what the network sensor saw."
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the bundled real scenario end to end (twin, hunting over HTTP, attribution).
    Demo(DemoArgs),
    /// Attribute the detections of a scenario folder or of a file against a real tenant.
    Correlate(CorrelateArgs),
    /// Score attribution against scenarios' known answers.
    Eval(EvalArgs),
    /// Configuration files.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// The offline digital twin of the Microsoft APIs.
    #[command(subcommand)]
    Twin(TwinCommand),
    /// KQL tools.
    #[command(subcommand)]
    Kql(KqlCommand),
    /// Run the services: every role in one process, or one role (`--role`).
    Serve {
        #[arg(long, value_enum)]
        role: Option<crate::serve::Role>,
        /// Configuration file (TOML); see deploy/culprit.example.toml.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Microsoft Defender access.
    #[command(subcommand)]
    Mde(MdeCommand),
    /// Gateway API keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    #[command(flatten)]
    Client(crate::client::ClientCommand),
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Create a key: prints it once, and the `gateway.api_keys` entry to add to the config.
    Create {
        /// Comma-separated: read, submit, respond.
        #[arg(long, value_delimiter = ',', required = true)]
        scopes: Vec<String>,
        /// Comma-separated tenant names the key may see.
        #[arg(long, value_delimiter = ',', required = true)]
        tenants: Vec<String>,
        /// A name for the key (default: generated).
        #[arg(long)]
        id: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
enum MdeCommand {
    /// Test each configured tenant end to end: token, each permission, one hunting query,
    /// one machine look-up. Exits 0 only when everything needed works.
    Check {
        #[arg(long)]
        config: PathBuf,
        /// Only this tenant.
        #[arg(long)]
        tenant: Option<String>,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
enum Format {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
enum ScorerArg {
    Culprit,
    Baseline,
}

impl From<ScorerArg> for Scorer {
    fn from(s: ScorerArg) -> Self {
        match s {
            ScorerArg::Culprit => Scorer::Culprit,
            ScorerArg::Baseline => Scorer::Baseline,
        }
    }
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
enum EvalScorer {
    Culprit,
    Baseline,
    Both,
}

#[derive(Debug, Args)]
struct DemoArgs {
    /// Another scenario folder instead of the bundled one.
    #[arg(long)]
    scenario: Option<PathBuf>,
    #[arg(long, value_enum, default_value = "text")]
    format: Format,
}

#[derive(Debug, Args)]
struct CorrelateArgs {
    /// A scenario folder: its detections, hunted in its recorded tables through the twin.
    #[arg(long, conflicts_with_all = ["detections"])]
    scenario: Option<PathBuf>,
    /// A detections file (Vectra JSON) to attribute against a real tenant (needs --config).
    #[arg(long, requires = "config")]
    detections: Option<PathBuf>,
    /// Configuration file (TOML); see deploy/culprit.example.toml.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Which configured tenant the detections belong to (default: the only one).
    #[arg(long)]
    tenant: Option<String>,
    /// Which network feed of the scenario to read.
    #[arg(long, value_enum, default_value = "vectra")]
    source: Feed,
    #[arg(long, value_enum, default_value = "text")]
    format: Format,
    #[arg(long, value_enum)]
    scorer: Option<ScorerArg>,
}

#[derive(Debug, Args)]
struct EvalArgs {
    /// Scenario folders, or folders of scenario folders.
    #[arg(long, num_args = 1.., required = true)]
    scenarios: Vec<PathBuf>,
    #[arg(long, value_enum, default_value = "both")]
    scorer: EvalScorer,
    #[arg(long, value_enum, default_value = "vectra")]
    source: Feed,
    #[arg(long, value_enum, default_value = "text")]
    format: Format,
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Validate a configuration file: names every unknown, missing or invalid key.
    Check { file: PathBuf },
}

#[derive(Debug, Subcommand)]
enum TwinCommand {
    /// Serve scenario folders as one tenant over HTTP (HTTPS with --tls).
    Serve {
        #[arg(long, num_args = 1.., required = true)]
        data: Vec<PathBuf>,
        #[arg(long, default_value = "127.0.0.1:8443")]
        listen: String,
        /// Client secret the twin accepts (default: printed random one).
        #[arg(long, env = "CULPRIT_TWIN_SECRET", hide_env_values = true)]
        secret: Option<String>,
        /// Serve HTTPS with a certificate from a CA generated at start-up.
        #[arg(long)]
        tls: bool,
        /// Where to write the generated CA certificate (PEM); default: the temp folder.
        #[arg(long, value_name = "FILE", requires = "tls")]
        ca_out: Option<PathBuf>,
        /// Also serve the folders' ndr/vectra_detections.json as the Vectra API (OAuth
        /// `/oauth2/token`, `/api/v3.3/detections`, `/api/v3.5/events/detections`) on ADDR.
        #[arg(long, value_name = "ADDR")]
        vectra_listen: Option<String>,
    },
    /// Write a synthetic tenant (scenario format) with injected attacks and their truth.
    Generate {
        /// Synthetic devices in the tenant.
        #[arg(long)]
        devices: usize,
        /// Hours of telemetry per device.
        #[arg(long)]
        hours: u32,
        /// The same seed writes the same tenant.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Injected attacks (default: one per ten devices, at least one).
        #[arg(long)]
        attacks: Option<usize>,
        /// Folder to write (`mde/*.jsonl`, `ndr/`, `truth.json`).
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum KqlCommand {
    /// Parse (and with --tables, evaluate) every query of a corpus file (JSON Lines).
    Check {
        /// JSON Lines, one query per line: `{"id": "...", "query": "...", "tables": [...]}`
        /// (`tables`: the tables the query names; only queries naming Device* tables alone
        /// count towards the evaluation figure).
        corpus: PathBuf,
        /// A scenario folder whose mde/*.jsonl tables the queries run against.
        #[arg(long)]
        tables: Option<PathBuf>,
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
    },
}

pub async fn run(cli: Cli, stdout_is_terminal: bool) -> Result<ExitCode> {
    let style = Style::for_stdout(stdout_is_terminal);
    match cli.command {
        Command::Demo(a) => demo(a, style).await,
        Command::Correlate(a) => correlate(a, style).await,
        Command::Eval(a) => eval(a).await,
        Command::Config(ConfigCommand::Check { file }) => config_check(&file),
        Command::Twin(TwinCommand::Serve {
            data,
            listen,
            secret,
            tls,
            ca_out,
            vectra_listen,
        }) => twin_serve(data, &listen, secret, tls.then_some(ca_out), vectra_listen).await,
        Command::Twin(TwinCommand::Generate {
            devices,
            hours,
            seed,
            attacks,
            out,
        }) => {
            let mut opts = culprit_mde_twin::generate::GenerateOptions::new(devices, hours, seed);
            if let Some(a) = attacks {
                opts.attacks = a;
            }
            let summary = culprit_mde_twin::generate::generate_to_dir(&opts, &out)?;
            for (table, rows) in &summary.rows {
                eprintln!("{table}: {rows} rows");
            }
            let plural = if summary.detections == 1 { "" } else { "s" };
            eprintln!(
                "{} detection{plural} with their truth in {}",
                summary.detections,
                out.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Kql(KqlCommand::Check {
            corpus,
            tables,
            format,
        }) => kql_check(&corpus, tables.as_deref(), format),
        Command::Serve { role, config } => {
            let settings = Settings::load(config.as_deref())?;
            settings.validate()?;
            let telemetry =
                culprit_telemetry::install(&crate::observe::telemetry_config(&settings, role))?;
            let served = crate::serve::serve(settings, role).await;
            // Flushed on every exit, so the spans of a failed drain reach the collector too.
            crate::observe::shutdown_telemetry(telemetry).await;
            served?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Mde(MdeCommand::Check { config, tenant }) => {
            mde_check(&config, tenant.as_deref()).await
        }
        Command::Keys(KeysCommand::Create {
            scopes,
            tenants,
            id,
        }) => keys_create(&scopes, &tenants, id.as_deref()),
        Command::Client(c) => client_verb(c, style).await,
    }
}

/// A gateway client verb: the key from the environment, answers on stdout, the failure's
/// message on stderr and its exit status.
async fn client_verb(c: crate::client::ClientCommand, style: Style) -> Result<ExitCode> {
    let key = std::env::var(crate::client::API_KEY_ENV)
        .ok()
        .filter(|k| !k.trim().is_empty())
        .map(|k| secrecy::SecretString::from(k.trim().to_owned()));
    let (mut out, mut err) = (std::io::stdout(), std::io::stderr());
    let mut io = crate::client::Io {
        out: &mut out,
        err: &mut err,
        style,
    };
    match crate::client::run(c, key, &mut io).await {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(f) if f.exit == 0 => Ok(ExitCode::SUCCESS),
        Err(f) => {
            eprintln!("error: {}", f.message);
            Ok(ExitCode::from(f.exit))
        }
    }
}

fn init_logs(settings: &Settings) -> Result<()> {
    // The CLI keeps stdout for results; warnings and errors only, unless RUST_LOG says more.
    culprit_telemetry::init(&settings.telemetry.log_format, "warn").context("setting up logging")
}

pub(crate) fn engine_options(settings: &Settings, scorer: Option<Scorer>) -> Result<Options> {
    let scorer = match scorer {
        Some(s) => s,
        None => Scorer::parse(&settings.correlator.scorer)
            .with_context(|| format!("correlator.scorer {:?}", settings.correlator.scorer))?,
    };
    Ok(Options {
        skew_tolerance: Duration::from_seconds(settings.correlator.skew_tolerance_secs),
        ingestion_delay: Duration::from_seconds(settings.correlator.ingestion_delay_secs),
        scorer,
        ..Options::default()
    })
}

pub(crate) fn reach(settings: &Settings) -> Reach {
    Reach {
        lookback: Duration::from_minutes(settings.hunter.lookback_minutes),
        lookahead: Duration::from_minutes(settings.hunter.lookahead_minutes),
        device_lookback: Duration::from_hours(settings.hunter.device_lookback_hours),
    }
}

/// Runs one scenario folder through the twin and returns its answers.
async fn scenario_answers(
    dir: &Path,
    feed: Feed,
    settings: &Settings,
    scorers: &[Scorer],
) -> Result<Vec<(Scorer, Vec<Correlation>)>> {
    let name = scenario::name(dir);
    let loaded = scenario::detections(dir, feed, &name)?;
    for r in &loaded.rejected {
        eprintln!("rejected: {r}");
    }
    let tt = pipeline::start_twin(&name, vec![dir.to_path_buf()]).await?;
    let now = tt.twin.clock().now();
    let outcomes = pipeline::hunt(&tt.tenant, loaded.detections, &reach(settings)).await;
    let mut out = Vec::new();
    for &s in scorers {
        let opts = engine_options(settings, Some(s))?;
        out.push((s, pipeline::attribute(&tt.tenant, &outcomes, &opts, now)));
    }
    tt.twin.shutdown().await;
    Ok(out)
}

async fn demo(a: DemoArgs, style: Style) -> Result<ExitCode> {
    let settings = Settings::default();
    init_logs(&settings)?;
    let dir = a.scenario.unwrap_or_else(scenario::bundled);
    if !dir.join("ndr").is_dir() {
        bail!(
            "scenario folder {} not found (it ships in examples/scenarios/)",
            dir.display()
        );
    }
    let started = std::time::Instant::now();
    eprintln!(
        "Culprit demo: scenario {} — twin on loopback, Vectra detections, Graph hunting over HTTP with OAuth, attribution",
        scenario::name(&dir)
    );
    let answers = scenario_answers(&dir, Feed::Vectra, &settings, &[Scorer::Culprit]).await?;
    let correlations = answers.into_iter().flat_map(|(_, c)| c).collect::<Vec<_>>();
    print_correlations(&correlations, a.format, style)?;
    let attributed = correlations
        .iter()
        .filter(|c| c.status == culprit_model::Status::Attributed)
        .count();
    eprintln!(
        "{} detections answered ({attributed} attributed) in {:.2} s",
        correlations.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(ExitCode::SUCCESS)
}

fn print_correlations(cs: &[Correlation], format: Format, style: Style) -> Result<()> {
    let mut out = std::io::stdout().lock();
    match format {
        Format::Json => {
            for c in cs {
                serde_json::to_writer(&mut out, c)?;
                writeln!(out)?;
            }
        }
        Format::Text => {
            for c in cs {
                writeln!(out, "{}", render::panel(c, style))?;
                writeln!(out, "{}", "─".repeat(96))?;
            }
            writeln!(out, "\nSUMMARY")?;
            for c in cs {
                writeln!(out, "{}", render::summary_line(c, style))?;
            }
        }
    }
    out.flush()?;
    Ok(())
}

async fn correlate(a: CorrelateArgs, style: Style) -> Result<ExitCode> {
    let settings = Settings::load(a.config.as_deref())?;
    settings.validate()?;
    init_logs(&settings)?;
    let scorer = a.scorer.map(Scorer::from);
    let correlations = match (&a.scenario, &a.detections) {
        (Some(dir), None) => {
            let s = scorer.map_or_else(|| engine_options(&settings, None).map(|o| o.scorer), Ok)?;
            scenario_answers(dir, a.source, &settings, &[s])
                .await?
                .into_iter()
                .flat_map(|(_, c)| c)
                .collect()
        }
        (None, Some(file)) => tenant_answers(file, a.tenant.as_deref(), &settings, scorer).await?,
        _ => bail!("give --scenario DIR, or --detections FILE with --config FILE"),
    };
    print_correlations(&correlations, a.format, style)?;
    Ok(ExitCode::SUCCESS)
}

/// A real tenant: detections from a file, hunting through the configured client.
async fn tenant_answers(
    file: &Path,
    tenant: Option<&str>,
    settings: &Settings,
    scorer: Option<Scorer>,
) -> Result<Vec<Correlation>> {
    let name = match tenant {
        Some(t) => t.to_owned(),
        None => match settings.tenants.keys().collect::<Vec<_>>().as_slice() {
            [only] => (*only).clone(),
            [] => bail!("the configuration names no tenant: add a [tenants.NAME] section"),
            _ => bail!("several tenants are configured: choose one with --tenant"),
        },
    };
    let t = settings
        .tenants
        .get(&name)
        .with_context(|| format!("no tenant {name:?} in the configuration"))?;
    let tenant = pipeline::configured_tenant(&name, t)?;
    let loaded = scenario::vectra_file(file, &name)?;
    for r in &loaded.rejected {
        eprintln!("rejected: {r}");
    }
    let outcomes = pipeline::hunt(&tenant, loaded.detections, &reach(settings)).await;
    let opts = engine_options(settings, scorer)?;
    Ok(pipeline::attribute(
        &tenant,
        &outcomes,
        &opts,
        Timestamp::now(),
    ))
}

async fn eval(a: EvalArgs) -> Result<ExitCode> {
    let settings = Settings::default();
    init_logs(&settings)?;
    let scorers: Vec<Scorer> = match a.scorer {
        EvalScorer::Culprit => vec![Scorer::Culprit],
        EvalScorer::Baseline => vec![Scorer::Baseline],
        EvalScorer::Both => vec![Scorer::Culprit, Scorer::Baseline],
    };
    let dirs = expand_scenarios(&a.scenarios)?;
    let mut scores = Vec::new();
    for dir in &dirs {
        let name = scenario::name(dir);
        let truth_path = dir.join("truth.json");
        let text = std::fs::read_to_string(&truth_path)
            .with_context(|| format!("reading {}", truth_path.display()))?;
        let truth = culprit_correlator::eval::Truth::from_json(&text)
            .with_context(|| format!("parsing {}", truth_path.display()))?;
        eprintln!("eval: {name}");
        for (s, cs) in scenario_answers(dir, a.source, &settings, &scorers).await? {
            let _ = s;
            scores.push(culprit_correlator::eval::score(&name, &cs, &truth));
        }
    }
    let report = culprit_correlator::eval::Report::new(scores);
    match a.format {
        Format::Json => println!("{}", serde_json::to_string(&report)?),
        Format::Text => print!("{}", report.render()),
    }
    Ok(ExitCode::SUCCESS)
}

/// A folder with `truth.json` is a scenario; any other folder is searched one level down.
fn expand_scenarios(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in paths {
        if p.join("truth.json").is_file() {
            out.push(p.clone());
            continue;
        }
        let mut found: Vec<PathBuf> = std::fs::read_dir(p)
            .with_context(|| format!("reading {}", p.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|d| d.join("truth.json").is_file())
            .collect();
        if found.is_empty() {
            bail!(
                "{}: no scenario (a folder with truth.json) here",
                p.display()
            );
        }
        found.sort();
        out.extend(found);
    }
    Ok(out)
}

fn config_check(file: &Path) -> Result<ExitCode> {
    let settings = Settings::load(Some(file))?;
    settings.validate()?;
    println!(
        "{}: valid ({} tenant{}, bus {}, store {})",
        file.display(),
        settings.tenants.len(),
        if settings.tenants.len() == 1 { "" } else { "s" },
        settings.bus.kind,
        settings.store.kind
    );
    Ok(ExitCode::SUCCESS)
}

/// `tls`: `None` for plain HTTP, `Some(ca_out)` for HTTPS.
async fn twin_serve(
    data: Vec<PathBuf>,
    listen: &str,
    secret: Option<String>,
    tls: Option<Option<PathBuf>>,
    vectra_listen: Option<String>,
) -> Result<ExitCode> {
    init_logs(&Settings::default())?;
    let secret = secret.unwrap_or_else(|| {
        (0..32)
            .map(|_| char::from(b'a' + rand::random_range(0..26u8)))
            .collect()
    });
    let vectra = match &vectra_listen {
        Some(addr) => {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("--vectra-listen {addr}"))?;
            let config = culprit_mde_twin::VectraTwinConfig::single_client(
                VECTRA_TWIN_CLIENT_ID,
                &secret,
                &secret,
                data.clone(),
            );
            Some(culprit_mde_twin::VectraTwin::start(config, listener, None).await?)
        }
        None => None,
    };
    let mut config = culprit_mde_twin::TwinConfig::single_tenant(
        pipeline::TWIN_TENANT_ID,
        pipeline::TWIN_CLIENT_ID,
        &secret,
        data,
    );
    config.tls.enabled = tls.is_some();
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("--listen {listen}"))?;
    let twin = culprit_mde_twin::Twin::start(config, listener).await?;
    let shutdown = culprit_runtime::Shutdown::new();
    shutdown.install_signal_handlers();
    eprintln!("twin serving on {}", twin.base_url());
    if let (Some(ca_out), Some(pem)) = (tls, twin.ca_pem()) {
        let path = ca_out.unwrap_or_else(|| {
            std::env::temp_dir().join(format!("culprit-twin-ca-{}.pem", twin.addr().port()))
        });
        std::fs::write(&path, pem).with_context(|| format!("--ca-out {}", path.display()))?;
        eprintln!(
            "  CA certificate {} (set tls.ca_file to it)",
            path.display()
        );
        eprintln!("  answers for    {}", twin.tls_hosts().join(", "));
    }
    eprintln!("  tenant_id     {}", pipeline::TWIN_TENANT_ID);
    eprintln!("  client_id     {}", pipeline::TWIN_CLIENT_ID);
    eprintln!("  client_secret {secret}");
    eprintln!(
        "  (set [tenants.NAME.endpoints] login/graph/mde_api to {})",
        twin.base_url()
    );
    if let Some(v) = &vectra {
        eprintln!(
            "vectra API serving on {} ({} detections)",
            v.base_url(),
            v.detection_count()
        );
        eprintln!("  client_id     {VECTRA_TWIN_CLIENT_ID} (OAuth, secret as above)");
        eprintln!("  api token     the client secret above (v2 `Authorization: Token`)");
    }
    shutdown.triggered().await;
    if let Some(v) = vectra {
        v.shutdown().await;
    }
    twin.shutdown().await;
    Ok(ExitCode::SUCCESS)
}

/// The OAuth client the Vectra stand-in of `twin serve --vectra-listen` accepts.
const VECTRA_TWIN_CLIENT_ID: &str = "culprit-vectra";

fn kql_check(corpus: &Path, tables: Option<&Path>, format: Format) -> Result<ExitCode> {
    let text =
        std::fs::read_to_string(corpus).with_context(|| format!("reading {}", corpus.display()))?;
    let db = match tables {
        Some(dir) => Some(
            culprit_mde_twin::LoadedData::load(&[dir.to_path_buf()])
                .with_context(|| format!("loading tables from {}", dir.display()))?
                .into_database(),
        ),
        None => None,
    };
    let opts = culprit_kql::EvalOptions::default();
    let report = culprit_kql::corpus::check(&text, db.as_ref(), &opts);
    let summary = report.summary_json();
    match format {
        Format::Json => {
            let mut out = std::io::stdout().lock();
            for f in &report.failing {
                serde_json::to_writer(&mut out, f)?;
                writeln!(out)?;
            }
            serde_json::to_writer(&mut out, &summary)?;
            writeln!(out)?;
        }
        Format::Text => {
            for f in &report.failing {
                eprintln!("{} [{}] {}", f.id, f.kind, f.error);
            }
            println!("{}", serde_json::to_string_pretty(&summary)?);
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn mde_check(config: &Path, only: Option<&str>) -> Result<ExitCode> {
    let settings = Settings::load(Some(config))?;
    settings.validate()?;
    init_logs(&settings)?;
    if settings.tenants.is_empty() {
        bail!(
            "{}: names no tenant: add a [tenants.NAME] section",
            config.display()
        );
    }
    let mut all_ok = true;
    for (name, t) in &settings.tenants {
        if only.is_some_and(|o| o != name) {
            continue;
        }
        let client = pipeline::configured_client(name, t)?;
        let lines = crate::mde_check::check(&client).await;
        all_ok &= lines.iter().all(|l| l.ok);
        print!("{}", crate::mde_check::render(name, &lines));
    }
    Ok(if all_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn keys_create(scopes: &[String], tenants: &[String], id: Option<&str>) -> Result<ExitCode> {
    let scopes = scopes
        .iter()
        .map(|s| {
            s.parse::<culprit_gateway::Scope>()
                .map_err(|e| anyhow::anyhow!("--scopes {s:?}: {e}"))
        })
        .collect::<Result<Vec<_>>>()?;
    let created = match id {
        Some(id) => culprit_gateway::create_key_with_id(id, &scopes, tenants)?,
        None => culprit_gateway::create_key(&scopes, tenants)?,
    };
    use secrecy::ExposeSecret;
    println!("key (shown once; give it to the client as `authorization: Bearer <key>`):");
    println!("  {}", created.key.expose_secret());
    println!("add to gateway.api_keys in the configuration:");
    println!("  {}", created.config_line);
    Ok(ExitCode::SUCCESS)
}
