//! Tracing set-up for every Culprit process. Logs go to stderr so stdout stays clean for JSON
//! Lines and panels.

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::writer::BoxMakeWriter;

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("telemetry.log_filter {filter:?} is not a valid filter: {reason}")]
    Filter { filter: String, reason: String },
    #[error("telemetry.log_format {0:?} is not one of \"text\", \"json\"")]
    Format(String),
    #[error("a global tracing subscriber is already installed")]
    AlreadyInstalled,
}

/// Installs the global subscriber. `RUST_LOG`, when set, wins over `filter`.
pub fn init(format: &str, filter: &str) -> Result<(), TelemetryError> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(f) if !f.is_empty() => f,
        _ => filter.to_owned(),
    };
    let env_filter = EnvFilter::try_new(&filter).map_err(|e| TelemetryError::Filter {
        filter: filter.clone(),
        reason: e.to_string(),
    })?;
    let writer = BoxMakeWriter::new(std::io::stderr);
    let builder = tracing_subscriber::fmt()
        .with_env_filter(env_filter)
        .with_writer(writer);
    let result = match format {
        "text" => builder.with_target(false).try_init(),
        "json" => builder.json().flatten_event(true).try_init(),
        other => return Err(TelemetryError::Format(other.to_owned())),
    };
    result.map_err(|_| TelemetryError::AlreadyInstalled)
}

#[cfg(test)]
mod tests {
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
}
