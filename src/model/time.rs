//! RFC 3339 timestamps in UTC with milliseconds (`2025-10-03T10:30:00.000Z`), without a date
//! crate: the proleptic Gregorian calendar by Howard Hinnant's `days_from_civil` /
//! `civil_from_days` algorithms.

const MS_PER_DAY: u64 = 86_400_000;
/// Days from 0000-03-01 to 1970-01-01.
const EPOCH_SHIFT: i64 = 719_468;

/// Formats milliseconds since the Unix epoch as `YYYY-MM-DDTHH:MM:SS.mmmZ` (UTC).
#[must_use]
pub fn rfc3339_ms(ms_since_epoch: u64) -> String {
    let (year, month, day) = civil_from_days(ms_since_epoch / MS_PER_DAY);
    let ms_of_day = ms_since_epoch % MS_PER_DAY;
    let hour = ms_of_day / 3_600_000;
    let minute = ms_of_day / 60_000 % 60;
    let second = ms_of_day / 1000 % 60;
    let milli = ms_of_day % 1000;
    format!("{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}.{milli:03}Z")
}

/// Parses an RFC 3339 timestamp (`2025-10-03T10:30:00Z`, `2025-10-03T10:30:00.123+02:00`,
/// `T` or a space between date and time, any number of fraction digits, truncated to
/// milliseconds) into milliseconds since the Unix epoch. `None` when it is not one, or when it
/// is before 1970.
#[must_use]
pub fn parse_rfc3339_ms(text: &str) -> Option<u64> {
    let b = text.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let year = digits(&b[0..4])?;
    let month = digits(&b[5..7])?;
    let day = digits(&b[8..10])?;
    let hour = digits(&b[11..13])?;
    let minute = digits(&b[14..16])?;
    let second = digits(&b[17..19])?;
    let day_ok = day >= 1 && day <= days_in_month(year, month);
    if !(1..=12).contains(&month) || !day_ok || hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    let mut rest = &b[19..];
    let mut frac_ms = 0;
    if let Some(frac) = rest.strip_prefix(b".") {
        let n = frac.iter().take_while(|c| c.is_ascii_digit()).count();
        if n == 0 {
            return None;
        }
        for (c, scale) in frac[..n].iter().zip([100, 10, 1]) {
            frac_ms += i64::from(c - b'0') * scale;
        }
        rest = &frac[n..];
    }
    let offset_secs = match rest {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let (oh, om) = (digits(&[*h1, *h2])?, digits(&[*m1, *m2])?);
            if oh > 23 || om > 59 {
                return None;
            }
            if *sign == b'+' {
                oh * 3600 + om * 60
            } else {
                -(oh * 3600 + om * 60)
            }
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second - offset_secs;
    u64::try_from(secs * 1000 + frac_ms).ok()
}

/// The decimal value of a few ASCII digits (at most 4 here, so no overflow).
fn digits(b: &[u8]) -> Option<i64> {
    b.iter().try_fold(0i64, |acc, c| {
        c.is_ascii_digit().then(|| acc * 10 + i64::from(c - b'0'))
    })
}

fn is_leap(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// (year, month, day) of the day `days` after 1970-01-01.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + EPOCH_SHIFT.unsigned_abs();
    let era = z / 146_097;
    let doe = z - era * 146_097; // day of era, [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // year of era, [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // day of year from March 1, [0, 365]
    let mp = (5 * doy + 2) / 153; // month from March, [0, 11]
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + u64::from(month <= 2), month, day)
}

/// Days from 1970-01-01 to (year, month, day); negative before the epoch.
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let yoe = year - era * 400; // [0, 399]
    let mp = (month + 9) % 12; // month from March
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - EPOCH_SHIFT
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_known_dates() {
        assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_ms(1_759_487_400_000), "2025-10-03T10:30:00.000Z");
        assert_eq!(rfc3339_ms(1_696_291_200_123), "2023-10-03T00:00:00.123Z");
        assert_eq!(rfc3339_ms(951_782_400_000), "2000-02-29T00:00:00.000Z"); // leap (÷400)
        assert_eq!(rfc3339_ms(951_868_800_000), "2000-03-01T00:00:00.000Z");
        assert_eq!(rfc3339_ms(1_709_164_800_000), "2024-02-29T00:00:00.000Z"); // leap (÷4)
        assert_eq!(rfc3339_ms(4_107_456_000_000), "2100-02-28T00:00:00.000Z"); // not leap (÷100)
        assert_eq!(rfc3339_ms(4_107_542_400_000), "2100-03-01T00:00:00.000Z");
        assert_eq!(rfc3339_ms(1_704_067_199_999), "2023-12-31T23:59:59.999Z");
        assert_eq!(rfc3339_ms(1_704_067_200_000), "2024-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_ms(253_402_300_799_999), "9999-12-31T23:59:59.999Z");
    }

    #[test]
    fn parses_and_round_trips() {
        assert_eq!(
            parse_rfc3339_ms("2025-10-03T10:30:00.000Z"),
            Some(1_759_487_400_000)
        );
        assert_eq!(
            parse_rfc3339_ms("2025-10-03T10:30:00Z"),
            Some(1_759_487_400_000)
        );
        assert_eq!(
            parse_rfc3339_ms("2025-10-03 12:30:00.5+02:00"),
            Some(1_759_487_400_500)
        );
        assert_eq!(
            parse_rfc3339_ms("2025-10-03T10:30:00.123456789-00:30"),
            Some(1_759_489_200_123)
        );
        assert_eq!(
            parse_rfc3339_ms("2025-10-03T10:30:00.12Z"),
            Some(1_759_487_400_120)
        );
        assert_eq!(
            parse_rfc3339_ms("2025-10-03T10:30:00.1-00:00"),
            Some(1_759_487_400_100)
        );
        assert_eq!(
            parse_rfc3339_ms("2024-02-29T00:00:00Z"),
            Some(1_709_164_800_000)
        );
        for bad in [
            "2023-02-29T00:00:00Z",
            "2100-02-29T00:00:00Z",
            "2025-13-01T00:00:00Z",
            "2025-10-03T24:00:00Z",
            "2025-10-03T10:30:00",
            "2025-10-03T10:30:00.Z",
            "2025-10-03T10:30:00+2:00",
            "1969-12-31T23:59:59Z",
            "garbage",
            "",
        ] {
            assert_eq!(parse_rfc3339_ms(bad), None, "{bad}");
        }
        let mut ms = 0u64;
        while ms < 5_000_000_000_000 {
            assert_eq!(parse_rfc3339_ms(&rfc3339_ms(ms)), Some(ms));
            ms += 7_777_777_777;
        }
    }
}
