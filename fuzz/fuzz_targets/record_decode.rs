//! `record_decode`: the record decoder never panics, and every record it accepts
//! re-encodes to exactly the bytes it was decoded from.
//!
//! Each input is decoded twice:
//! 1. as is (`decode(data, 1 << 20)`): any bytes, mostly refused by the CRC;
//! 2. with the CRC field (bytes 4..8) recomputed over the input's own `length` prefix, so
//!    the fuzzer also reaches the checks behind the CRC (flags, field lengths, the
//!    headers block) instead of stopping at the checksum nearly every time.
//!
//! For each decode it checks the outcome's contract (`End` only for a zero length field,
//! `Incomplete { need }` only when the buffer is shorter than `need`, a record never longer
//! than the buffer or the limit) and, for a record, that
//! `Record { key, headers, payload, due_ms }.encode_into(offset, timestamp_ms)` reproduces
//! `&data[..len]` byte for byte.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wald_storage::format::record::{decode, Decoded, Record, RECORD_HEADER_LEN};

const MAX: usize = 1 << 20;

fn check(data: &[u8], max: usize) {
    match decode(data, max) {
        Ok(Decoded::End) => {
            let head = &data[..data.len().min(4)];
            assert!(
                head.iter().all(|&b| b == 0),
                "End for a non-zero length field: {head:02x?}"
            );
        }
        Ok(Decoded::Incomplete { need }) => {
            assert!(
                need > data.len(),
                "Incomplete {{ need: {need} }} but {} bytes are there",
                data.len()
            );
            assert!(
                need >= RECORD_HEADER_LEN,
                "Incomplete {{ need: {need} }} below the header length"
            );
        }
        Err(_) => {}
        Ok(Decoded::Record(v)) => {
            assert!(
                v.len <= data.len(),
                "record of {} bytes from a {}-byte buffer",
                v.len,
                data.len()
            );
            assert!(
                v.len <= max,
                "record of {} bytes accepted with max {max}",
                v.len
            );
            assert!(v.len >= RECORD_HEADER_LEN);
            let rec = Record {
                key: v.key.to_vec(),
                headers: v
                    .headers()
                    .map(|(n, val)| (n.to_owned(), val.to_vec()))
                    .collect(),
                payload: v.payload.to_vec(),
                due_ms: v.due_ms,
            };
            assert_eq!(
                rec.encoded_len(),
                Some(v.len),
                "encoded_len disagrees with the decoded length"
            );
            let mut out = Vec::new();
            let n = rec.encode_into(v.offset, v.timestamp_ms, &mut out);
            assert_eq!(n, Some(v.len), "encode_into returned a different length");
            assert!(
                out.as_slice() == &data[..v.len],
                "re-encoding differs from the decoded bytes:\n  decoded:   {:02x?}\n  reencoded: {:02x?}",
                &data[..v.len],
                out
            );
            // The owned copy agrees with the view.
            let owned = v.to_owned_record();
            assert_eq!(owned.offset, v.offset);
            assert_eq!(owned.timestamp_ms, v.timestamp_ms);
            assert_eq!(owned.key, rec.key);
            assert_eq!(owned.headers, rec.headers);
            assert_eq!(owned.payload, rec.payload);
            // A decode of the exact record (no trailing bytes) is the same record.
            assert_eq!(decode(&data[..v.len], max), Ok(Decoded::Record(v)));
        }
    }
}

/// The input with its CRC recomputed (bytes 0..4 then 8..length, as the format says),
/// when the length field is in range and the bytes are all there.
fn with_fixed_crc(data: &[u8]) -> Option<Vec<u8>> {
    if data.len() < RECORD_HEADER_LEN {
        return None;
    }
    let len = u32::from_le_bytes(data[0..4].try_into().ok()?) as usize;
    if !(RECORD_HEADER_LEN..=data.len().min(MAX)).contains(&len) {
        return None;
    }
    let mut fixed = data.to_vec();
    let mut h = crc32fast::Hasher::new();
    h.update(&fixed[0..4]);
    h.update(&fixed[8..len]);
    fixed[4..8].copy_from_slice(&h.finalize().to_le_bytes());
    Some(fixed)
}

fuzz_target!(|data: &[u8]| {
    check(data, MAX);
    if let Some(fixed) = with_fixed_crc(data) {
        check(&fixed, MAX);
        // And once more at a limit just under the record's length: must be refused.
        let len = u32::from_le_bytes([fixed[0], fixed[1], fixed[2], fixed[3]]) as usize;
        assert!(
            !matches!(decode(&fixed, len - 1), Ok(Decoded::Record(_))),
            "a {len}-byte record accepted with max {}",
            len - 1
        );
    }
});
