//! `wald log verify|dump|stats`: offline tools over one partition log directory.
//!
//! They never modify the directory: no tail is cut, no index rebuilt, no `LOCK` file
//! created (see `wald_storage::inspect`). Exit codes: 0 when the command succeeded (for
//! `verify`: no error, warnings allowed), 1 when the log is damaged, 2 on a usage or I/O
//! error.

use std::fmt::Write as _;
use std::io::{self, BufWriter, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Args, Subcommand};
use serde::Serialize;
use serde_json::{json, Map, Value};
use wald_storage::inspect::DEFAULT_MAX_RECORD_BYTES;
use wald_storage::{Error, Problem, StoredRecord, VerifyOptions, VerifyProgress, VerifyReport};

use super::CliError;

/// Offline tools for one partition log directory. They only read: no tail is cut, no index
/// rebuilt, no LOCK file created; they may run on a copy or on a log no process holds.
#[derive(Debug, Subcommand)]
pub enum LogCommand {
    /// Check every segment, record, offset and index file.
    ///
    /// Checks segment headers, every record's CRC and offset, the offset chain across
    /// segments, that sealed segments end at their last record, what follows the newest
    /// segment's last record, and the index files. Prints one row per segment and one line
    /// per problem, naming the file, byte position and offset. Errors (corruption, a newer
    /// format version, an unknown file) make opening the log fail; warnings (a torn tail, a
    /// stale or missing index, a leftover file) are repaired when the log is opened.
    ///
    /// Exit code: 0 when clean or only warnings, 1 when any error, 2 on usage or I/O errors.
    Verify(VerifyArgs),
    /// Print records as JSON, one object per line.
    ///
    /// Each line: {"offset", "timestampMs", "dueMs", key, "headers", payload}. Bytes that
    /// are not UTF-8 are written as lowercase hex: the key is "key" (a string) when it is
    /// UTF-8, else "keyHex"; header values go to "headers" (name → string) when UTF-8, else
    /// to "headersHex" (name → hex), and a repeated name holds an array of its values in
    /// order; the payload is "payload" (the JSON itself, re-serialized on one line) when it
    /// is valid JSON, else "payloadText" (a string) when it is UTF-8, else "payloadHex".
    ///
    /// Stops at the end of the valid data. A torn tail of the newest segment (which opening
    /// the log would cut) ends the dump with a note on stderr and exit code 0; damage
    /// anywhere else ends it with a message naming the segment, byte position and offset,
    /// and exit code 1.
    Dump(DumpArgs),
    /// Summarize a log quickly.
    ///
    /// Segments, offsets, records, bytes, first and last record times, index files, spare.
    /// Trusts the file names and sealed segments' lengths and scans only the newest
    /// segment; `verify` checks everything. Exit code 1 when damage hides the answer (a bad
    /// header of the newest segment, a bad first record), 2 on usage or I/O errors.
    Stats(StatsArgs),
}

/// Arguments of `wald log verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The partition log directory.
    pub dir: PathBuf,
    /// Largest record length accepted, in bytes; at least the max_record_bytes the log was
    /// written with (default: the format's limit, 1 GiB).
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_RECORD_BYTES as u64,
          value_parser = clap::value_parser!(u64).range(44..=(DEFAULT_MAX_RECORD_BYTES as u64)))]
    pub max_record_bytes: u64,
    /// The index_interval_bytes the log is opened with: index files are compared with the
    /// index it implies.
    #[arg(long, value_name = "N", default_value_t = 4096,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub index_interval_bytes: u32,
    /// Print the report as one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `wald log dump`.
#[derive(Debug, Args)]
pub struct DumpArgs {
    /// The partition log directory.
    pub dir: PathBuf,
    /// The first offset to print (records before it are skipped).
    #[arg(long, value_name = "OFFSET", default_value_t = 0)]
    pub from: u64,
    /// Print at most N records.
    #[arg(long, value_name = "N")]
    pub limit: Option<u64>,
}

/// Arguments of `wald log stats`.
#[derive(Debug, Args)]
pub struct StatsArgs {
    /// The partition log directory.
    pub dir: PathBuf,
    /// Print the summary as one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// Runs a `wald log` command.
pub fn run(cmd: LogCommand) -> Result<ExitCode, CliError> {
    match cmd {
        LogCommand::Verify(a) => verify(&a),
        LogCommand::Dump(a) => dump(&a),
        LogCommand::Stats(a) => stats(&a),
    }
}

// ------------------------------------------------------------------------------------------
// verify
// ------------------------------------------------------------------------------------------

fn verify(a: &VerifyArgs) -> Result<ExitCode, CliError> {
    let opts = VerifyOptions {
        max_record_bytes: usize::try_from(a.max_record_bytes).unwrap_or(DEFAULT_MAX_RECORD_BYTES),
        index_interval_bytes: a.index_interval_bytes,
    };
    let mut progress = Progress::new();
    let report = wald_storage::verify_with(&a.dir, &opts, &mut |p| progress.show(p))?;
    progress.finish();
    let text = if a.json {
        verify_json(&report).to_string() + "\n"
    } else {
        verify_table(&report)
    };
    write_stdout(text.as_bytes())?;
    Ok(if report.errors() > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// Progress of a verify on stderr, for logs of more than one segment: on a terminal a
/// line rewritten after each segment; elsewhere a line at most every 2 seconds.
struct Progress {
    tty: bool,
    shown: bool,
    last: Instant,
}

impl Progress {
    fn new() -> Self {
        Self {
            tty: io::stderr().is_terminal(),
            shown: false,
            last: Instant::now(),
        }
    }

    fn show(&mut self, p: &VerifyProgress) {
        if p.segments_total < 2 {
            return;
        }
        let last_one = p.segments_done == p.segments_total;
        if !self.tty && (self.last.elapsed() < Duration::from_secs(2) || last_one && !self.shown) {
            return;
        }
        self.last = Instant::now();
        let line = format!(
            "verified {}/{} segments, {} of {}",
            p.segments_done,
            p.segments_total,
            human_bytes(p.bytes_done),
            human_bytes(p.bytes_total)
        );
        let mut err = io::stderr().lock();
        let _ = if self.tty {
            write!(err, "\r\x1b[K{line}")
        } else {
            writeln!(err, "{line}")
        };
        let _ = err.flush();
        self.shown = true;
    }

    fn finish(&self) {
        if self.tty && self.shown {
            eprintln!();
        }
    }
}

fn problem_json(p: &Problem) -> Value {
    json!({
        "severity": p.severity().as_str(),
        "kind": p.kind.as_str(),
        "file": p.file,
        "segment": p.segment,
        "position": p.position,
        "offset": p.offset,
        "message": p.message,
    })
}

fn verify_json(r: &VerifyReport) -> Value {
    let segments: Vec<Value> = r
        .segments
        .iter()
        .map(|s| {
            json!({
                "file": s.file,
                "baseOffset": s.base_offset,
                "nextOffset": s.next_offset,
                "records": s.records,
                "dataBytes": s.data_bytes,
                "fileBytes": s.file_bytes,
                "firstTimestampMs": s.first_timestamp_ms,
                "lastTimestampMs": s.last_timestamp_ms,
                "createdMs": s.created_ms,
                "sealed": s.sealed,
                "errors": s.errors,
                "warnings": s.warnings,
            })
        })
        .collect();
    json!({
        "dir": r.dir.display().to_string(),
        "clean": r.is_clean(),
        "errors": r.errors(),
        "warnings": r.warnings(),
        "firstOffset": r.first_offset(),
        "nextOffset": r.next_offset(),
        "records": r.records(),
        "dataBytes": r.data_bytes(),
        "indexFiles": r.index_files,
        "sparePresent": r.spare_present,
        "inUse": r.in_use,
        "maxRecordBytes": r.options.max_record_bytes,
        "indexIntervalBytes": r.options.index_interval_bytes,
        "segments": segments,
        "problems": r.problems.iter().map(problem_json).collect::<Vec<_>>(),
    })
}

fn verify_table(r: &VerifyReport) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "log {}", r.dir.display());
    if r.in_use {
        let _ = writeln!(
            out,
            "note: a running process holds this log (LOCK); its newest segment may change while it is read"
        );
    }
    let _ = writeln!(
        out,
        "{} segments, offsets {}..{} ({} records), {} of data, {} index files{}",
        r.segments.len(),
        r.first_offset(),
        r.next_offset(),
        r.records(),
        human_bytes(r.data_bytes()),
        r.index_files,
        if r.spare_present {
            ", spare present"
        } else {
            ""
        }
    );
    if !r.segments.is_empty() {
        let _ = writeln!(out);
        let rows: Vec<[String; 9]> = r
            .segments
            .iter()
            .map(|s| {
                let status = match (s.errors, s.warnings) {
                    (0, 0) => "ok".to_owned(),
                    (0, w) => plural(w, "warning"),
                    (e, 0) => plural(e, "error"),
                    (e, w) => format!("{}, {}", plural(e, "error"), plural(w, "warning")),
                };
                [
                    s.file.clone(),
                    if s.sealed { "sealed" } else { "newest" }.to_owned(),
                    s.base_offset.to_string(),
                    s.next_offset.to_string(),
                    s.records.to_string(),
                    human_bytes(s.data_bytes),
                    s.first_timestamp_ms.map_or_else(|| "-".to_owned(), fmt_ms),
                    s.last_timestamp_ms.map_or_else(|| "-".to_owned(), fmt_ms),
                    status,
                ]
            })
            .collect();
        let head = [
            "SEGMENT",
            "STATE",
            "BASE",
            "NEXT",
            "RECORDS",
            "DATA",
            "FIRST RECORD",
            "LAST RECORD",
            "STATUS",
        ];
        table(
            &mut out,
            &head,
            &rows,
            &[false, false, true, true, true, true, false, false, false],
        );
    }
    if !r.problems.is_empty() {
        let _ = writeln!(out, "\nproblems:");
        for p in &r.problems {
            let _ = writeln!(out, "  {p}");
        }
    }
    let verdict = match (r.errors(), r.warnings()) {
        (0, 0) => "clean".to_owned(),
        (0, w) => format!(
            "ok, {} (repaired when the log is opened)",
            plural(w, "warning")
        ),
        (e, 0) => format!("DAMAGED: {}", plural(e, "error")),
        (e, w) => format!("DAMAGED: {}, {}", plural(e, "error"), plural(w, "warning")),
    };
    let _ = writeln!(out, "\nresult: {verdict}");
    out
}

/// Appends an aligned table (two spaces between columns).
fn table<const N: usize>(
    out: &mut String,
    head: &[&str; N],
    rows: &[[String; N]],
    right: &[bool; N],
) {
    let mut width = head.map(str::len);
    for row in rows {
        for (w, cell) in width.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let mut line = |cells: &[&str]| {
        let mut s = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i > 0 {
                s.push_str("  ");
            }
            let w = width[i];
            if right[i] {
                let _ = write!(s, "{cell:>w$}");
            } else {
                let _ = write!(s, "{cell:<w$}");
            }
        }
        let _ = writeln!(out, "{}", s.trim_end());
    };
    line(head);
    for row in rows {
        line(&row.each_ref().map(String::as_str));
    }
}

fn plural(n: usize, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

// ------------------------------------------------------------------------------------------
// dump
// ------------------------------------------------------------------------------------------

/// One record of `wald log dump`, in output order.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct DumpLine {
    offset: u64,
    timestamp_ms: u64,
    due_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    key_hex: Option<String>,
    headers: Map<String, Value>,
    #[serde(skip_serializing_if = "Map::is_empty")]
    headers_hex: Map<String, Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    payload: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    payload_text: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    payload_hex: Option<String>,
}

impl DumpLine {
    fn new(r: StoredRecord) -> Self {
        let (key, key_hex) = match String::from_utf8(r.key) {
            Ok(s) => (Some(s), None),
            Err(e) => (None, Some(hex(e.as_bytes()))),
        };
        let mut headers = Map::new();
        let mut headers_hex = Map::new();
        for (name, value) in r.headers {
            match String::from_utf8(value) {
                Ok(s) => add_header(&mut headers, name, Value::String(s)),
                Err(e) => add_header(&mut headers_hex, name, Value::String(hex(e.as_bytes()))),
            }
        }
        let (mut payload, mut payload_text, mut payload_hex) = (None, None, None);
        if let Ok(v) = serde_json::from_slice::<Value>(&r.payload) {
            payload = Some(v);
        } else {
            match String::from_utf8(r.payload) {
                Ok(s) => payload_text = Some(s),
                Err(e) => payload_hex = Some(hex(e.as_bytes())),
            }
        }
        Self {
            offset: r.offset,
            timestamp_ms: r.timestamp_ms,
            due_ms: r.due_ms,
            key,
            key_hex,
            headers,
            headers_hex,
            payload,
            payload_text,
            payload_hex,
        }
    }
}

/// Adds a header value; a repeated name collects its values into an array, in order.
fn add_header(map: &mut Map<String, Value>, name: String, value: Value) {
    match map.get_mut(&name) {
        None => {
            map.insert(name, value);
        }
        Some(Value::Array(values)) => values.push(value),
        Some(existing) => {
            let first = existing.take();
            *existing = Value::Array(vec![first, value]);
        }
    }
}

fn dump(a: &DumpArgs) -> Result<ExitCode, CliError> {
    let mut records = wald_storage::dump(&a.dir, a.from, a.limit)?;
    let stdout = io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    let mut failure = None;
    for r in records.by_ref() {
        match r {
            Ok(rec) => {
                let mut line = serde_json::to_vec(&DumpLine::new(rec))?;
                line.push(b'\n');
                if let Err(e) = out.write_all(&line) {
                    return closed_stdout(e);
                }
            }
            Err(e) => failure = Some(e),
        }
    }
    if let Err(e) = out.flush() {
        return closed_stdout(e);
    }
    drop(out);
    if let Some(e) = failure {
        return damaged(e);
    }
    if let Some(p) = records.torn_tail() {
        eprintln!("note: the dump stopped at a torn tail: {p}");
    }
    Ok(ExitCode::SUCCESS)
}

/// A reader that closed our stdout (`| head`) is not an error.
fn closed_stdout(e: io::Error) -> Result<ExitCode, CliError> {
    if e.kind() == io::ErrorKind::BrokenPipe {
        Ok(ExitCode::SUCCESS)
    } else {
        Err(e.into())
    }
}

/// Damage found by a reading tool is exit code 1; any other failure is an error (2).
fn damaged(e: Error) -> Result<ExitCode, CliError> {
    match e {
        Error::Corruption { .. } | Error::BadHeader { .. } => {
            eprintln!("error: {e}");
            Ok(ExitCode::from(1))
        }
        other => Err(other.into()),
    }
}

fn write_stdout(bytes: &[u8]) -> Result<(), CliError> {
    let mut out = io::stdout().lock();
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Err(e) if e.kind() != io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}

// ------------------------------------------------------------------------------------------
// stats
// ------------------------------------------------------------------------------------------

fn stats(a: &StatsArgs) -> Result<ExitCode, CliError> {
    let s = match wald_storage::stats(&a.dir) {
        Ok(s) => s,
        Err(e) => return damaged(e),
    };
    let text = if a.json {
        let v = json!({
            "dir": s.dir.display().to_string(),
            "segments": s.segments,
            "firstOffset": s.first_offset,
            "nextOffset": s.next_offset,
            "records": s.records,
            "bytes": s.bytes,
            "diskBytes": s.disk_bytes,
            "firstTimestampMs": s.first_timestamp_ms,
            "lastTimestampMs": s.last_timestamp_ms,
            "indexFiles": s.index_files,
            "sparePresent": s.spare_present,
            "inUse": s.in_use,
            "unfinishedSegment": s.unfinished_segment,
            "tail": s.tail.as_ref().map(problem_json),
            "unknownFiles": s.unknown_files,
        });
        v.to_string() + "\n"
    } else {
        stats_text(&s)
    };
    write_stdout(text.as_bytes())?;
    Ok(ExitCode::SUCCESS)
}

fn stats_text(s: &wald_storage::LogSummary) -> String {
    let ts = |t: Option<u64>| t.map_or_else(|| "-".to_owned(), |t| format!("{} ({t})", fmt_ms(t)));
    let yes = |b: bool| if b { "yes" } else { "no" };
    let mut out = String::new();
    let rows = [
        ("log", s.dir.display().to_string()),
        ("segments", s.segments.to_string()),
        ("offsets", format!("{}..{}", s.first_offset, s.next_offset)),
        ("records", s.records.to_string()),
        (
            "data",
            format!("{} ({} bytes)", human_bytes(s.bytes), s.bytes),
        ),
        (
            "on disk",
            format!(
                "{} ({} bytes, preallocation, indexes and spare included)",
                human_bytes(s.disk_bytes),
                s.disk_bytes
            ),
        ),
        ("first record", ts(s.first_timestamp_ms)),
        ("last record", ts(s.last_timestamp_ms)),
        ("index files", s.index_files.to_string()),
        ("spare segment", yes(s.spare_present).to_owned()),
        ("in use", yes(s.in_use).to_owned()),
    ];
    for (k, v) in rows {
        let _ = writeln!(out, "{:<16}{v}", format!("{k}:"));
    }
    if s.unfinished_segment {
        let _ = writeln!(out, "note: the newest segment file holds only zeros (unfinished); opening the log removes it");
    }
    if let Some(p) = &s.tail {
        let _ = writeln!(out, "tail: {p}");
    }
    for f in &s.unknown_files {
        let _ = writeln!(
            out,
            "unknown file: {f} (opening the log refuses the directory)"
        );
    }
    out
}

// ------------------------------------------------------------------------------------------
// formatting
// ------------------------------------------------------------------------------------------

/// Lowercase hex of bytes.
fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Bytes in binary units: "3.1 GiB".
fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

/// Milliseconds since the epoch as UTC ISO 8601: "2025-01-02T03:04:05.678Z".
fn fmt_ms(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, sod) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        sod / 3600,
        sod % 3600 / 60,
        sod % 60,
        ms % 1000
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian (year, month, day); H. Hinnant's
/// `civil_from_days`, for non-negative days.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(fmt_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(fmt_ms(951_782_400_123), "2000-02-29T00:00:00.123Z");
        assert_eq!(fmt_ms(1_700_000_000_000), "2023-11-14T22:13:20.000Z");
        assert_eq!(human_bytes(1000), "1000 B");
        assert_eq!(human_bytes(3 << 30), "3.0 GiB");
        assert_eq!(hex(&[0, 0xab, 0x10]), "00ab10");
    }

    #[test]
    fn dump_lines() {
        let r = StoredRecord {
            offset: 7,
            timestamp_ms: 1,
            due_ms: 2,
            key: vec![0xff, 0],
            headers: vec![
                ("a".into(), b"x".to_vec()),
                ("a".into(), b"y".to_vec()),
                ("b".into(), vec![0xc3]),
            ],
            payload: b"{\"n\": [1, 2]}".to_vec(),
        };
        let v = serde_json::to_string(&DumpLine::new(r)).unwrap();
        assert_eq!(
            v,
            r#"{"offset":7,"timestampMs":1,"dueMs":2,"keyHex":"ff00","headers":{"a":["x","y"]},"headersHex":{"b":"c3"},"payload":{"n":[1,2]}}"#
        );
        let r = StoredRecord {
            offset: 0,
            timestamp_ms: 0,
            due_ms: 0,
            key: Vec::new(),
            headers: Vec::new(),
            payload: b"not json".to_vec(),
        };
        let v = serde_json::to_string(&DumpLine::new(r)).unwrap();
        assert_eq!(
            v,
            r#"{"offset":0,"timestampMs":0,"dueMs":0,"key":"","headers":{},"payloadText":"not json"}"#
        );
    }
}
