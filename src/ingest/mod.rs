//! The write use case, without a transport: validate, authorize, deduplicate, append,
//! index, answer. `POST /api/v1/wal/write` is a batch of one; `POST /api/v1/wal/write/batch`
//! a batch of up to [`MAX_BATCH`]; a test can drive it with no socket.
//!
//! A batch is all or nothing up to the append: every message is parsed, validated and
//! authorized first, and any failure answers the whole request with nothing appended.
//! Then the messages of one partition go to its log in request order as one append (one
//! ticket, consecutive offsets, one group commit), each partition's appends are awaited
//! together, and every message is indexed before the answer goes out — a message is
//! readable by id, and its idempotency key deduplicates, as soon as it is acknowledged.

mod commit;
mod index;

use std::sync::Arc;
use std::time::Instant;

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::app::{App, NamespaceRuntime};
use crate::http::auth::{take_budget, Caller};
use crate::http::error::{ApiError, ErrorCode};
use crate::model::transaction::{parse_transactions, MutationSpec};
use crate::model::validate::{join, parse_json, FieldError};
use crate::model::write::{ValidWrite, WriteLimits, WriteToLogDto, WriteToLogResponse};

pub use commit::commit;
pub use index::flush as flush_index;

/// Most messages in one batch write.
pub const MAX_BATCH: usize = 1000;

/// One validated, authorized message, ready to append.
#[derive(Debug)]
pub struct Prepared {
    pub(crate) ns: Arc<NamespaceRuntime>,
    pub(crate) v: ValidWrite,
    pub(crate) txn: Option<Vec<MutationSpec>>,
    /// The message's bytes as sent (its size counts against `maxMessageSize`).
    pub(crate) size: u64,
}

/// Where a request came from, for the stored message and the answers.
#[derive(Debug, Clone)]
pub struct Origin {
    /// The caller (authorization and rate limits).
    pub caller: Caller,
    /// The request id, stored with each message.
    pub request_id: String,
    /// When the request arrived (the request timeout runs from here).
    pub started: Instant,
}

/// The body of a batch write.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchDto {
    messages: Vec<Box<RawValue>>,
}

/// The idempotency key of a single write's `Idempotency-Key` header: absent, or its value
/// (`Err` when it is not visible ASCII).
pub type HeaderKey = Option<Result<String, ()>>;

/// Writes one message (the single write): `body` is a `WriteToLogDto`.
///
/// # Errors
/// The first failure, as the HTTP edge answers it.
pub async fn write_one(
    app: &Arc<App>,
    origin: &Origin,
    body: &[u8],
    header_key: HeaderKey,
) -> Result<WriteToLogResponse, ApiError> {
    let p = prepare(app, &origin.caller, body, header_key, "").map_err(Refusal::into_api)?;
    authorize_all(app, &origin.caller, std::slice::from_ref(&p))?;
    let mut out = commit(app, origin, vec![p]).await?;
    out.pop()
        .ok_or_else(|| ApiError::internal("a write of one message produced no answer"))
}

/// Writes a batch: `body` is `{"messages": [WriteToLogDto, …]}`. Answers in request order.
///
/// # Errors
/// Any invalid message (400 naming `messages[i].field`; nothing appended), authorization,
/// limits, or the storage's refusal.
pub async fn write_batch(
    app: &Arc<App>,
    origin: &Origin,
    body: &[u8],
) -> Result<Vec<WriteToLogResponse>, ApiError> {
    let dto: BatchDto = parse_json(body).map_err(ApiError::validation)?;
    if dto.messages.is_empty() || dto.messages.len() > MAX_BATCH {
        return Err(ApiError::validation(vec![FieldError::new(
            "messages",
            format!(
                "must hold 1 to {MAX_BATCH} messages, got {}",
                dto.messages.len()
            ),
        )]));
    }
    let mut prepared = Vec::with_capacity(dto.messages.len());
    let mut errors = Vec::new();
    for (i, raw) in dto.messages.iter().enumerate() {
        let prefix = format!("messages[{i}]");
        match prepare(app, &origin.caller, raw.get().as_bytes(), None, &prefix) {
            Ok(p) => prepared.push(p),
            Err(Refusal::Invalid(e)) => errors.extend(e),
            Err(Refusal::Other(e)) => return Err(in_message(e, i)),
        }
    }
    if !errors.is_empty() {
        return Err(ApiError::validation(errors));
    }
    authorize_all(app, &origin.caller, &prepared)?;
    commit(app, origin, prepared).await
}

/// Why a message cannot be written.
#[derive(Debug)]
enum Refusal {
    /// Invalid fields (named with the message's prefix).
    Invalid(Vec<FieldError>),
    /// Anything else (unknown namespace, access, size...).
    Other(ApiError),
}

impl From<ApiError> for Refusal {
    fn from(e: ApiError) -> Self {
        Self::Other(e)
    }
}

impl Refusal {
    fn into_api(self) -> ApiError {
        match self {
            Self::Invalid(f) => ApiError::validation(f),
            Self::Other(e) => e,
        }
    }
}

/// Names the message of a batch an error is about (`messages[i]: …`, `details.index`).
fn in_message(mut e: ApiError, i: usize) -> ApiError {
    e.message = format!("messages[{i}]: {}", e.message);
    let mut details = match e.details.take() {
        Some(serde_json::Value::Object(m)) => m,
        Some(other) => {
            let mut m = serde_json::Map::new();
            m.insert("cause".into(), other);
            m
        }
        None => serde_json::Map::new(),
    };
    details.insert("index".into(), serde_json::json!(i));
    e.details = Some(serde_json::Value::Object(details));
    e
}

/// Parses, validates and checks one message against its namespace (everything but the
/// rate limit, taken for the whole request by [`authorize_all`]). Field names in errors
/// are prefixed with `prefix`.
fn prepare(
    app: &App,
    caller: &Caller,
    bytes: &[u8],
    header_key: HeaderKey,
    prefix: &str,
) -> Result<Prepared, Refusal> {
    let named = |errs: Vec<FieldError>| {
        Refusal::Invalid(
            errs.into_iter()
                .map(|e| FieldError {
                    field: if e.field.is_empty() {
                        prefix.to_owned()
                    } else {
                        join(prefix, &e.field)
                    },
                    message: e.message,
                })
                .collect(),
        )
    };
    let dto: WriteToLogDto = parse_json(bytes).map_err(named)?;
    let mut v = dto
        .validate(&WriteLimits {
            max_delay_secs: app.config.server.max_delay_secs,
        })
        .map_err(named)?;
    match header_key {
        Some(Err(())) => {
            return Err(Refusal::Invalid(vec![FieldError::new(
                "Idempotency-Key",
                "must be visible ASCII",
            )]))
        }
        Some(Ok(h)) => {
            let mut errs = Vec::new();
            if h.is_empty() || h.len() > 200 {
                errs.push(FieldError::new(
                    "Idempotency-Key",
                    "must be 1..=200 characters",
                ));
            }
            if v.idempotency_key.as_ref().is_some_and(|b| *b != h) {
                errs.push(FieldError::new(
                    "idempotencyKey",
                    "differs from the Idempotency-Key header; send one or make them equal",
                ));
            }
            if !errs.is_empty() {
                return Err(Refusal::Invalid(errs));
            }
            v.idempotency_key = Some(h);
        }
        None => {}
    }
    crate::http::cluster::check_owner(app, &v.namespace, "/api/v1/wal/write")?;
    let ns = crate::http::wal::lookup_namespace(app, &v.namespace)?;
    crate::http::auth::check_access(caller, &ns, &v.namespace)?;
    if !ns.spec.enabled {
        return Err(Refusal::Other(ApiError::new(
            ErrorCode::NamespaceDisabled,
            format!("Namespace '{}' is disabled", v.namespace),
        )));
    }
    // The message's targets are the namespace's (checked only after the caller is known to
    // have access: nothing is built or cached for an anonymous or foreign request). Declared
    // targets were checked when the namespace was installed; only an ad-hoc object (where
    // the namespace accepts them) still needs its adapter built.
    if let Some(refs) = &v.targets {
        crate::model::target_ref::resolve(&ns.spec, refs, "target").map_err(named)?;
        for (i, r) in refs.iter().enumerate() {
            if let crate::model::TargetRef::Inline(t) = r {
                app.delivery
                    .check_target(&crate::model::validate::index("target", i), t)
                    .map_err(named)?;
            }
        }
    }
    let size = bytes.len() as u64;
    if size > ns.spec.max_message_size {
        return Err(Refusal::Other(
            ApiError::new(
                ErrorCode::MessageSizeLimitExceeded,
                format!(
                    "Message size {size} bytes exceeds limit of {} bytes",
                    ns.spec.max_message_size
                ),
            )
            .with_details(
                serde_json::json!({ "actualSize": size, "maxSize": ns.spec.max_message_size }),
            ),
        ));
    }
    let txn = parse_transactions(
        v.payload.get(),
        &ns.spec,
        ns.spec.transaction_config.require_compensation,
    )
    .map_err(named)?;
    if let Some(mutations) = &txn {
        check_transaction(app, &v, mutations).map_err(named)?;
    }
    Ok(Prepared { ns, v, txn, size })
}

/// Takes the rate-limit budget of every namespace the messages go to: one token per
/// message, all of a namespace's at once (a refused request takes none).
fn authorize_all(app: &App, caller: &Caller, prepared: &[Prepared]) -> Result<(), ApiError> {
    let mut counts: Vec<(&str, &NamespaceRuntime, u32)> = Vec::new();
    for p in prepared {
        match counts.iter_mut().find(|(n, _, _)| *n == p.v.namespace) {
            Some(c) => c.2 += 1,
            None => counts.push((&p.v.namespace, &p.ns, 1)),
        }
    }
    for (name, ns, n) in counts {
        take_budget(app, caller, ns, name, n)?;
    }
    Ok(())
}

/// What a transaction may not combine with, and that each mutation's (and compensation's)
/// target can be delivered to by this build.
fn check_transaction(
    app: &App,
    v: &ValidWrite,
    mutations: &[MutationSpec],
) -> Result<(), Vec<FieldError>> {
    let mut errs = Vec::new();
    if v.targets.is_some() {
        errs.push(FieldError::new(
            "target",
            "a transaction names a target per mutation (payload.transactions[i].target); remove `target`",
        ));
    }
    if v.delay_ms > 0 {
        errs.push(FieldError::new(
            "lifecycle.delay",
            "a transaction cannot be delayed",
        ));
    }
    for (i, m) in mutations.iter().enumerate() {
        let path = format!("payload.transactions[{i}]");
        if let Err(e) = app
            .delivery
            .check_target(&format!("{path}.target"), &m.target)
        {
            errs.extend(e);
        }
        if let Some(c) = &m.compensation {
            if let Err(e) = app
                .delivery
                .check_target(&format!("{path}.compensation.target"), &c.target)
            {
                errs.extend(e);
            }
        }
    }
    if errs.is_empty() {
        Ok(())
    } else {
        Err(errs)
    }
}

#[cfg(test)]
mod tests;
