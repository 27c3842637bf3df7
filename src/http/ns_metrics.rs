//! `GET /api/v1/wal/namespace/{ns}/metrics?from=&to=`: a namespace's figures over a time
//! range, from the per-minute series the write path records ([`crate::metrics::series`]).

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::auth::{authorize_namespace, Caller};
use super::error::ApiError;
use super::wal::lookup_namespace;
use crate::app::App;
use crate::metrics::series::{Bucket, BUCKET_MS, RETENTION_MINUTES};
use crate::model::time::{parse_rfc3339_ms, rfc3339_ms};
use crate::model::validate::FieldError;

/// The default range: the last hour.
const DEFAULT_RANGE_MS: u64 = 3_600_000;

/// The latest time a query may name: 9999-12-31T23:59:59.999Z, the last instant an
/// RFC 3339 timestamp can write. A larger number of milliseconds is refused with a 400 that
/// names the parameter (the read and DLQ APIs use the same bound).
pub const MAX_TIME_MS: u64 = 253_402_300_799_999;

/// `ms` when it is at most [`MAX_TIME_MS`], else the error naming `field`.
pub(crate) fn check_time(field: &str, ms: u64) -> Result<u64, FieldError> {
    if ms <= MAX_TIME_MS {
        Ok(ms)
    } else {
        Err(FieldError {
            field: field.into(),
            message: format!(
                "out of range: at most {MAX_TIME_MS} ms since the epoch ({})",
                rfc3339_ms(MAX_TIME_MS)
            ),
        })
    }
}

/// The route of this resource.
pub fn router() -> Router<Arc<App>> {
    Router::new().route(
        "/api/v1/wal/namespace/{namespace}/metrics",
        get(namespace_metrics),
    )
}

/// Query of the metrics route.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct MetricsQuery {
    /// Start of the range: ISO 8601 (`2025-10-03T10:30:00Z`, or a date for its midnight UTC)
    /// or milliseconds since the epoch. Default: an hour before `to`.
    pub from: Option<String>,
    /// End of the range, same forms. Default: now.
    pub to: Option<String>,
}

/// The range answered.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TimeRange {
    /// Start (RFC 3339).
    pub from: String,
    /// End (RFC 3339).
    pub to: String,
}

/// The figures of the range (the seeds' `metrics` object, plus the raw counts).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MetricsSummary {
    /// Write requests that reached the log: accepted + duplicates + errors.
    pub total_requests: u64,
    /// Writes accepted (appended, answered 202).
    pub writes: u64,
    /// Writes answered as idempotent duplicates (nothing appended).
    pub duplicates: u64,
    /// Writes that failed on the server's side (storage).
    pub errors: u64,
    /// Request body bytes of the accepted writes.
    pub bytes: u64,
    /// (writes + duplicates) / totalRequests; null without requests.
    pub success_rate: Option<f64>,
    /// errors / totalRequests; null without requests.
    pub error_rate: Option<f64>,
    /// Mean latency of the accepted writes (accept → answer), milliseconds; null without writes.
    pub average_latency: Option<f64>,
    /// Accepted writes per second over the range's minutes (up to now).
    pub throughput: f64,
}

/// One minute that saw traffic.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MetricsBucket {
    /// Start of the minute (RFC 3339).
    pub timestamp: String,
    /// Writes accepted.
    pub writes: u64,
    /// Duplicates answered.
    pub duplicates: u64,
    /// Server-side write errors.
    pub errors: u64,
    /// Body bytes accepted.
    pub bytes: u64,
    /// Mean write latency, milliseconds; null without writes.
    pub average_latency: Option<f64>,
}

/// A namespace's metrics over a range.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct NamespaceMetrics {
    /// The namespace.
    pub namespace: String,
    /// The range asked for (or defaulted).
    pub time_range: TimeRange,
    /// Width of a bucket: 60 s. A bucket counts when its minute overlaps the range.
    pub bucket_seconds: u64,
    /// How far back the series goes: 24 h (figures restart at zero with the process).
    pub retention_seconds: u64,
    /// The totals.
    pub metrics: MetricsSummary,
    /// The minutes of the range that saw traffic, oldest first.
    pub series: Vec<MetricsBucket>,
}

/// A time given as ISO 8601 (RFC 3339, or a bare date) or as milliseconds since the epoch.
fn parse_time(field: &str, text: &str) -> Result<u64, FieldError> {
    let t = text.trim();
    let parsed = if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) {
        // Digits only: a number too large for u64 is as out of range as u64::MAX.
        Some(t.parse::<u64>().unwrap_or(u64::MAX))
    } else if t.len() == 10 {
        parse_rfc3339_ms(&format!("{t}T00:00:00Z"))
    } else {
        parse_rfc3339_ms(t)
    };
    let ms = parsed.ok_or_else(|| FieldError {
        field: field.into(),
        message: format!(
            "{text:?} is neither an ISO 8601 time (2025-10-03T10:30:00Z) nor milliseconds since the epoch"
        ),
    })?;
    check_time(field, ms)
}

/// The range of a query: `(from, to)` in ms, with the defaults applied.
fn range(q: &MetricsQuery, now_ms: u64) -> Result<(u64, u64), ApiError> {
    let mut errs = Vec::new();
    let mut get = |field: &str, v: Option<&String>| match v.map(|t| parse_time(field, t)) {
        Some(Ok(ms)) => Some(ms),
        Some(Err(e)) => {
            errs.push(e);
            None
        }
        None => None,
    };
    let from = get("from", q.from.as_ref());
    let to = get("to", q.to.as_ref());
    if !errs.is_empty() {
        return Err(ApiError::validation(errs));
    }
    let to = to.unwrap_or(now_ms);
    let from = from.unwrap_or_else(|| to.saturating_sub(DEFAULT_RANGE_MS));
    if from > to {
        return Err(ApiError::validation(vec![FieldError {
            field: "from".into(),
            message: format!("is after `to` ({} > {})", rfc3339_ms(from), rfc3339_ms(to)),
        }]));
    }
    Ok((from, to))
}

fn ratio(part: u64, whole: u64) -> Option<f64> {
    (whole > 0).then(|| part as f64 / whole as f64)
}

/// A namespace's writes, duplicates, errors, bytes and write latency over a range, from
/// per-minute counters kept in memory for the last 24 hours.
#[utoipa::path(
    get, path = "/api/v1/wal/namespace/{namespace}/metrics", tag = "wal",
    params(("namespace" = String, Path, description = "The namespace"), MetricsQuery),
    responses(
        (status = 200, description = "Metrics over the range", body = NamespaceMetrics),
        (status = 400, description = "Invalid from/to (the field is named), or from after to", body = super::error::ErrorEnvelope),
        (status = 401, description = "No or unknown API key", body = super::error::ErrorEnvelope),
        (status = 403, description = "Key without access to the namespace", body = super::error::ErrorEnvelope),
        (status = 404, description = "Unknown namespace", body = super::error::ErrorEnvelope),
    ),
    security((), ("api_key" = []), ("bearer" = []))
)]
pub async fn namespace_metrics(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(namespace): Path<String>,
    query: Result<Query<MetricsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<NamespaceMetrics>, ApiError> {
    let Query(q) = query?;
    let name = crate::model::namespace::normalise_namespace_name(&namespace);
    let ns = lookup_namespace(&app, &name)?;
    authorize_namespace(&app, &caller, &ns, &name)?;
    let now = wald_storage::now_ms();
    let (from, to) = range(&q, now)?;
    let w = app.metrics.series.query(&name, from, to);
    let t = &w.totals;
    let answered = t.writes.saturating_add(t.duplicates);
    let total = answered.saturating_add(t.errors);
    // The minutes counted, from the first one's start to the last one's end (or now).
    // Saturating: `to` is bounded by MAX_TIME_MS, but the arithmetic must not trust that.
    let span_ms = (to / BUCKET_MS)
        .saturating_add(1)
        .saturating_mul(BUCKET_MS)
        .min(now.max(from))
        .saturating_sub(from / BUCKET_MS * BUCKET_MS)
        .max(1000);
    let series = w.buckets.iter().map(bucket_view).collect();
    Ok(Json(NamespaceMetrics {
        namespace: name,
        time_range: TimeRange {
            from: rfc3339_ms(from),
            to: rfc3339_ms(to),
        },
        bucket_seconds: BUCKET_MS / 1000,
        retention_seconds: RETENTION_MINUTES * 60,
        metrics: MetricsSummary {
            total_requests: total,
            writes: t.writes,
            duplicates: t.duplicates,
            errors: t.errors,
            bytes: t.bytes,
            success_rate: ratio(answered, total),
            error_rate: ratio(t.errors, total),
            average_latency: t.mean_latency_ms(),
            throughput: t.writes as f64 * 1000.0 / span_ms as f64,
        },
        series,
    }))
}

fn bucket_view(b: &Bucket) -> MetricsBucket {
    MetricsBucket {
        timestamp: rfc3339_ms(b.minute * BUCKET_MS),
        writes: b.writes,
        duplicates: b.duplicates,
        errors: b.errors,
        bytes: b.bytes,
        average_latency: b.mean_latency_ms(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(from: Option<&str>, to: Option<&str>) -> MetricsQuery {
        MetricsQuery {
            from: from.map(str::to_owned),
            to: to.map(str::to_owned),
        }
    }

    #[test]
    fn times_parse_as_iso_or_ms() {
        assert_eq!(parse_time("from", "1000").unwrap(), 1000);
        assert_eq!(
            parse_time("from", "1970-01-01T00:00:01.500Z").unwrap(),
            1500
        );
        assert_eq!(parse_time("from", "1970-01-02").unwrap(), 86_400_000);
        assert_eq!(parse_time("to", "yesterday").unwrap_err().field, "to");
        assert!(parse_time("to", "").is_err());
        assert!(parse_time("to", "-5").is_err());
        assert_eq!(
            parse_time("to", &MAX_TIME_MS.to_string()).unwrap(),
            MAX_TIME_MS
        );
        let e = parse_time("to", "18446744073709551615").unwrap_err();
        assert_eq!(e.field, "to");
        assert!(e.message.contains("out of range"), "{}", e.message);
        assert!(parse_time("from", "253402300800000").is_err());
        assert!(parse_time("from", "99999999999999999999999").is_err());
        assert_eq!(
            parse_time("to", "9999-12-31").unwrap(),
            MAX_TIME_MS - 86_399_999
        );
    }

    #[test]
    fn ranges_default_to_the_last_hour_and_refuse_inverted_ones() {
        let now = 10 * DEFAULT_RANGE_MS;
        assert_eq!(
            range(&q(None, None), now).unwrap(),
            (now - DEFAULT_RANGE_MS, now)
        );
        assert_eq!(range(&q(Some("5"), None), now).unwrap(), (5, now));
        assert_eq!(
            range(&q(None, Some("7200000")), now).unwrap(),
            (3_600_000, 7_200_000)
        );
        let e = range(&q(Some("9"), Some("8")), now).unwrap_err();
        assert_eq!(e.details.unwrap()["fields"][0]["field"], "from");
        let e = range(&q(Some("x"), Some("y")), now).unwrap_err();
        let d = e.details.unwrap();
        assert_eq!(d["fields"][0]["field"], "from");
        assert_eq!(d["fields"][1]["field"], "to");
    }
}
