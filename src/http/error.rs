//! The error envelope: every error answer is
//! `{success:false, error:{code,message,details}, metadata:{requestId,timestamp,path,method}}`
//! with an explicit status per code — never a 400 for a server fault, never a 500 for a
//! client's mistake.

use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::model::time::rfc3339_ms;
use crate::model::validate::FieldError;

/// The error codes, each with its one status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorCode {
    /// 400: the request body or parameters are invalid; `details` names every failing field.
    ValidationError,
    /// 400: the body is not JSON.
    MalformedJson,
    /// 401: no API key, or an unknown one.
    Unauthorized,
    /// 403: the key may not use this namespace (or is not the admin key).
    Forbidden,
    /// 403: the namespace exists but is disabled.
    NamespaceDisabled,
    /// 403: the `Host` header names no host of `[server] allowed_hosts` (DNS rebinding).
    HostNotAllowed,
    /// 403: the `Origin` header names a site that is neither this host nor one of
    /// `[server.cors] allowed_origins`.
    OriginNotAllowed,
    /// 404: no such namespace.
    NamespaceNotFound,
    /// 404: no such message.
    MessageNotFound,
    /// 404: no such transaction.
    TransactionNotFound,
    /// 404: no such API key.
    ApiKeyNotFound,
    /// 307: another instance of the cluster owns the namespace; `Location` names it.
    NotOwner,
    /// 404: no such route.
    NotFound,
    /// 405: the route exists, the method does not.
    MethodNotAllowed,
    /// 409: the resource exists already.
    Conflict,
    /// 413: the message is larger than the namespace's `maxMessageSize` (or the body limit).
    MessageSizeLimitExceeded,
    /// 415: the body is not `application/json`.
    UnsupportedMediaType,
    /// 416: an offset outside the log.
    OffsetOutOfRange,
    /// 429: rate limited; `Retry-After` says when to come back.
    RateLimited,
    /// 431: a request header is too large.
    HeaderTooLarge,
    /// 503: the log refuses writes after a disk failure (poisoned).
    StorageUnavailable,
    /// 503: the disk is full.
    DiskFull,
    /// 503: the append queue is full; retry shortly.
    Overloaded,
    /// 503: the service is shutting down.
    ShuttingDown,
    /// 503: the server holds its most connections (`[server] max_connections`); the new
    /// connection is answered with this and closed.
    TooManyConnections,
    /// 504: the request took longer than the request timeout.
    RequestTimeout,
    /// 500: a bug; the request id is in the logs.
    InternalError,
}

impl ErrorCode {
    /// The HTTP status of this code.
    #[must_use]
    pub fn status(self) -> StatusCode {
        match self {
            Self::ValidationError | Self::MalformedJson => StatusCode::BAD_REQUEST,
            Self::NotOwner => StatusCode::TEMPORARY_REDIRECT,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::Forbidden
            | Self::NamespaceDisabled
            | Self::HostNotAllowed
            | Self::OriginNotAllowed => StatusCode::FORBIDDEN,
            Self::NamespaceNotFound
            | Self::MessageNotFound
            | Self::TransactionNotFound
            | Self::ApiKeyNotFound
            | Self::NotFound => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::Conflict => StatusCode::CONFLICT,
            Self::MessageSizeLimitExceeded => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::OffsetOutOfRange => StatusCode::RANGE_NOT_SATISFIABLE,
            Self::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            Self::HeaderTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Self::StorageUnavailable | Self::DiskFull | Self::Overloaded | Self::ShuttingDown => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Self::TooManyConnections => StatusCode::SERVICE_UNAVAILABLE,
            Self::RequestTimeout => StatusCode::GATEWAY_TIMEOUT,
            Self::InternalError => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// An error answer, before the request's metadata is attached.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// The code (decides the status).
    pub code: ErrorCode,
    /// A sentence for people.
    pub message: String,
    /// Structured details (failing fields, limits).
    pub details: Option<serde_json::Value>,
    /// Seconds for `Retry-After` (429 and 503).
    pub retry_after: Option<u64>,
    /// `Location` (307).
    pub location: Option<String>,
}

impl ApiError {
    /// An error with a code and message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            details: None,
            retry_after: None,
            location: None,
        }
    }

    /// Adds structured details.
    #[must_use]
    pub fn with_details(mut self, details: serde_json::Value) -> Self {
        self.details = Some(details);
        self
    }

    /// Adds a `Retry-After`.
    #[must_use]
    pub fn retry_after(mut self, secs: u64) -> Self {
        self.retry_after = Some(secs);
        self
    }

    /// A 400 naming every failing field.
    #[must_use]
    #[allow(clippy::needless_pass_by_value)] // handed over by `map_err`
    pub fn validation(errors: Vec<FieldError>) -> Self {
        let message = match errors.as_slice() {
            [one] if one.field.is_empty() => one.message.clone(),
            [one] => format!("{}: {}", one.field, one.message),
            many => format!(
                "{} fields are invalid: {}",
                many.len(),
                many.iter()
                    .map(|e| e.field.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        let code = if errors
            .iter()
            .any(|e| e.field.is_empty() && e.message.contains("JSON"))
        {
            ErrorCode::MalformedJson
        } else {
            ErrorCode::ValidationError
        };
        Self::new(code, message).with_details(serde_json::json!({ "fields": errors }))
    }

    /// A 500 for a bug; the cause is logged, not shown.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error");
        Self::new(
            ErrorCode::InternalError,
            "an unexpected error occurred; see the server log for the request id",
        )
    }
}

impl From<axum::extract::rejection::QueryRejection> for ApiError {
    /// A query string that does not parse: 400 naming `query`.
    fn from(e: axum::extract::rejection::QueryRejection) -> Self {
        Self::validation(vec![FieldError {
            field: "query".into(),
            message: e.body_text(),
        }])
    }
}

impl From<wald_storage::Error> for ApiError {
    /// Maps each engine error to its answer explicitly.
    fn from(e: wald_storage::Error) -> Self {
        use wald_storage::Error as E;
        match &e {
            E::Poisoned { .. } | E::Io { .. } if e.is_disk_full() => {
                Self::new(ErrorCode::DiskFull, e.to_string()).retry_after(30)
            }
            E::Poisoned { .. }
            | E::Io { .. }
            | E::Corruption { .. }
            | E::BadHeader { .. }
            | E::NotALog { .. }
            | E::Locked { .. } => {
                Self::new(ErrorCode::StorageUnavailable, e.to_string()).retry_after(30)
            }
            E::QueueFull { .. } => Self::new(ErrorCode::Overloaded, e.to_string()).retry_after(1),
            E::Closed { .. } => {
                Self::new(ErrorCode::ShuttingDown, "the service is shutting down").retry_after(5)
            }
            E::RecordTooLarge { size, max } => {
                Self::new(ErrorCode::MessageSizeLimitExceeded, e.to_string())
                    .with_details(serde_json::json!({ "actualSize": size, "maxSize": max }))
            }
            E::OffsetOutOfRange {
                requested,
                first,
                next,
            } => Self::new(ErrorCode::OffsetOutOfRange, e.to_string()).with_details(
                serde_json::json!({ "requested": requested, "first": first, "next": next }),
            ),
            E::InvalidConfig { .. } | E::Record(_) => Self::internal(&e),
        }
    }
}

/// The envelope's `error` object.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ErrorBody {
    /// The code.
    pub code: ErrorCode,
    /// A sentence for people.
    pub message: String,
    /// Structured details.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Object)]
    pub details: Option<serde_json::Value>,
}

/// The envelope's `metadata` object.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ErrorMetadata {
    /// The request id (`X-Request-ID`).
    pub request_id: String,
    /// When the error was answered (RFC 3339).
    pub timestamp: String,
    /// The request path.
    pub path: String,
    /// The request method.
    pub method: String,
}

/// The error envelope.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ErrorEnvelope {
    /// Always false.
    pub success: bool,
    /// What went wrong.
    pub error: ErrorBody,
    /// About the request.
    pub metadata: ErrorMetadata,
}

impl IntoResponse for ApiError {
    /// The status and the error travel in an extension; [`envelope`] renders the body with
    /// the request's metadata.
    fn into_response(self) -> Response {
        let mut r = self.code.status().into_response();
        r.extensions_mut().insert(self);
        r
    }
}

/// Renders the answer's `ApiError`, if any, as the envelope (see [`envelope`]).
pub fn finish(mut resp: Response, rid: &str, path: &str, method: &Method) -> Response {
    let err = resp.extensions_mut().remove::<ApiError>();
    let err = match err {
        Some(e) => e,
        // Errors produced outside our handlers (e.g. a layer's own 413/408) get the envelope too.
        None if resp.status().is_client_error() || resp.status().is_server_error() => {
            let json = resp
                .headers()
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|ct| ct.starts_with("application/json"));
            if json {
                return resp;
            }
            from_status(resp.status())
        }
        None => return resp,
    };
    render(&err, rid, path, method)
}

fn from_status(s: StatusCode) -> ApiError {
    match s {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::new(
            ErrorCode::MessageSizeLimitExceeded,
            "request body too large",
        ),
        StatusCode::REQUEST_TIMEOUT | StatusCode::GATEWAY_TIMEOUT => ApiError::new(
            ErrorCode::RequestTimeout,
            "the request took longer than the request timeout",
        ),
        StatusCode::NOT_FOUND => ApiError::new(ErrorCode::NotFound, "no such route"),
        StatusCode::METHOD_NOT_ALLOWED => ApiError::new(
            ErrorCode::MethodNotAllowed,
            "method not allowed on this route",
        ),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ApiError::new(
            ErrorCode::UnsupportedMediaType,
            "the body must be application/json",
        ),
        s if s.is_server_error() => {
            ApiError::new(ErrorCode::InternalError, "an unexpected error occurred")
        }
        _ => ApiError::new(
            ErrorCode::ValidationError,
            s.canonical_reason().unwrap_or("bad request"),
        ),
    }
}

/// Renders the envelope.
#[must_use]
pub fn render(err: &ApiError, request_id: &str, path: &str, method: &Method) -> Response {
    let body = ErrorEnvelope {
        success: false,
        error: ErrorBody {
            code: err.code,
            message: err.message.clone(),
            details: err.details.clone(),
        },
        metadata: ErrorMetadata {
            request_id: request_id.to_owned(),
            timestamp: rfc3339_ms(wald_storage::now_ms()),
            path: path.to_owned(),
            method: method.to_string(),
        },
    };
    let mut resp = (err.code.status(), axum::Json(body)).into_response();
    if let Some(secs) = err.retry_after {
        if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
            resp.headers_mut().insert(header::RETRY_AFTER, v);
        }
    }
    if let Some(loc) = &err.location {
        if let Ok(v) = HeaderValue::from_str(loc) {
            resp.headers_mut().insert(header::LOCATION, v);
        }
    }
    resp
}

/// Fallback for unknown routes.
pub async fn not_found() -> ApiError {
    ApiError::new(ErrorCode::NotFound, "no such route")
}

/// Fallback for known routes with another method.
pub async fn method_not_allowed() -> ApiError {
    ApiError::new(
        ErrorCode::MethodNotAllowed,
        "method not allowed on this route",
    )
}

/// Parses a JSON body into `T` (an empty body: `T::default()`); a bad field is a 400
/// naming its path.
///
/// # Errors
/// The 400.
pub fn json_body<T: for<'de> serde::Deserialize<'de> + Default>(
    body: &[u8],
) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    let de = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        ApiError::validation(vec![FieldError {
            field: if path == "." { "body".into() } else { path },
            message: e.inner().to_string(),
        }])
    })
}
