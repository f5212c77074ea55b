//! gRPC observability for a tonic server: a span per call that joins the caller's trace
//! (W3C `traceparent` metadata) and a tower layer that counts calls by method and status.
//!
//! ```text
//! Server::builder()
//!     .trace_fn(culprit_metrics::grpc::request_span)
//!     .layer(culprit_metrics::grpc::GrpcMetricsLayer::default())
//! ```

use std::task::{Context, Poll};

use futures::future::BoxFuture;
use tokio::time::Instant;
use tower::{Layer, Service};

use crate::{Metrics, metrics};

/// The span of one gRPC call; its parent is the caller's trace when the request carries
/// `traceparent` metadata.
pub fn request_span<B>(req: &http::Request<B>) -> tracing::Span {
    let span = tracing::info_span!(
        "grpc.request",
        rpc.method = %req.uri().path(),
        otel.kind = "server",
    );
    culprit_telemetry::propagation::set_parent(
        &span,
        culprit_telemetry::propagation::extract_http(req.headers()),
    );
    span
}

/// Counts calls into `culprit_grpc_requests_total{method,code}` and times them (to the
/// response headers: for a server stream, its opening) into `culprit_grpc_request_seconds`.
/// The code is the `grpc-status` of the response headers (errors are sent that way), else 0.
/// Calls to unknown methods are labelled `unknown`, so clients cannot grow the label set.
#[derive(Debug, Clone, Default)]
pub struct GrpcMetricsLayer {
    metrics: Option<Metrics>,
}

impl GrpcMetricsLayer {
    /// Records into `metrics` instead of the process-wide registry.
    pub fn with_metrics(metrics: Metrics) -> Self {
        Self {
            metrics: Some(metrics),
        }
    }
}

impl<S> Layer<S> for GrpcMetricsLayer {
    type Service = GrpcMetrics<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcMetrics {
            inner,
            metrics: self.metrics.clone().unwrap_or_else(|| metrics().clone()),
        }
    }
}

/// See [`GrpcMetricsLayer`].
#[derive(Debug, Clone)]
pub struct GrpcMetrics<S> {
    inner: S,
    metrics: Metrics,
}

/// `grpc-status` UNIMPLEMENTED: the method does not exist.
const UNIMPLEMENTED: &str = "12";

impl<S, B, RB> Service<http::Request<B>> for GrpcMetrics<S>
where
    S: Service<http::Request<B>, Response = http::Response<RB>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let method = req.uri().path().to_owned();
        let start = Instant::now();
        let metrics = self.metrics.clone();
        let call = self.inner.call(req);
        Box::pin(async move {
            let res = call.await;
            let code = match &res {
                Ok(r) => r
                    .headers()
                    .get("grpc-status")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("0")
                    .to_owned(),
                Err(_) => "transport".to_owned(),
            };
            let method = if code == UNIMPLEMENTED {
                "unknown"
            } else {
                method.as_str()
            };
            metrics.grpc_request(method, &code, start.elapsed());
            res
        })
    }
}
