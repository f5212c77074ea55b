//! Tracing, metrics and OpenTelemetry set-up.
