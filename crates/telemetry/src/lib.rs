//! Tracing set-up for every Culprit process. Logs go to stderr so stdout stays clean for JSON
//! Lines and panels.
//!
//! Every span also gets an OpenTelemetry context, exported over OTLP/HTTP when an endpoint is
//! configured, and carried between services as W3C trace context (see [`propagation`]): one
//! detection is one trace from ingest to the stored answer.

pub mod propagation;

use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{SdkTracerProvider, Tracer};
use tracing::Level;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::fmt::writer::BoxMakeWriter;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("telemetry.log_filter {filter:?} is not a valid filter: {reason}")]
    Filter { filter: String, reason: String },
    #[error("telemetry.log_format {0:?} is not one of \"text\", \"json\"")]
    Format(String),
    #[error("telemetry.otlp_endpoint {endpoint:?}: {reason}")]
    Endpoint { endpoint: String, reason: String },
    #[error("a global tracing subscriber is already installed")]
    AlreadyInstalled,
    #[error("flushing spans to the OTLP endpoint: {0}")]
    Flush(String),
}

/// How a process traces.
#[derive(Debug, Clone)]
pub struct TelemetryConfig {
    /// `text` or `json`.
    pub log_format: String,
    /// An `EnvFilter` directive for the logs; `RUST_LOG`, when set, wins.
    pub log_filter: String,
    /// `service.name` of exported spans (`culprit-hunter`, ...).
    pub service_name: String,
    /// OTLP/HTTP collector, e.g. `http://otel-collector:4318`; `None`: no export.
    pub otlp_endpoint: Option<String>,
    /// Bound on one export request.
    pub otlp_timeout: Duration,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            log_format: "text".into(),
            log_filter: "info".into(),
            service_name: "culprit".into(),
            otlp_endpoint: None,
            otlp_timeout: Duration::from_secs(10),
        }
    }
}

/// The installed tracing pipeline. Call [`Telemetry::shutdown`] before exiting so buffered
/// spans reach the collector.
#[derive(Debug)]
pub struct Telemetry {
    provider: SdkTracerProvider,
}

impl Telemetry {
    /// Flushes buffered spans and stops the exporter. Blocks while the last batch is sent
    /// (at most the export timeout): call it from a blocking context.
    pub fn shutdown(&self) -> Result<(), TelemetryError> {
        let flushed = self.provider.force_flush();
        let stopped = self.provider.shutdown();
        flushed
            .and(stopped)
            .map_err(|e| TelemetryError::Flush(e.to_string()))
    }
}

/// Installs the global subscriber with text logs and no span export. `RUST_LOG`, when set,
/// wins over `filter`.
pub fn init(format: &str, filter: &str) -> Result<(), TelemetryError> {
    let cfg = TelemetryConfig {
        log_format: format.to_owned(),
        log_filter: filter.to_owned(),
        ..TelemetryConfig::default()
    };
    // Without an exporter there is nothing to flush: the provider can be let go.
    install(&cfg).map(drop)
}

/// Installs the global subscriber: logs on stderr, OpenTelemetry spans (exported when
/// `otlp_endpoint` is set) and the W3C propagators.
pub fn install(cfg: &TelemetryConfig) -> Result<Telemetry, TelemetryError> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(f) if !f.is_empty() => f,
        _ => cfg.log_filter.clone(),
    };
    let env_filter = EnvFilter::try_new(&filter).map_err(|e| TelemetryError::Filter {
        filter: filter.clone(),
        reason: e.to_string(),
    })?;
    let json = match cfg.log_format.as_str() {
        "text" => false,
        "json" => true,
        other => return Err(TelemetryError::Format(other.to_owned())),
    };
    let provider = tracer_provider(
        &cfg.service_name,
        cfg.otlp_endpoint.as_deref(),
        cfg.otlp_timeout,
    )?;
    let writer = BoxMakeWriter::new(std::io::stderr);
    let logs = if json {
        tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_writer(writer)
            .with_filter(env_filter)
            .boxed()
    } else {
        tracing_subscriber::fmt::layer()
            .with_target(false)
            .with_writer(writer)
            .with_filter(env_filter)
            .boxed()
    };
    tracing_subscriber::registry()
        .with(logs)
        .with(otel_layer(&provider))
        .try_init()
        .map_err(|_| TelemetryError::AlreadyInstalled)?;
    Ok(Telemetry { provider })
}

/// A tracer provider for `service_name`: batches spans to `otlp_endpoint` (OTLP over HTTP
/// with protobuf; `/v1/traces` is appended to an endpoint without a path) or, without one,
/// only mints trace ids so the context still propagates and shows in logs.
pub fn tracer_provider(
    service_name: &str,
    otlp_endpoint: Option<&str>,
    timeout: Duration,
) -> Result<SdkTracerProvider, TelemetryError> {
    let resource = Resource::builder()
        .with_service_name(service_name.to_owned())
        .build();
    let builder = SdkTracerProvider::builder().with_resource(resource);
    let Some(endpoint) = otlp_endpoint.filter(|e| !e.trim().is_empty()) else {
        return Ok(builder.build());
    };
    let url = traces_url(endpoint)?;
    use opentelemetry_otlp::WithExportConfig as _;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
        .with_endpoint(url)
        .with_timeout(timeout)
        .build()
        .map_err(|e| TelemetryError::Endpoint {
            endpoint: endpoint.to_owned(),
            reason: e.to_string(),
        })?;
    Ok(builder.with_batch_exporter(exporter).build())
}

/// The span layer over `provider`, for [`install`] and for tests that compose their own
/// subscriber (e.g. with an in-memory exporter). It sees `culprit*` spans at INFO and above
/// whatever the log filter says, so a quiet log level does not break traces.
pub fn otel_layer<S>(provider: &SdkTracerProvider) -> impl Layer<S> + use<S>
where
    S: tracing::Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span>,
{
    let tracer: Tracer = provider.tracer("culprit");
    tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_filter(span_targets())
}

fn span_targets() -> Targets {
    Targets::new()
        .with_target("culprit", Level::INFO)
        .with_default(Level::WARN)
}

fn traces_url(endpoint: &str) -> Result<String, TelemetryError> {
    let bad = |reason: &str| TelemetryError::Endpoint {
        endpoint: endpoint.to_owned(),
        reason: reason.to_owned(),
    };
    let uri: http::Uri = endpoint
        .parse()
        .map_err(|e: http::uri::InvalidUri| bad(&e.to_string()))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        _ => return Err(bad("must be an http:// or https:// URL")),
    }
    if uri.host().is_none() {
        return Err(bad("has no host"));
    }
    Ok(match uri.path() {
        "" | "/" => format!("{}/v1/traces", endpoint.trim_end_matches('/')),
        _ => endpoint.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn bad_settings_are_named() {
        assert!(matches!(
            init("yaml", "info"),
            Err(TelemetryError::Format(_))
        ));
        let err = init("text", "info,[[[").unwrap_err();
        assert!(err.to_string().contains("telemetry.log_filter"), "{err}");
    }

    #[test]
    fn endpoints_get_the_traces_path_and_are_checked() {
        assert_eq!(
            traces_url("http://collector:4318").unwrap(),
            "http://collector:4318/v1/traces"
        );
        assert_eq!(
            traces_url("https://c.example/").unwrap(),
            "https://c.example/v1/traces"
        );
        assert_eq!(
            traces_url("http://c:4318/custom/path").unwrap(),
            "http://c:4318/custom/path"
        );
        for bad in ["collector:4318", "ftp://c/", "not a url"] {
            let err = traces_url(bad).unwrap_err().to_string();
            assert!(err.contains("telemetry.otlp_endpoint"), "{bad}: {err}");
        }
    }
}
