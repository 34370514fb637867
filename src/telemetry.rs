//! Logs and metrics.
//!
//! * Tracing: JSON lines in production (one object per event, for log
//!   pipelines), human-readable in development (coloured only when
//!   standard output is a terminal). One span per request with
//!   method, route *template*, request id and, once known, the user id; one
//!   completion line with status and latency. Bodies, headers and query
//!   strings are never logged, so no token or password can reach a log.
//! * Metrics: the `metrics` facade with the Prometheus exporter, served on a
//!   separate listener (`METRICS_ADDR`) that is never exposed publicly.
//!   Labels are low-cardinality by construction: the route template, never
//!   the raw path, and never a user id, email or IP.

use crate::{config::LogFormat, error::ErrorCause, http::request_id::RequestId};
use axum::{
    extract::{MatchedPath, Request, State},
    middleware::Next,
    response::Response,
    routing::get,
    Router,
};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::{sync::OnceLock, time::Instant};
use tracing::Instrument;
use tracing_subscriber::{fmt, prelude::*, EnvFilter};

/// Installs the global tracing subscriber (a no-op if one is already set,
/// as happens when many test servers share a process).
pub fn init_tracing(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,tower_http=warn"));
    let registry = tracing_subscriber::registry().with(filter);
    let _ = match format {
        LogFormat::Json => registry
            .with(
                fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true),
            )
            .try_init(),
        // Colour only on a terminal: a file or a pipe (a log shipper,
        // `journald`, `| tee`) would get raw ANSI escapes. `NO_COLOR`
        // (no-color.org) turns colour off on a terminal too.
        LogFormat::Pretty => registry
            .with(fmt::layer().compact().with_ansi(colour_stdout()))
            .try_init(),
    };
}

/// Whether development logs on standard output may use ANSI colour.
fn colour_stdout() -> bool {
    use std::io::IsTerminal;
    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

static PROMETHEUS: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// The process-wide Prometheus recorder, installed on first use.
pub fn metrics_handle() -> Option<PrometheusHandle> {
    PROMETHEUS
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Suffix("_duration_seconds".into()),
                    &[
                        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                        10.0,
                    ],
                )
                .ok()?;
            match builder.install_recorder() {
                Ok(handle) => Some(handle),
                Err(e) => {
                    tracing::error!(error = %e, "could not install the metrics recorder");
                    None
                }
            }
        })
        .clone()
}

/// The router of the metrics listener: `GET /metrics` only.
pub fn metrics_router() -> Router {
    Router::new()
        .route("/metrics", get(render_metrics))
        .with_state(metrics_handle())
}

async fn render_metrics(State(handle): State<Option<PrometheusHandle>>) -> Response {
    let body = handle.map(|h| h.render()).unwrap_or_default();
    Response::builder()
        .header("content-type", "text/plain; version=0.0.4")
        .body(body.into())
        .unwrap_or_default()
}

/// Span, completion log line and request metrics for one request.
pub async fn observe(req: Request, next: Next) -> Response {
    let start = Instant::now();
    // A client may send any token as a method: only the standard ones are
    // named in logs and metric labels, so a stream of invented methods
    // cannot add a metric series each (or put client text in a log line).
    let method = match *req.method() {
        axum::http::Method::GET => "GET",
        axum::http::Method::HEAD => "HEAD",
        axum::http::Method::POST => "POST",
        axum::http::Method::PUT => "PUT",
        axum::http::Method::PATCH => "PATCH",
        axum::http::Method::DELETE => "DELETE",
        axum::http::Method::OPTIONS => "OPTIONS",
        axum::http::Method::TRACE => "TRACE",
        axum::http::Method::CONNECT => "CONNECT",
        _ => "OTHER",
    };
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let request_id = req
        .extensions()
        .get::<RequestId>()
        .map(|r| r.0.clone())
        .unwrap_or_default();
    let span = tracing::info_span!(
        "request",
        method = %method,
        route = %route,
        request_id = %request_id,
        user_id = tracing::field::Empty,
    );
    let response = next.run(req).instrument(span.clone()).await;
    let status = response.status();
    let latency = start.elapsed();
    let _entered = span.enter();
    if let Some(ErrorCause(cause)) = response.extensions().get::<ErrorCause>() {
        tracing::error!(
            status = status.as_u16(),
            latency_ms = latency.as_millis() as u64,
            error = format!("{cause:#}"),
            "request failed"
        );
    } else if status.is_server_error() {
        tracing::warn!(
            status = status.as_u16(),
            latency_ms = latency.as_millis() as u64,
            "request finished"
        );
    } else {
        tracing::info!(
            status = status.as_u16(),
            latency_ms = latency.as_millis() as u64,
            "request finished"
        );
    }
    let labels = [
        ("method", method.to_owned()),
        ("route", route),
        ("status", status.as_u16().to_string()),
    ];
    metrics::counter!("http_requests_total", &labels).increment(1);
    metrics::histogram!("http_request_duration_seconds", &labels).record(latency.as_secs_f64());
    response
}
