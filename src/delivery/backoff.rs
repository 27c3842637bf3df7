//! The retry policy as pure functions: how many attempts a message gets, how long to wait
//! after a failed attempt, and whether a failure is worth another attempt (DESIGN.md,
//! "Delivery").
//!
//! - [`attempts_allowed`]: `maxAttempts` counts *retries* ("Maximum delivery retries"), so a
//!   message gets `maxAttempts + 1` attempts in all.
//! - [`base_delay`]: the strategy's wait after the *n*-th failed attempt (1-based), capped at
//!   `maxDelayMs`: exponential `initial × 2^(n−1)`, linear `initial × n`, constant `initial`;
//!   `custom` is treated as exponential.
//! - [`backoff_delay`]: the base plus `floor(jitterMs × u)` for a caller-supplied
//!   `u ∈ [0, 1)`, so tests are deterministic; [`next_retry_delay`] draws `u` at random and
//!   honours a target's `Retry-After` (capped at [`MAX_RETRY_AFTER`]).
//! - [`is_retryable`]: the policy's `retryableErrorCodes`, when set, decides (it overrides the
//!   adapter's own classification); otherwise the adapter's [`TargetError::retryable`].
//! - [`decide`]: all of the above for one failed attempt: retry after a delay, or give up
//!   (permanent failure, or attempts exhausted).
//!
//! Every computation saturates: no input (huge attempt numbers, out-of-range policy fields,
//! NaN jitter units) overflows or panics.

use std::time::Duration;

use crate::delivery::target::TargetError;
use crate::model::namespace::{BackoffStrategy, RetryPolicy};

/// The longest `Retry-After` a target may impose; longer requests are cut to this.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// How many attempts in all a message gets under `policy`: the first attempt plus
/// `max_attempts` retries.
#[must_use]
pub fn attempts_allowed(policy: &RetryPolicy) -> u32 {
    policy.max_attempts.saturating_add(1)
}

/// The strategy's wait after the `failed_attempt`-th attempt failed (1-based; 0 is treated
/// as 1), capped at `max_delay_ms`, before jitter.
#[must_use]
pub fn base_delay(policy: &RetryPolicy, failed_attempt: u32) -> Duration {
    Duration::from_millis(base_delay_ms(policy, failed_attempt))
}

fn base_delay_ms(policy: &RetryPolicy, failed_attempt: u32) -> u64 {
    let n = failed_attempt.max(1);
    let initial = policy.initial_delay_ms;
    let raw = match policy.backoff_strategy {
        BackoffStrategy::Exponential | BackoffStrategy::Custom => {
            // 2^(n−1), saturating to u64::MAX once the shift leaves the word.
            let factor = 1u64.checked_shl(n - 1).unwrap_or(u64::MAX);
            initial.saturating_mul(factor)
        }
        BackoffStrategy::Linear => initial.saturating_mul(u64::from(n)),
        BackoffStrategy::Constant => initial,
    };
    raw.min(policy.max_delay_ms)
}

/// The jitter added for `jitter_unit`: `floor(jitter_ms × u)`, in `[0, jitter_ms)`. A NaN or
/// negative unit counts as 0, a unit at or above 1 as "just below 1".
fn jitter_ms(policy: &RetryPolicy, jitter_unit: f64) -> u64 {
    if policy.jitter_ms == 0 {
        return 0;
    }
    let unit = if jitter_unit.is_nan() {
        0.0
    } else {
        jitter_unit.clamp(0.0, 1.0)
    };
    // `as` from f64 saturates; the `min` keeps the result below `jitter_ms` even where the
    // product rounds up to it.
    let jitter = (policy.jitter_ms as f64 * unit).floor() as u64;
    jitter.min(policy.jitter_ms - 1)
}

/// The wait after the `failed_attempt`-th attempt failed (1-based): [`base_delay`] plus
/// `floor(jitter_ms × jitter_unit)`. `jitter_unit` should lie in `[0, 1)`; other values are
/// clamped (NaN and negatives to 0), so the jitter is always below `jitter_ms` (or 0 when
/// `jitter_ms` is 0).
#[must_use]
pub fn backoff_delay(policy: &RetryPolicy, failed_attempt: u32, jitter_unit: f64) -> Duration {
    let ms = base_delay_ms(policy, failed_attempt).saturating_add(jitter_ms(policy, jitter_unit));
    Duration::from_millis(ms)
}

/// [`backoff_delay`] with the given jitter unit, raised to the target's `Retry-After` (capped
/// at [`MAX_RETRY_AFTER`]) when it asked for a longer wait.
#[must_use]
pub fn retry_delay_with_jitter(
    policy: &RetryPolicy,
    failed_attempt: u32,
    retry_after: Option<Duration>,
    jitter_unit: f64,
) -> Duration {
    let backoff = backoff_delay(policy, failed_attempt, jitter_unit);
    match retry_after {
        Some(asked) => backoff.max(asked.min(MAX_RETRY_AFTER)),
        None => backoff,
    }
}

/// The wait before the next attempt after the `failed_attempt`-th attempt failed: the
/// policy's backoff with a random jitter, or the target's `Retry-After` (capped at
/// [`MAX_RETRY_AFTER`]) when that is longer.
#[must_use]
pub fn next_retry_delay(
    policy: &RetryPolicy,
    failed_attempt: u32,
    retry_after: Option<Duration>,
) -> Duration {
    retry_delay_with_jitter(policy, failed_attempt, retry_after, rand::random::<f64>())
}

/// Whether `err` is worth another attempt under `policy`. When the policy lists
/// `retryable_error_codes`, the error is retried iff its class's name
/// ([`ErrorClass::as_str`](crate::delivery::target::ErrorClass::as_str), compared ignoring
/// ASCII case and surrounding spaces) is listed — the list overrides the adapter, so listing
/// `4xx` retries client errors and an empty list retries nothing. Without a list, the
/// adapter's own [`TargetError::retryable`] decides.
#[must_use]
pub fn is_retryable(policy: &RetryPolicy, err: &TargetError) -> bool {
    match &policy.retryable_error_codes {
        Some(codes) => {
            let class = err.class.as_str();
            codes.iter().any(|c| c.trim().eq_ignore_ascii_case(class))
        }
        None => err.retryable,
    }
}

/// Why delivery of a message stops without success.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GiveUpReason {
    /// The failure is not retryable under the policy.
    Permanent,
    /// Every allowed attempt has been made.
    Exhausted,
}

impl GiveUpReason {
    /// The reason's name: `permanent` or `exhausted`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Permanent => "permanent",
            Self::Exhausted => "exhausted",
        }
    }
}

/// What to do after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryDecision {
    /// Attempt again once `after` has passed.
    Retry {
        /// The wait before the next attempt.
        after: Duration,
    },
    /// Stop: the message reached a final failed outcome (dead-letter it).
    GiveUp {
        /// Why.
        reason: GiveUpReason,
    },
}

/// The decision after the `failed_attempt`-th attempt (1-based) failed with `err`: give up
/// if the error is not retryable ([`GiveUpReason::Permanent`]) or `failed_attempt` reached
/// [`attempts_allowed`] ([`GiveUpReason::Exhausted`]); otherwise retry after
/// [`next_retry_delay`] (random jitter, the error's `Retry-After` honoured).
#[must_use]
pub fn decide(policy: &RetryPolicy, failed_attempt: u32, err: &TargetError) -> RetryDecision {
    decide_with_jitter(policy, failed_attempt, err, rand::random::<f64>())
}

/// [`decide`] with a caller-supplied jitter unit in `[0, 1)` (deterministic, for tests and
/// simulations).
#[must_use]
pub fn decide_with_jitter(
    policy: &RetryPolicy,
    failed_attempt: u32,
    err: &TargetError,
    jitter_unit: f64,
) -> RetryDecision {
    if !is_retryable(policy, err) {
        RetryDecision::GiveUp {
            reason: GiveUpReason::Permanent,
        }
    } else if failed_attempt >= attempts_allowed(policy) {
        RetryDecision::GiveUp {
            reason: GiveUpReason::Exhausted,
        }
    } else {
        RetryDecision::Retry {
            after: retry_delay_with_jitter(policy, failed_attempt, err.retry_after, jitter_unit),
        }
    }
}

#[cfg(test)]
#[path = "backoff_tests.rs"]
mod tests;
