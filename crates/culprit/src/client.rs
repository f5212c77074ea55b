//! Client verbs for the gateway: `get`, `list`, `watch`, `isolate`, `release`, `action`.
//!
//! The API key comes from `CULPRIT_API_KEY` (never an argument: arguments show in `ps` and
//! shell history) and is never printed. Answers go to stdout (a panel, or JSON Lines with
//! `--format json`); notes and errors go to stderr. A refused call exits non-zero with the
//! gRPC code, the server's reason and what to do, from the error details when present.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration as StdDuration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use culprit_model::{Correlation, Timestamp};
use culprit_proto::v1 as pb;
use culprit_proto::v1::correlation_service_client::CorrelationServiceClient;
use culprit_proto::v1::response_service_client::ResponseServiceClient;
use secrecy::{ExposeSecret, SecretString};
use serde_json::json;
use tonic::metadata::MetadataValue;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::{Code, Request, Status};
use tonic_types::StatusExt;

use crate::render::{self, Style};

/// Environment variable holding the API key.
pub const API_KEY_ENV: &str = "CULPRIT_API_KEY";
/// The gateway when neither `--gateway` nor `--config` says otherwise.
pub const DEFAULT_GATEWAY: &str = "http://127.0.0.1:50051";

/// Exit statuses of the client verbs, by what went wrong.
pub mod exit {
    /// Local problem: no API key, unreadable file, bad flag value.
    pub const LOCAL: u8 = 1;
    /// INVALID_ARGUMENT or OUT_OF_RANGE: the request needs fixing.
    pub const INVALID: u8 = 3;
    /// UNAUTHENTICATED: no or unknown API key.
    pub const UNAUTHENTICATED: u8 = 4;
    /// PERMISSION_DENIED: the key lacks a scope or the tenant.
    pub const PERMISSION_DENIED: u8 = 5;
    /// NOT_FOUND.
    pub const NOT_FOUND: u8 = 6;
    /// ALREADY_EXISTS: an action is pending.
    pub const ALREADY_EXISTS: u8 = 7;
    /// FAILED_PRECONDITION: the device's state, ambiguity, or Culprit's MDE permissions.
    pub const FAILED_PRECONDITION: u8 = 8;
    /// RESOURCE_EXHAUSTED: over the key's rate; retry later.
    pub const RATE_LIMITED: u8 = 9;
    /// UNAVAILABLE or DEADLINE_EXCEEDED: unreachable or a dependency down; retry.
    pub const UNAVAILABLE: u8 = 10;
    /// Any other code (INTERNAL, UNKNOWN, ...).
    pub const OTHER: u8 = 11;
}

pub const EXIT_HELP: &str = "\
Exit status: 0 ok · 1 local problem (no CULPRIT_API_KEY, unreadable file) · 2 usage · \
3 invalid argument · 4 unauthenticated · 5 permission denied · 6 not found · \
7 already exists (an action is pending) · 8 failed precondition · 9 rate limited · \
10 unavailable or deadline exceeded · 11 other server error.";

/// A failed verb: what to print on stderr and the exit status.
#[derive(Debug)]
pub struct Failure {
    /// The gRPC code, when the gateway (or the transport) answered one.
    pub code: Option<Code>,
    pub message: String,
    pub exit: u8,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl Failure {
    fn local(message: impl Into<String>) -> Self {
        Failure {
            code: None,
            message: message.into(),
            exit: exit::LOCAL,
        }
    }
}

impl From<std::io::Error> for Failure {
    fn from(e: std::io::Error) -> Self {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            // A reader that stops early (`| head`) is not a failure: exit 0, say nothing.
            return Failure {
                code: None,
                message: String::new(),
                exit: 0,
            };
        }
        Failure::local(format!("writing output: {e}"))
    }
}

/// The client verbs alone (tests parse them without the rest of the command line).
#[derive(Debug, Parser)]
#[command(name = "culprit")]
pub struct ClientCli {
    #[command(subcommand)]
    pub command: ClientCommand,
}

#[derive(Debug, Subcommand)]
pub enum ClientCommand {
    /// Show the answer for one detection (by key, or by source and source id).
    #[command(after_help = EXIT_HELP)]
    Get(GetArgs),
    /// List answers, newest first, with filters; `--all` follows every page.
    #[command(after_help = EXIT_HELP)]
    List(ListArgs),
    /// Follow new answers and attribution changes; resumes by itself after a disconnect.
    #[command(after_help = EXIT_HELP)]
    Watch(WatchArgs),
    /// Isolate a device in Microsoft Defender (by device id, or the device of a detection).
    #[command(after_help = EXIT_HELP)]
    Isolate(IsolateArgs),
    /// Release a device from isolation.
    #[command(after_help = EXIT_HELP)]
    Release(ReleaseArgs),
    /// Show the status of a Defender machine action.
    #[command(after_help = EXIT_HELP)]
    Action(ActionArgs),
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum OutFormat {
    Text,
    Json,
}

/// Where the gateway is and how to reach it.
#[derive(Debug, Args)]
pub struct Conn {
    /// Gateway URL (`http://host:port` or `https://host:port`). Default: from --config's
    /// `gateway.listen` and `gateway.tls`, else http://127.0.0.1:50051.
    #[arg(long, env = "CULPRIT_GATEWAY")]
    pub gateway: Option<String>,
    /// Configuration file whose `[gateway]` section gives the default URL.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// PEM CA bundle that signed the gateway's certificate (default: the public web roots).
    #[arg(long, env = "CULPRIT_GATEWAY_CA")]
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate, for a gateway that requires mutual TLS.
    #[arg(long, requires = "client_key")]
    pub client_cert: Option<PathBuf>,
    /// PEM private key of --client-cert.
    #[arg(long, requires = "client_cert")]
    pub client_key: Option<PathBuf>,
    /// Seconds to wait for an answer (not for `watch`, which runs until stopped).
    #[arg(long, default_value_t = 30)]
    pub timeout: u64,
    #[arg(long, value_enum, default_value = "text")]
    pub format: OutFormat,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum SourceArg {
    Vectra,
    Suricata,
    Zeek,
}

#[derive(Debug, Args)]
pub struct GetArgs {
    /// Detection key `{source}:{tenant}:{id}:{revision}`.
    #[arg(required_unless_present = "source_id", conflicts_with_all = ["source", "source_id"])]
    pub key: Option<String>,
    /// The sensor, with --source-id.
    #[arg(long, value_enum, requires = "source_id")]
    pub source: Option<SourceArg>,
    /// The sensor's own detection id (the newest revision is shown).
    #[arg(long, requires = "source")]
    pub source_id: Option<String>,
    /// Tenant of --source-id, when the key covers several.
    #[arg(long)]
    pub tenant: Option<String>,
    #[command(flatten)]
    pub conn: Conn,
}

/// Filters shared by `list` and `watch`.
#[derive(Debug, Args)]
pub struct Filters {
    /// Only these tenants (repeat or comma-separate; default: every tenant the key covers).
    #[arg(long, value_delimiter = ',')]
    pub tenant: Vec<String>,
    /// Only answers about this MDE device id.
    #[arg(long)]
    pub device: Option<String>,
    /// Only these statuses (attributed, insufficient_telemetry, device_ambiguous, ...).
    #[arg(long, value_delimiter = ',')]
    pub status: Vec<String>,
    /// Only answers whose probable process has at least this confidence (0 to 1).
    #[arg(long)]
    pub min_confidence: Option<f64>,
}

impl Filters {
    fn statuses(&self) -> Result<Vec<i32>, Failure> {
        self.status
            .iter()
            .map(|s| {
                culprit_model::Status::parse(s)
                    .map(|st| pb::Status::from(st) as i32)
                    .ok_or_else(|| {
                        Failure::local(format!(
                            "--status {s:?}: not a status (attributed, insufficient_telemetry, \
                             device_ambiguous, device_not_found, sensor_inactive, \
                             pending_telemetry, not_host_attributable, needs_target_list, hunt_failed)"
                        ))
                    })
            })
            .collect()
    }
}

#[derive(Debug, Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub filters: Filters,
    /// Answers computed at or after this instant (RFC 3339, e.g. 2023-08-16T04:00:00Z).
    #[arg(long)]
    pub since: Option<String>,
    /// Answers computed before this instant (RFC 3339).
    #[arg(long)]
    pub until: Option<String>,
    /// Answers per page (the server caps it).
    #[arg(long, default_value_t = 50)]
    pub page_size: u32,
    /// Continue from a page token printed by an earlier `list`.
    #[arg(long)]
    pub page: Option<String>,
    /// Follow every page to the end.
    #[arg(long)]
    pub all: bool,
    #[command(flatten)]
    pub conn: Conn,
}

#[derive(Debug, Args)]
pub struct WatchArgs {
    /// Start after this position (the last one an earlier `watch` printed): nothing in
    /// between is missed.
    #[arg(long, conflicts_with = "from_oldest")]
    pub from: Option<String>,
    /// Replay every retained event first.
    #[arg(long)]
    pub from_oldest: bool,
    /// Stop after this many events (default: run until interrupted).
    #[arg(long)]
    pub limit: Option<usize>,
    #[command(flatten)]
    pub filters: Filters,
    #[command(flatten)]
    pub conn: Conn,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum IsolationMode {
    /// Cut the device off the network (Defender keeps its connection).
    Full,
    /// Outlook, Teams and Skype keep working (Windows 10 1709+ and Windows 11).
    Selective,
}

/// The device to act on.
#[derive(Debug, Args)]
pub struct Target {
    /// MDE device id.
    #[arg(
        long,
        required_unless_present = "detection",
        conflicts_with = "detection"
    )]
    pub device: Option<String>,
    /// A detection key: the device of its answer (refused when ambiguous).
    #[arg(long)]
    pub detection: Option<String>,
    /// Tenant of --device, when the key covers several.
    #[arg(long)]
    pub tenant: Option<String>,
}

impl Target {
    fn to_proto(&self) -> pb::DeviceTarget {
        use pb::device_target::Target as T;
        pb::DeviceTarget {
            target: match (&self.device, &self.detection) {
                (Some(d), _) => Some(T::DeviceId(d.clone())),
                (None, Some(k)) => Some(T::DetectionKey(k.clone())),
                (None, None) => None,
            },
            tenant: self.tenant.clone().unwrap_or_default(),
        }
    }
}

#[derive(Debug, Args)]
pub struct IsolateArgs {
    #[command(flatten)]
    pub target: Target,
    #[arg(long, value_enum)]
    pub mode: IsolationMode,
    /// Why: shown in the Defender portal and the audit trail (required).
    #[arg(long)]
    pub comment: String,
    #[command(flatten)]
    pub conn: Conn,
}

#[derive(Debug, Args)]
pub struct ReleaseArgs {
    #[command(flatten)]
    pub target: Target,
    /// Why (required).
    #[arg(long)]
    pub comment: String,
    #[command(flatten)]
    pub conn: Conn,
}

#[derive(Debug, Args)]
pub struct ActionArgs {
    /// The Defender machine action id.
    pub id: String,
    /// Tenant of the action, when the key covers several.
    #[arg(long)]
    pub tenant: Option<String>,
    #[command(flatten)]
    pub conn: Conn,
}

/// Where a verb writes: answers to `out`, notes (page tokens, reconnects) to `err`.
pub struct Io<'a> {
    pub out: &'a mut (dyn Write + Send),
    pub err: &'a mut (dyn Write + Send),
    pub style: Style,
}

impl std::fmt::Debug for Io<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Io")
            .field("style", &self.style)
            .finish_non_exhaustive()
    }
}

/// Runs one verb. `api_key` is `CULPRIT_API_KEY` (the binary reads it; tests pass it).
pub async fn run(
    cmd: ClientCommand,
    api_key: Option<SecretString>,
    io: &mut Io<'_>,
) -> Result<(), Failure> {
    let key = api_key.ok_or_else(|| {
        Failure::local(format!(
            "{API_KEY_ENV} is not set: export it with an API key (`culprit keys create` makes one)"
        ))
    })?;
    let auth: MetadataValue<_> =
        format!("Bearer {}", key.expose_secret())
            .parse()
            .map_err(|_| {
                Failure::local(format!(
                    "{API_KEY_ENV} is not a valid API key (it must be printable ASCII)"
                ))
            })?;
    match cmd {
        ClientCommand::Get(a) => get(a, auth, io).await,
        ClientCommand::List(a) => list(a, auth, io).await,
        ClientCommand::Watch(a) => watch(a, auth, io).await,
        ClientCommand::Isolate(a) => {
            let req = pb::IsolateDeviceRequest {
                target: Some(a.target.to_proto()),
                isolation_type: match a.mode {
                    IsolationMode::Full => pb::IsolationType::Full,
                    IsolationMode::Selective => pb::IsolationType::Selective,
                } as i32,
                comment: a.comment.clone(),
            };
            let ch = connect(&a.conn).await?;
            let r = ResponseServiceClient::new(ch)
                .isolate_device(unary(req, &auth, &a.conn))
                .await
                .map_err(|s| failure(&s, "isolate"))?;
            print_action(r.into_inner().action, &a.conn, io)
        }
        ClientCommand::Release(a) => {
            let req = pb::ReleaseDeviceRequest {
                target: Some(a.target.to_proto()),
                comment: a.comment.clone(),
            };
            let ch = connect(&a.conn).await?;
            let r = ResponseServiceClient::new(ch)
                .release_device(unary(req, &auth, &a.conn))
                .await
                .map_err(|s| failure(&s, "release"))?;
            print_action(r.into_inner().action, &a.conn, io)
        }
        ClientCommand::Action(a) => {
            let req = pb::GetActionRequest {
                tenant: a.tenant.clone().unwrap_or_default(),
                action_id: a.id.clone(),
            };
            let ch = connect(&a.conn).await?;
            let r = ResponseServiceClient::new(ch)
                .get_action(unary(req, &auth, &a.conn))
                .await
                .map_err(|s| failure(&s, "action"))?;
            print_action(r.into_inner().action, &a.conn, io)
        }
    }
}

type Auth = MetadataValue<tonic::metadata::Ascii>;

fn authorized<T>(msg: T, auth: &Auth) -> Request<T> {
    let mut r = Request::new(msg);
    r.metadata_mut().insert("authorization", auth.clone());
    r
}

fn unary<T>(msg: T, auth: &Auth, conn: &Conn) -> Request<T> {
    let mut r = authorized(msg, auth);
    r.set_timeout(StdDuration::from_secs(conn.timeout.max(1)));
    r
}

/// The gateway URL: `--gateway`, else the configuration's listener, else the default.
pub fn gateway_url(conn: &Conn) -> Result<String, Failure> {
    if let Some(g) = &conn.gateway {
        if !(g.starts_with("http://") || g.starts_with("https://")) {
            return Err(Failure::local(format!(
                "--gateway {g:?}: give a URL, http://host:port or https://host:port"
            )));
        }
        return Ok(g.clone());
    }
    let Some(path) = &conn.config else {
        return Ok(DEFAULT_GATEWAY.to_owned());
    };
    let s = culprit_settings::Settings::load(Some(path))
        .map_err(|e| Failure::local(format!("--config {}: {e}", path.display())))?;
    let listen = s.gateway.listen.trim();
    if listen.is_empty() {
        return Ok(DEFAULT_GATEWAY.to_owned());
    }
    // A wildcard listener is reached on loopback from the same machine.
    let addr = listen
        .replacen("0.0.0.0:", "127.0.0.1:", 1)
        .replacen("[::]:", "[::1]:", 1);
    let scheme = if s.gateway.tls.cert_file.is_empty() {
        "http"
    } else {
        "https"
    };
    Ok(format!("{scheme}://{addr}"))
}

fn read_file(flag: &str, path: &Path) -> Result<Vec<u8>, Failure> {
    std::fs::read(path).map_err(|e| Failure::local(format!("{flag} {}: {e}", path.display())))
}

/// A channel to the gateway (TLS for `https://`, verified against --ca-file or the web roots).
pub async fn connect(conn: &Conn) -> Result<Channel, Failure> {
    let url = gateway_url(conn)?;
    let mut ep = Endpoint::from_shared(url.clone())
        .map_err(|e| Failure::local(format!("--gateway {url:?}: {e}")))?
        .connect_timeout(StdDuration::from_secs(conn.timeout.clamp(1, 10)));
    if url.starts_with("https://") {
        let mut tls = ClientTlsConfig::new();
        tls = match &conn.ca_file {
            Some(p) => tls.ca_certificate(Certificate::from_pem(read_file("--ca-file", p)?)),
            None => tls.with_webpki_roots(),
        };
        if let (Some(c), Some(k)) = (&conn.client_cert, &conn.client_key) {
            tls = tls.identity(Identity::from_pem(
                read_file("--client-cert", c)?,
                read_file("--client-key", k)?,
            ));
        }
        ep = ep
            .tls_config(tls)
            .map_err(|e| Failure::local(format!("TLS setup for {url}: {e}")))?;
    } else if conn.ca_file.is_some() || conn.client_cert.is_some() {
        return Err(Failure::local(format!(
            "--ca-file and --client-cert need an https:// gateway, not {url}"
        )));
    }
    ep.connect().await.map_err(|e| Failure {
        code: Some(Code::Unavailable),
        message: format!(
            "UNAVAILABLE: cannot reach the gateway at {url}: {}\n  hint: check --gateway (or the configuration's gateway.listen) and that `culprit serve` runs there",
            error_chain(&e)
        ),
        exit: exit::UNAVAILABLE,
    })
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let m = c.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        cur = c.source();
    }
    s
}

fn code_name(c: Code) -> &'static str {
    match c {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// The exit status for a gRPC code.
pub fn exit_for(c: Code) -> u8 {
    match c {
        Code::InvalidArgument | Code::OutOfRange => exit::INVALID,
        Code::Unauthenticated => exit::UNAUTHENTICATED,
        Code::PermissionDenied => exit::PERMISSION_DENIED,
        Code::NotFound => exit::NOT_FOUND,
        Code::AlreadyExists => exit::ALREADY_EXISTS,
        Code::FailedPrecondition => exit::FAILED_PRECONDITION,
        Code::ResourceExhausted => exit::RATE_LIMITED,
        Code::Unavailable | Code::DeadlineExceeded => exit::UNAVAILABLE,
        _ => exit::OTHER,
    }
}

/// A refused call as the operator reads it: code, the server's message, each detail, a hint.
pub fn failure(s: &Status, verb: &str) -> Failure {
    let mut m = format!("{}: {}", code_name(s.code()), s.message());
    let details = s.get_error_details();
    if let Some(b) = details.bad_request() {
        for v in &b.field_violations {
            m.push_str(&format!("\n  field {}: {}", v.field, v.description));
        }
    }
    if let Some(p) = details.precondition_failure() {
        for v in &p.violations {
            m.push_str(&format!(
                "\n  precondition {} ({}): {}",
                v.r#type, v.subject, v.description
            ));
        }
    }
    let info = details.error_info();
    let meta = |k: &str| info.and_then(|i| i.metadata.get(k)).cloned();
    let retry = details
        .retry_info()
        .and_then(|r| r.retry_delay)
        .map(|d| format!("retry in {:.1} s", d.as_secs_f64()));
    let hint = match s.code() {
        Code::Unauthenticated => {
            format!("check {API_KEY_ENV}: it must be a key the gateway's configuration lists")
        }
        Code::PermissionDenied => match (meta("scope"), meta("tenant")) {
            (Some(scope), _) => format!("`{verb}` needs a key with the `{scope}` scope"),
            (_, Some(t)) => format!("the key does not cover tenant `{t}`"),
            _ => "the key does not allow this".to_owned(),
        },
        Code::AlreadyExists => match meta("action_id") {
            Some(id) => format!("follow the pending action with `culprit action {id}`"),
            None => "an action is already pending on the device".to_owned(),
        },
        Code::FailedPrecondition => match meta("missing_role") {
            Some(role) => format!(
                "grant Culprit's MDE application the `{role}` application permission and consent"
            ),
            None => "the device's state or the answer does not allow this now".to_owned(),
        },
        Code::NotFound => {
            "check the key or id; an answer may not exist yet (try `culprit watch`)".to_owned()
        }
        Code::ResourceExhausted => retry
            .clone()
            .unwrap_or_else(|| "slow down and retry".to_owned()),
        Code::Unavailable => match &retry {
            Some(r) => format!("the gateway or a dependency is down; {r}"),
            None => "the gateway or a dependency is down; retry shortly".to_owned(),
        },
        Code::DeadlineExceeded => {
            "no answer within --timeout; for isolate/release check `culprit action` before retrying"
                .to_owned()
        }
        Code::InvalidArgument | Code::OutOfRange => "fix the request and retry".to_owned(),
        _ => String::new(),
    };
    if !hint.is_empty() {
        m.push_str(&format!("\n  hint: {hint}"));
    }
    Failure {
        code: Some(s.code()),
        message: m,
        exit: exit_for(s.code()),
    }
}

fn to_model(c: pb::Correlation) -> Result<Correlation, Failure> {
    Correlation::try_from(c).map_err(|e| Failure {
        code: None,
        message: format!("the gateway sent an unreadable answer: {e}"),
        exit: exit::OTHER,
    })
}

fn json_line(out: &mut (dyn Write + Send), v: &impl serde::Serialize) -> Result<(), Failure> {
    serde_json::to_writer(&mut *out, v)
        .map_err(|e| Failure::local(format!("writing JSON: {e}")))?;
    writeln!(out)?;
    Ok(())
}

async fn get(a: GetArgs, auth: Auth, io: &mut Io<'_>) -> Result<(), Failure> {
    use pb::get_correlation_request::Selector;
    let selector = match (&a.key, a.source, &a.source_id) {
        (Some(k), _, _) => Selector::DetectionKey(k.clone()),
        (None, Some(s), Some(id)) => Selector::SourceRef(pb::SourceRef {
            source: match s {
                SourceArg::Vectra => pb::SourceKind::Vectra,
                SourceArg::Suricata => pb::SourceKind::Suricata,
                SourceArg::Zeek => pb::SourceKind::Zeek,
            } as i32,
            source_id: id.clone(),
            tenant: a.tenant.clone().unwrap_or_default(),
        }),
        _ => {
            return Err(Failure::local(
                "give a detection key, or --source with --source-id",
            ));
        }
    };
    let ch = connect(&a.conn).await?;
    let r = CorrelationServiceClient::new(ch)
        .get_correlation(unary(
            pb::GetCorrelationRequest {
                selector: Some(selector),
            },
            &auth,
            &a.conn,
        ))
        .await
        .map_err(|s| failure(&s, "get"))?;
    let c = r
        .into_inner()
        .correlation
        .ok_or_else(|| Failure::local("the gateway answered without a correlation"))?;
    let c = to_model(c)?;
    match a.conn.format {
        OutFormat::Json => json_line(io.out, &c)?,
        OutFormat::Text => write!(io.out, "{}", render::panel(&c, io.style))?,
    }
    Ok(())
}

fn instant(flag: &str, v: Option<&String>) -> Result<Option<prost_types::Timestamp>, Failure> {
    v.map(|s| {
        Timestamp::parse(s)
            .map(culprit_proto::convert::timestamp_to_proto)
            .map_err(|e| {
                Failure::local(format!(
                    "{flag} {s:?}: {e} (use RFC 3339, e.g. 2023-08-16T04:00:00Z)"
                ))
            })
    })
    .transpose()
}

async fn list(a: ListArgs, auth: Auth, io: &mut Io<'_>) -> Result<(), Failure> {
    if let Some(c) = a.filters.min_confidence
        && !(0.0..=1.0).contains(&c)
    {
        return Err(Failure::local(format!(
            "--min-confidence {c}: between 0 and 1"
        )));
    }
    let mut req = pb::ListCorrelationsRequest {
        tenants: a.filters.tenant.clone(),
        device_id: a.filters.device.clone().unwrap_or_default(),
        statuses: a.filters.statuses()?,
        computed_after: instant("--since", a.since.as_ref())?,
        computed_before: instant("--until", a.until.as_ref())?,
        min_confidence: a.filters.min_confidence,
        page_size: a.page_size,
        page_token: a.page.clone().unwrap_or_default(),
    };
    let ch = connect(&a.conn).await?;
    let mut client = CorrelationServiceClient::new(ch);
    let mut shown = 0usize;
    loop {
        let page = client
            .list_correlations(unary(req.clone(), &auth, &a.conn))
            .await
            .map_err(|s| failure(&s, "list"))?
            .into_inner();
        for c in page.correlations {
            let c = to_model(c)?;
            shown += 1;
            match a.conn.format {
                OutFormat::Json => json_line(io.out, &c)?,
                OutFormat::Text => writeln!(io.out, "{}", render::summary_line(&c, io.style))?,
            }
        }
        if page.next_page_token.is_empty() {
            if a.conn.format == OutFormat::Text && shown == 0 {
                writeln!(io.err, "no answers match")?;
            }
            return Ok(());
        }
        if !a.all {
            writeln!(
                io.err,
                "more answers: repeat with --page {} (same filters), or use --all",
                page.next_page_token
            )?;
            return Ok(());
        }
        req.page_token = page.next_page_token;
    }
}

/// Retry pauses after a dropped watch: quick first, then at most every few seconds.
const RECONNECT_MIN: StdDuration = StdDuration::from_millis(200);
const RECONNECT_MAX: StdDuration = StdDuration::from_secs(5);

/// Codes after which re-connecting from the last position can succeed.
fn resumable(c: Code) -> bool {
    matches!(
        c,
        Code::Unavailable | Code::Unknown | Code::Internal | Code::Cancelled | Code::Aborted
    )
}

async fn watch(a: WatchArgs, auth: Auth, io: &mut Io<'_>) -> Result<(), Failure> {
    if let Some(c) = a.filters.min_confidence
        && !(0.0..=1.0).contains(&c)
    {
        return Err(Failure::local(format!(
            "--min-confidence {c}: between 0 and 1"
        )));
    }
    let statuses = a.filters.statuses()?;
    let mut last: Option<String> = a.from.clone();
    let mut seen = 0usize;
    let mut pause = RECONNECT_MIN;
    // A wrong URL or key fails at once; a stream that worked once is resumed.
    let mut connected = false;
    let limit = a.limit.unwrap_or(usize::MAX);
    if limit == 0 {
        return Ok(());
    }
    loop {
        let req = pb::WatchCorrelationsRequest {
            after_position: last.clone().unwrap_or_default(),
            // Only the first call replays; a resumed one starts after the last position.
            from_oldest: a.from_oldest && last.is_none(),
            tenants: a.filters.tenant.clone(),
            device_id: a.filters.device.clone().unwrap_or_default(),
            statuses: statuses.clone(),
            min_confidence: a.filters.min_confidence,
        };
        let interrupted: Failure = match open_watch(&a.conn, req, &auth).await {
            Err(f) if !connected => return Err(f),
            Err(f) => f,
            Ok(mut stream) => loop {
                connected = true;
                match stream.message().await {
                    Ok(Some(ev)) => {
                        pause = RECONNECT_MIN;
                        let position = ev.position.clone();
                        print_event(ev, a.conn.format, io)?;
                        last = Some(position);
                        seen += 1;
                        if seen >= limit {
                            return Ok(());
                        }
                    }
                    Ok(None) => {
                        break Failure {
                            code: Some(Code::Unavailable),
                            message: "the gateway ended the stream".to_owned(),
                            exit: exit::UNAVAILABLE,
                        };
                    }
                    Err(s) => break failure(&s, "watch"),
                }
            },
        };
        if !interrupted.code.is_some_and(resumable) {
            return Err(interrupted);
        }
        let first_line = interrupted.message.lines().next().unwrap_or_default();
        match &last {
            Some(p) => writeln!(
                io.err,
                "watch interrupted ({first_line}); resuming after position {p} in {:.1} s",
                pause.as_secs_f64()
            )?,
            None => writeln!(
                io.err,
                "watch interrupted ({first_line}); reconnecting in {:.1} s",
                pause.as_secs_f64()
            )?,
        }
        io.err.flush()?;
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(RECONNECT_MAX);
    }
}

async fn open_watch(
    conn: &Conn,
    req: pb::WatchCorrelationsRequest,
    auth: &Auth,
) -> Result<tonic::Streaming<pb::CorrelationEvent>, Failure> {
    let ch = connect(conn).await?;
    CorrelationServiceClient::new(ch)
        .watch_correlations(authorized(req, auth))
        .await
        .map(tonic::Response::into_inner)
        .map_err(|s| failure(&s, "watch"))
}

fn print_event(
    ev: pb::CorrelationEvent,
    format: OutFormat,
    io: &mut Io<'_>,
) -> Result<(), Failure> {
    use pb::correlation_event::Kind;
    let emitted = ev
        .emitted_at
        .as_ref()
        .and_then(|t| culprit_proto::convert::timestamp_from_proto("emitted_at", t).ok());
    let (kind, current, previous, reason) = match ev.kind {
        Some(Kind::NewResult(n)) => ("new_result", n.correlation, None, String::new()),
        Some(Kind::AttributionChanged(c)) => {
            ("attribution_changed", c.current, c.previous, c.reason)
        }
        None => return Ok(()),
    };
    let current = current.map(to_model).transpose()?;
    let previous = previous.map(to_model).transpose()?;
    match format {
        OutFormat::Json => json_line(
            io.out,
            &json!({
                "position": ev.position,
                "emitted_at": emitted.map(|t| t.to_millis_string()),
                "kind": kind,
                "correlation": current,
                "previous": previous,
                "reason": (!reason.is_empty()).then_some(reason),
            }),
        )?,
        OutFormat::Text => {
            let label = if kind == "new_result" {
                "new    "
            } else {
                "changed"
            };
            let line = current
                .as_ref()
                .map(|c| render::summary_line(c, io.style))
                .unwrap_or_default();
            writeln!(io.out, "[{}] {label} {line}", ev.position)?;
            if !reason.is_empty() {
                for l in render::wrap(&reason, io.style.width, 4) {
                    writeln!(io.out, "    {l}")?;
                }
            }
        }
    }
    io.out.flush()?;
    Ok(())
}

fn enum_name(v: &str, prefix: &str) -> String {
    v.strip_prefix(prefix).unwrap_or(v).to_ascii_lowercase()
}

fn print_action(a: Option<pb::MachineAction>, conn: &Conn, io: &mut Io<'_>) -> Result<(), Failure> {
    let a = a.ok_or_else(|| Failure::local("the gateway answered without an action"))?;
    let ts = |t: &Option<prost_types::Timestamp>| {
        t.as_ref()
            .and_then(|t| culprit_proto::convert::timestamp_from_proto("t", t).ok())
            .map(|t| t.to_millis_string())
    };
    let kind = pb::ActionType::try_from(a.r#type).map_or_else(
        |_| "unknown".to_owned(),
        |t| enum_name(t.as_str_name(), "ACTION_TYPE_"),
    );
    let isolation = pb::IsolationType::try_from(a.isolation_type)
        .ok()
        .filter(|t| *t != pb::IsolationType::Unspecified)
        .map(|t| enum_name(t.as_str_name(), "ISOLATION_TYPE_"));
    let status = pb::ActionStatus::try_from(a.status).map_or_else(
        |_| "unknown".to_owned(),
        |t| enum_name(t.as_str_name(), "ACTION_STATUS_"),
    );
    match conn.format {
        OutFormat::Json => json_line(
            io.out,
            &json!({
                "id": a.id,
                "tenant": a.tenant,
                "type": kind,
                "isolation_type": isolation,
                "status": status,
                "device_id": a.device_id,
                "device_name": a.device_name,
                "requestor": a.requestor,
                "comment": a.comment,
                "detection_key": (!a.detection_key.is_empty()).then_some(&a.detection_key),
                "created_at": ts(&a.created_at),
                "updated_at": ts(&a.updated_at),
            }),
        )?,
        OutFormat::Text => {
            let or_unknown = |s: &str| {
                if s.is_empty() {
                    "unknown".to_owned()
                } else {
                    s.to_owned()
                }
            };
            let what = match &isolation {
                Some(i) => format!("{kind} ({i})"),
                None => kind.clone(),
            };
            writeln!(io.out, "Action {} · {what} · {status}", a.id)?;
            writeln!(
                io.out,
                "  Device      {} ({})",
                or_unknown(&a.device_name),
                or_unknown(&a.device_id)
            )?;
            writeln!(io.out, "  Tenant      {}", or_unknown(&a.tenant))?;
            writeln!(io.out, "  Requested   by {}", or_unknown(&a.requestor))?;
            for (i, l) in render::wrap(&or_unknown(&a.comment), io.style.width, 14)
                .iter()
                .enumerate()
            {
                writeln!(io.out, "  {:<11} {l}", if i == 0 { "Comment" } else { "" })?;
            }
            if !a.detection_key.is_empty() {
                writeln!(io.out, "  Detection   {}", a.detection_key)?;
            }
            writeln!(
                io.out,
                "  Created     {}",
                ts(&a.created_at).unwrap_or_else(|| "unknown".into())
            )?;
            writeln!(
                io.out,
                "  Updated     {}",
                ts(&a.updated_at).unwrap_or_else(|| "unknown".into())
            )?;
            if matches!(status.as_str(), "pending" | "in_progress") {
                writeln!(
                    io.out,
                    "  Follow with `culprit action {} --tenant {}`",
                    a.id, a.tenant
                )?;
            }
        }
    }
    Ok(())
}
