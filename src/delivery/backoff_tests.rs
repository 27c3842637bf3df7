use std::time::Duration;

use proptest::prelude::*;

use super::*;
use crate::delivery::target::ErrorClass;

fn policy(strategy: BackoffStrategy) -> RetryPolicy {
    RetryPolicy {
        max_attempts: 5,
        backoff_strategy: strategy,
        initial_delay_ms: 1000,
        max_delay_ms: 30_000,
        jitter_ms: 0,
        retryable_error_codes: None,
    }
}

fn sequence(p: &RetryPolicy, n: u32) -> Vec<u64> {
    (1..=n)
        .map(|a| backoff_delay(p, a, 0.0).as_millis() as u64)
        .collect()
}

fn ms(v: u64) -> Duration {
    Duration::from_millis(v)
}

#[test]
fn exponential_doubles_then_caps() {
    let p = policy(BackoffStrategy::Exponential);
    assert_eq!(
        sequence(&p, 8),
        [1000, 2000, 4000, 8000, 16_000, 30_000, 30_000, 30_000]
    );
}

#[test]
fn custom_is_exponential() {
    let p = policy(BackoffStrategy::Custom);
    assert_eq!(
        sequence(&p, 7),
        sequence(&policy(BackoffStrategy::Exponential), 7)
    );
}

#[test]
fn linear_grows_by_initial_then_caps() {
    let mut p = policy(BackoffStrategy::Linear);
    p.max_delay_ms = 4500;
    assert_eq!(sequence(&p, 6), [1000, 2000, 3000, 4000, 4500, 4500]);
}

#[test]
fn constant_stays_at_initial() {
    let p = policy(BackoffStrategy::Constant);
    assert_eq!(sequence(&p, 5), [1000; 5]);
}

#[test]
fn max_below_initial_caps_everything() {
    let mut p = policy(BackoffStrategy::Constant);
    p.initial_delay_ms = 5000;
    p.max_delay_ms = 2000;
    assert_eq!(sequence(&p, 3), [2000; 3]);
}

#[test]
fn attempt_zero_counts_as_first() {
    for s in [
        BackoffStrategy::Exponential,
        BackoffStrategy::Linear,
        BackoffStrategy::Constant,
    ] {
        let p = policy(s);
        assert_eq!(backoff_delay(&p, 0, 0.0), ms(1000), "{s:?}");
    }
}

#[test]
fn huge_attempt_numbers_saturate() {
    for s in [
        BackoffStrategy::Exponential,
        BackoffStrategy::Linear,
        BackoffStrategy::Constant,
        BackoffStrategy::Custom,
    ] {
        let mut p = policy(s);
        p.jitter_ms = 5000;
        for a in [63, 64, 65, 1000, u32::MAX - 1, u32::MAX] {
            let d = backoff_delay(&p, a, 0.999_999);
            assert!(d >= base_delay(&p, a));
            assert!(d < base_delay(&p, a) + ms(5000));
        }
        // Extreme policies, far outside the validated ranges.
        p.initial_delay_ms = u64::MAX;
        p.max_delay_ms = u64::MAX;
        p.jitter_ms = u64::MAX;
        let d = backoff_delay(&p, u32::MAX, 0.999);
        assert_eq!(d, ms(u64::MAX));
        let _ = retry_delay_with_jitter(&p, u32::MAX, Some(Duration::MAX), f64::INFINITY);
    }
}

#[test]
fn zero_initial_is_zero() {
    let mut p = policy(BackoffStrategy::Exponential);
    p.initial_delay_ms = 0;
    assert_eq!(sequence(&p, 70), vec![0; 70]);
}

#[test]
fn jitter_is_floor_of_unit_times_jitter() {
    let mut p = policy(BackoffStrategy::Constant);
    p.jitter_ms = 500;
    assert_eq!(backoff_delay(&p, 1, 0.0), ms(1000));
    assert_eq!(backoff_delay(&p, 1, 0.5), ms(1250));
    assert_eq!(backoff_delay(&p, 1, 0.001), ms(1000));
    assert_eq!(backoff_delay(&p, 1, 0.999_999), ms(1499));
    // Jitter is added after the cap.
    p.max_delay_ms = 800;
    assert_eq!(backoff_delay(&p, 1, 0.5), ms(1050));
}

#[test]
fn bad_jitter_units_are_clamped() {
    let mut p = policy(BackoffStrategy::Constant);
    p.jitter_ms = 500;
    assert_eq!(backoff_delay(&p, 1, -3.0), ms(1000));
    assert_eq!(backoff_delay(&p, 1, f64::NAN), ms(1000));
    assert_eq!(backoff_delay(&p, 1, f64::NEG_INFINITY), ms(1000));
    assert_eq!(backoff_delay(&p, 1, 1.0), ms(1499));
    assert_eq!(backoff_delay(&p, 1, 7.5), ms(1499));
    assert_eq!(backoff_delay(&p, 1, f64::INFINITY), ms(1499));
    p.jitter_ms = 0;
    assert_eq!(backoff_delay(&p, 1, 0.9), ms(1000));
}

#[test]
fn random_jitter_stays_in_bounds() {
    let mut p = policy(BackoffStrategy::Exponential);
    p.jitter_ms = 500;
    for _ in 0..1000 {
        let d = next_retry_delay(&p, 2, None);
        assert!(d >= ms(2000) && d < ms(2500), "{d:?}");
    }
}

#[test]
fn retry_after_is_honoured_when_longer() {
    let p = policy(BackoffStrategy::Exponential);
    assert_eq!(
        next_retry_delay(&p, 1, Some(Duration::from_secs(10))),
        ms(10_000)
    );
    // Shorter than the backoff: the backoff wins.
    assert_eq!(next_retry_delay(&p, 3, Some(ms(10))), ms(4000));
    assert_eq!(next_retry_delay(&p, 3, Some(Duration::ZERO)), ms(4000));
    // Beyond the policy's maximum delay but below the hour: honoured.
    assert_eq!(
        next_retry_delay(&p, 1, Some(Duration::from_secs(600))),
        Duration::from_secs(600)
    );
}

#[test]
fn retry_after_is_capped_at_an_hour() {
    let p = policy(BackoffStrategy::Exponential);
    assert_eq!(
        next_retry_delay(&p, 1, Some(Duration::from_secs(86_400))),
        MAX_RETRY_AFTER
    );
    assert_eq!(
        next_retry_delay(&p, 1, Some(Duration::MAX)),
        MAX_RETRY_AFTER
    );
    assert_eq!(MAX_RETRY_AFTER, Duration::from_secs(3600));
}

#[test]
fn attempts_allowed_counts_the_first_attempt() {
    let mut p = RetryPolicy::default();
    assert_eq!(attempts_allowed(&p), 4);
    p.max_attempts = 0;
    assert_eq!(attempts_allowed(&p), 1);
    p.max_attempts = 10;
    assert_eq!(attempts_allowed(&p), 11);
    p.max_attempts = u32::MAX;
    assert_eq!(attempts_allowed(&p), u32::MAX);
}

#[test]
fn adapter_classification_decides_without_a_list() {
    let p = RetryPolicy::default();
    assert!(is_retryable(
        &p,
        &TargetError::retryable(ErrorClass::Server, "503")
    ));
    assert!(!is_retryable(
        &p,
        &TargetError::permanent(ErrorClass::Client, "404")
    ));
}

#[test]
fn retryable_list_overrides_the_adapter() {
    let mut p = RetryPolicy {
        retryable_error_codes: Some(vec!["4xx".into(), " Timeout ".into(), "429".into()]),
        ..RetryPolicy::default()
    };
    // Listed: retried even though the adapter says permanent.
    assert!(is_retryable(
        &p,
        &TargetError::permanent(ErrorClass::Client, "404")
    ));
    assert!(is_retryable(
        &p,
        &TargetError::retryable(ErrorClass::Timeout, "slow")
    ));
    assert!(is_retryable(
        &p,
        &TargetError::retryable(ErrorClass::TooManyRequests, "slow down")
    ));
    // Not listed: not retried even though the adapter says retryable.
    assert!(!is_retryable(
        &p,
        &TargetError::retryable(ErrorClass::Server, "503")
    ));
    assert!(!is_retryable(
        &p,
        &TargetError::retryable(ErrorClass::Connection, "refused")
    ));
    // An empty list retries nothing.
    p.retryable_error_codes = Some(Vec::new());
    assert!(!is_retryable(
        &p,
        &TargetError::retryable(ErrorClass::Timeout, "slow")
    ));
}

#[test]
fn decide_retries_until_exhausted() {
    let p = RetryPolicy {
        jitter_ms: 0,
        ..RetryPolicy::default()
    };
    let err = TargetError::retryable(ErrorClass::Server, "500");
    assert_eq!(
        decide(&p, 1, &err),
        RetryDecision::Retry { after: ms(1000) }
    );
    assert_eq!(
        decide(&p, 2, &err),
        RetryDecision::Retry { after: ms(2000) }
    );
    assert_eq!(
        decide(&p, 3, &err),
        RetryDecision::Retry { after: ms(4000) }
    );
    let exhausted = RetryDecision::GiveUp {
        reason: GiveUpReason::Exhausted,
    };
    assert_eq!(decide(&p, 4, &err), exhausted);
    assert_eq!(decide(&p, u32::MAX, &err), exhausted);
}

#[test]
fn decide_with_no_retries_gives_up_after_the_first_attempt() {
    let p = RetryPolicy {
        max_attempts: 0,
        ..RetryPolicy::default()
    };
    let err = TargetError::retryable(ErrorClass::Timeout, "slow");
    assert_eq!(
        decide(&p, 1, &err),
        RetryDecision::GiveUp {
            reason: GiveUpReason::Exhausted
        }
    );
}

#[test]
fn decide_gives_up_on_permanent_errors_first() {
    let p = RetryPolicy::default();
    let err = TargetError::permanent(ErrorClass::BadPayload, "no key");
    let permanent = RetryDecision::GiveUp {
        reason: GiveUpReason::Permanent,
    };
    assert_eq!(decide(&p, 1, &err), permanent);
    assert_eq!(decide(&p, 99, &err), permanent);
    assert_eq!(GiveUpReason::Permanent.as_str(), "permanent");
    assert_eq!(GiveUpReason::Exhausted.as_str(), "exhausted");
}

#[test]
fn decide_honours_retry_after_and_jitter() {
    let p = RetryPolicy::default();
    let mut err = TargetError::retryable(ErrorClass::TooManyRequests, "429");
    err.retry_after = Some(Duration::from_secs(20));
    assert_eq!(
        decide_with_jitter(&p, 1, &err, 0.5),
        RetryDecision::Retry {
            after: Duration::from_secs(20)
        }
    );
    err.retry_after = None;
    assert_eq!(
        decide_with_jitter(&p, 2, &err, 0.5),
        RetryDecision::Retry { after: ms(2250) }
    );
}

fn strategy() -> impl Strategy<Value = BackoffStrategy> {
    prop_oneof![
        Just(BackoffStrategy::Exponential),
        Just(BackoffStrategy::Linear),
        Just(BackoffStrategy::Constant),
        Just(BackoffStrategy::Custom),
    ]
}

fn any_policy() -> impl Strategy<Value = RetryPolicy> {
    (
        strategy(),
        prop_oneof![100u64..=60_000, any::<u64>()],
        prop_oneof![1000u64..=300_000, any::<u64>()],
        prop_oneof![0u64..=5000, any::<u64>()],
        0u32..=10,
    )
        .prop_map(|(s, initial, max, jitter, retries)| RetryPolicy {
            max_attempts: retries,
            backoff_strategy: s,
            initial_delay_ms: initial,
            max_delay_ms: max,
            jitter_ms: jitter,
            retryable_error_codes: None,
        })
}

/// The uncapped strategy value, in u128 so it cannot overflow for attempts below 64.
fn raw_ms(p: &RetryPolicy, n: u32) -> u128 {
    let n = n.max(1);
    let initial = u128::from(p.initial_delay_ms);
    match p.backoff_strategy {
        BackoffStrategy::Exponential | BackoffStrategy::Custom => {
            if n > 64 {
                u128::MAX
            } else {
                initial.saturating_mul(1u128 << (n - 1))
            }
        }
        BackoffStrategy::Linear => initial * u128::from(n),
        BackoffStrategy::Constant => initial,
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn delay_is_base_plus_bounded_jitter(
        p in any_policy(),
        attempt in prop_oneof![0u32..=12, any::<u32>()],
        unit in prop_oneof![0.0f64..1.0, any::<f64>()],
    ) {
        let base = base_delay(&p, attempt);
        let expected = raw_ms(&p, attempt).min(u128::from(p.max_delay_ms));
        prop_assert_eq!(base.as_millis(), expected);
        prop_assert!(base <= ms(p.max_delay_ms));
        let d = backoff_delay(&p, attempt, unit);
        prop_assert!(d >= base);
        let jitter = d.as_millis() - base.as_millis();
        if p.jitter_ms == 0 {
            prop_assert_eq!(jitter, 0);
        } else {
            // Either the jitter is below jitter_ms, or the sum saturated.
            prop_assert!(jitter < u128::from(p.jitter_ms) || d == ms(u64::MAX));
        }
    }

    #[test]
    fn delay_never_shrinks_with_attempts(p in any_policy(), attempt in 1u32..200) {
        prop_assert!(base_delay(&p, attempt) <= base_delay(&p, attempt + 1));
    }

    #[test]
    fn retry_after_result_is_max_of_both(
        p in any_policy(),
        attempt in 1u32..20,
        unit in 0.0f64..1.0,
        asked in proptest::option::of(any::<u64>()),
    ) {
        let asked = asked.map(ms);
        let d = retry_delay_with_jitter(&p, attempt, asked, unit);
        let backoff = backoff_delay(&p, attempt, unit);
        prop_assert!(d >= backoff);
        match asked {
            None => prop_assert_eq!(d, backoff),
            Some(a) => prop_assert_eq!(d, backoff.max(a.min(MAX_RETRY_AFTER))),
        }
    }
}
