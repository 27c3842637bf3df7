//! Read-only inspection of a partition log directory: [`verify`], [`dump`] and [`stats`],
//! the engine of `wald log verify|dump|stats`.
//!
//! Nothing in this module writes. It never cuts a tail, rebuilds an index, removes a
//! leftover or creates the `LOCK` file, and it opens every file read-only. It may run on a
//! log that nothing else holds, or on a copy. (On a log a running `wald` holds open, the
//! newest segment can change while it is read: the reports say when the lock is held.)
//!
//! Sealed segments are read through read-only maps ([`Mapped`]); the newest segment, the
//! only one a running writer may still change or truncate, is read into memory.
//!
//! The checks are those of opening a log (`recovery.rs`) and of `docs/FORMAT.md` §6, but
//! everything found is reported instead of the first error, and what opening would repair
//! (a torn tail, a stale index, leftovers) is a warning rather than a repair.

use std::fmt::{self, Write as _};
use std::fs::{self, File};
use std::path::{Path, PathBuf};

use crate::config::LogConfig;
use crate::error::{Error, IoOp, Result};
use crate::format::header::{HeaderError, SegmentHeader, SEGMENT_HEADER_LEN};
use crate::format::index::{decode_index_header, IndexEntry, INDEX_ENTRY_LEN, INDEX_HEADER_LEN};
use crate::format::record::{StoredRecord, MAX_RECORD_LEN_LIMIT};
use crate::format::{
    index_file_name, parse_file_name, segment_file_name, INDEX_SUFFIX, LOCK_FILE, SEGMENT_SUFFIX,
    SPARE_SUFFIX,
};
use crate::io::StdFs;
use crate::mmap::Mapped;
use crate::segment::index::{read_index_file, Entries};
use crate::segment::scan::{find_valid_record_after, record_at, scan, Scan, Stop};

/// The record-length limit the tools read with unless told otherwise: the format's hard
/// limit, so that no legitimately written record reads as `BadLength`.
pub const DEFAULT_MAX_RECORD_BYTES: usize = MAX_RECORD_LEN_LIMIT;

// ------------------------------------------------------------------------------------------
// Problems
// ------------------------------------------------------------------------------------------

/// How bad a problem is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// The log is damaged, or opening it would fail.
    Error,
    /// Opening the log repairs it (or it is harmless); nothing acknowledged is lost.
    Warning,
}

impl Severity {
    /// `"error"` or `"warning"`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Error => "error",
            Self::Warning => "warning",
        }
    }
}

/// What kind of problem [`verify`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProblemKind {
    /// Damaged data: a bad segment header, a record failing its checks, a sealed segment
    /// not ending at its last record, mid-log damage in the last segment, a broken offset
    /// chain. Opening the log refuses it. Severity: error.
    Corruption,
    /// A segment written by a newer format version. Opening refuses it. Severity: error.
    UnsupportedVersion,
    /// A file that does not belong in a log directory. Opening refuses the directory.
    /// Severity: error.
    UnknownFile,
    /// Invalid bytes after the last valid record of the last segment, with no valid record
    /// after them: what a crash mid-write leaves. Opening under
    /// `RecoveryMode::TolerateTailCorruption` cuts it. Severity: warning.
    TornTail,
    /// An index file that is missing, short, unreadable or disagrees with its segment.
    /// Indexes are derived; opening rebuilds it. Severity: warning.
    IndexMismatch,
    /// A leftover that opening removes: a temporary file, an index without its segment, a
    /// newest segment whose header was never written. Severity: warning.
    Leftover,
    /// A sealed segment whose records are followed by nothing but zeros up to the end of
    /// the file: a seal interrupted before its truncation. Opening the log (with
    /// `verify_on_open`, the default) truncates it. Severity: warning.
    InterruptedSeal,
}

impl ProblemKind {
    /// The severity of this kind.
    #[must_use]
    pub fn severity(self) -> Severity {
        match self {
            Self::Corruption | Self::UnsupportedVersion | Self::UnknownFile => Severity::Error,
            Self::TornTail | Self::IndexMismatch | Self::Leftover | Self::InterruptedSeal => {
                Severity::Warning
            }
        }
    }

    /// A short kebab-case name (`"torn-tail"`).
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Corruption => "corruption",
            Self::UnsupportedVersion => "unsupported-version",
            Self::UnknownFile => "unknown-file",
            Self::TornTail => "torn-tail",
            Self::IndexMismatch => "index-mismatch",
            Self::Leftover => "leftover",
            Self::InterruptedSeal => "interrupted-seal",
        }
    }
}

/// One problem found by [`verify`] (or the tail found by [`stats`] and [`dump`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// What kind of problem.
    pub kind: ProblemKind,
    /// The file name (within the log directory) the problem is in: a segment, an index,
    /// or an unknown file.
    pub file: String,
    /// The segment concerned (for an index problem, the segment it indexes).
    pub segment: Option<String>,
    /// Byte position in the segment: where the damage starts, or for an index problem the
    /// first record the index fails to describe.
    pub position: Option<u64>,
    /// The offset the record at `position` should have.
    pub offset: Option<u64>,
    /// What is wrong, and what opening the log would do about it.
    pub message: String,
}

impl Problem {
    /// The severity of the problem's kind.
    #[must_use]
    pub fn severity(&self) -> Severity {
        self.kind.severity()
    }

    fn in_segment(
        kind: ProblemKind,
        file: &str,
        position: usize,
        offset: u64,
        message: String,
    ) -> Self {
        Self {
            kind,
            file: file.to_owned(),
            segment: Some(file.to_owned()),
            position: Some(position as u64),
            offset: Some(offset),
            message,
        }
    }

    fn corruption(file: &str, position: usize, offset: u64, message: String) -> Self {
        Self::in_segment(ProblemKind::Corruption, file, position, offset, message)
    }

    fn file_only(kind: ProblemKind, file: &str, message: String) -> Self {
        Self {
            kind,
            file: file.to_owned(),
            segment: None,
            position: None,
            offset: None,
            message,
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} in {}",
            self.severity().as_str(),
            self.kind.as_str(),
            self.file
        )?;
        if let Some(seg) = self.segment.as_deref().filter(|s| *s != self.file) {
            write!(f, " (segment {seg})")?;
        }
        if let Some(p) = self.position {
            write!(f, " at byte {p}")?;
        }
        if let Some(o) = self.offset {
            write!(f, ", offset {o}")?;
        }
        write!(f, ": {}", self.message)
    }
}

// ------------------------------------------------------------------------------------------
// Reading files without writing them
// ------------------------------------------------------------------------------------------

/// A segment's bytes: mapped (sealed) or read into memory (the newest).
#[derive(Debug)]
enum Bytes {
    Mapped(Mapped),
    Owned(Vec<u8>),
}

impl Bytes {
    fn get(&self) -> &[u8] {
        match self {
            Self::Mapped(m) => m.bytes(),
            Self::Owned(v) => v,
        }
    }

    /// Maps a sealed segment read-only, or reads the newest one into memory.
    fn load(path: &Path, sealed: bool) -> Result<Self> {
        if sealed {
            let file = File::open(path).map_err(|e| Error::io(IoOp::Open, path, e))?;
            Mapped::map(&file)
                .map(Self::Mapped)
                .map_err(|e| Error::io(IoOp::Map, path, e))
        } else {
            fs::read(path)
                .map(Self::Owned)
                .map_err(|e| Error::io(IoOp::Read, path, e))
        }
    }
}

/// What a log directory holds, by kind of file.
#[derive(Debug, Default)]
struct Listing {
    /// Base offsets of the segments, ascending.
    segments: Vec<u64>,
    /// Base offsets of the index files, ascending.
    indexes: Vec<u64>,
    /// Spare segment files.
    spares: Vec<String>,
    /// Temporary files that opening removes.
    temporaries: Vec<String>,
    /// Anything else: name and why it does not belong.
    unknown: Vec<(String, &'static str)>,
}

fn list(dir: &Path) -> Result<Listing> {
    let mut out = Listing::default();
    let entries = fs::read_dir(dir).map_err(|e| Error::io(IoOp::ListDir, dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(IoOp::ListDir, dir, e))?;
        let os_name = entry.file_name();
        let Some(name) = os_name.to_str() else {
            out.unknown.push((
                os_name.to_string_lossy().into_owned(),
                "the file name is not UTF-8",
            ));
            continue;
        };
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            out.unknown.push((
                name.to_owned(),
                "a directory (a partition log directory holds only segment, index, spare and LOCK files)",
            ));
        } else if name == LOCK_FILE {
            // The lock file: present or not, it holds no data.
        } else if let Some(base) = parse_file_name(name, SEGMENT_SUFFIX) {
            out.segments.push(base);
        } else if let Some(base) = parse_file_name(name, INDEX_SUFFIX) {
            out.indexes.push(base);
        } else if extension_is(name, SPARE_SUFFIX) {
            // Opening removes these, as recovery::inventory does.
            out.spares.push(name.to_owned());
        } else if extension_is(name, "tmp") {
            out.temporaries.push(name.to_owned());
        } else {
            out.unknown.push((
                name.to_owned(),
                "unexpected file in a log directory (expected *.log, *.idx, *.spare, LOCK); \
                 opening the log refuses the directory",
            ));
        }
    }
    out.segments.sort_unstable();
    out.indexes.sort_unstable();
    out.spares.sort();
    out.temporaries.sort();
    out.unknown.sort();
    Ok(out)
}

/// True when the file name's extension is `ext` (as `recovery::inventory` tells spare and
/// temporary files).
fn extension_is(name: &str, ext: &str) -> bool {
    Path::new(name).extension().is_some_and(|x| x == ext)
}

/// True when another process (or an open `Log` of this one) holds the directory lock.
/// Takes a shared lock for an instant and releases it; a missing `LOCK` is not created.
fn lock_held(dir: &Path) -> bool {
    let Ok(file) = File::open(dir.join(LOCK_FILE)) else {
        return false;
    };
    match file.try_lock_shared() {
        Ok(()) => {
            let _ = file.unlock();
            false
        }
        Err(fs::TryLockError::WouldBlock) => true,
        Err(fs::TryLockError::Error(_)) => false,
    }
}

/// Scans from a record boundary `pos` (≥ 64) whose record should carry `offset`, reusing
/// [`scan`] on a window that starts 64 bytes earlier. `end` is made absolute; the index
/// of the result is meaningless.
fn scan_from(bytes: &[u8], pos: usize, offset: u64, max_record: usize) -> Scan {
    let origin = pos.saturating_sub(SEGMENT_HEADER_LEN);
    let mut sc = scan(&bytes[origin..], offset, max_record, u32::MAX);
    sc.end += origin;
    sc.index.clear();
    sc
}

/// Why reading stopped at `pos`, in words.
fn describe_stop(stop: &Stop, pos: usize, len: usize, expected: u64) -> String {
    match stop {
        Stop::End if pos < len => {
            if len - pos < 4 {
                format!("the file ends {} bytes after the last record", len - pos)
            } else {
                format!("the data ends at byte {pos} (a zero length field) but the file is {len} bytes long")
            }
        }
        Stop::End => "unexpected end of the file".to_owned(),
        Stop::Incomplete { need } => {
            format!("a record of {need} bytes runs past the end of the file ({len} bytes)")
        }
        Stop::Corrupt(e) => e.to_string(),
        Stop::WrongOffset { found } => {
            format!("the record carries offset {found}, expected {expected}")
        }
    }
}

/// Why reading a sealed segment stopped at `pos` before the end of its file, in words.
fn sealed_damage(stop: &Stop, pos: usize, len: usize, expected: u64) -> String {
    let mut reason = describe_stop(stop, pos, len, expected);
    if matches!(stop, Stop::End | Stop::Incomplete { .. }) {
        reason.push_str(" (a sealed segment ends exactly at its last record)");
    }
    reason
}

/// Where valid records resume after damage at `end` (which stopped with `stop` while
/// offset `next` was expected): a valid record at `end` itself with a later offset (the
/// offsets in between are missing), else the first valid record after `end` with an offset
/// of at least `next`.
fn resume_point(
    bytes: &[u8],
    end: usize,
    stop: &Stop,
    next: u64,
    max_record: usize,
) -> Option<(usize, u64)> {
    match *stop {
        Stop::WrongOffset { found } if found > next => Some((end, found)),
        _ => find_valid_record_after(bytes, end, next, max_record),
    }
}

/// What follows the last valid record of the newest segment: nothing but zeros (`None`),
/// a torn tail, or damage with valid records after it (a corruption).
fn classify_tail(
    file: &str,
    bytes: &[u8],
    end: usize,
    stop: &Stop,
    next: u64,
    max_record: usize,
) -> Option<Problem> {
    let rest = &bytes[end..];
    let last_nz = rest.iter().rposition(|&b| b != 0)?;
    let reason = match stop {
        Stop::End => "non-zero bytes after the end of the data".to_owned(),
        other => describe_stop(other, end, bytes.len(), next),
    };
    if let Some((pos, offset)) = resume_point(bytes, end, stop, next, max_record) {
        return Some(Problem::corruption(
            file,
            end,
            next,
            format!(
            "{reason}; a valid record (offset {offset}) follows at byte {pos}, so this is damage \
             inside the log, not a torn tail: opening the log refuses it"
        ),
        ));
    }
    Some(Problem::in_segment(
        ProblemKind::TornTail,
        file,
        end,
        next,
        format!(
        "{reason}; {} bytes up to byte {} hold no valid record (what a crash mid-write leaves). \
         Opening the log cuts them under RecoveryMode::TolerateTailCorruption (the default); \
         AbsoluteConsistency refuses to open",
        last_nz + 1,
        end + last_nz + 1
    ),
    ))
}

/// "offset 7 is" / "offsets 7 to 9 are": the offsets `from..to`.
fn offsets(from: u64, to: u64) -> String {
    if to == from + 1 {
        format!("offset {from} is")
    } else {
        format!("offsets {from} to {} are", to - 1)
    }
}

/// The error for damage met while reading records.
fn corrupt(path: &Path, position: usize, offset: u64, reason: String) -> Error {
    Error::Corruption {
        segment: path.to_path_buf(),
        position: position as u64,
        offset,
        reason,
    }
}

/// Decodes a segment's header for the reading tools (dump, stats).
fn header_for_read(path: &Path, bytes: &[u8], base: u64) -> Result<SegmentHeader> {
    match SegmentHeader::decode(bytes) {
        Ok(h) if h.base_offset == base => Ok(h),
        Ok(h) => Err(corrupt(
            path,
            0,
            base,
            format!(
                "the segment header says base offset {} but the file name says {base}",
                h.base_offset
            ),
        )),
        Err(reason @ HeaderError::UnsupportedVersion { .. }) => Err(Error::BadHeader {
            path: path.to_path_buf(),
            reason,
        }),
        Err(e) => Err(corrupt(path, 0, base, format!("segment header: {e}"))),
    }
}

/// True when a segment file holds only zeros (or nothing): the newest segment of a process
/// that stopped before writing its header. Opening removes it.
fn unfinished(bytes: &[u8]) -> bool {
    bytes.iter().all(|&b| b == 0)
}

/// Where to start reading a segment for `offset`: the index entry at or before it, when
/// the record there checks out; else the first record.
fn start_position(
    dir: &Path,
    bytes: &[u8],
    base: u64,
    offset: u64,
    max_record: usize,
) -> (usize, u64) {
    let first = (SEGMENT_HEADER_LEN, base);
    if offset <= base {
        return first;
    }
    let Some(entries) = read_index_file(&StdFs, &dir.join(index_file_name(base)), base) else {
        return first;
    };
    let Some(e) = entries.floor_offset(offset - base) else {
        return first;
    };
    let at = (e.position as usize, base + u64::from(e.rel_offset));
    match record_at(bytes, at.0, max_record) {
        Ok(v)
            if v.offset == at.1
                && v.timestamp_ms == e.timestamp_ms
                && at.0 >= SEGMENT_HEADER_LEN =>
        {
            at
        }
        _ => first,
    }
}

// ------------------------------------------------------------------------------------------
// verify
// ------------------------------------------------------------------------------------------

/// Options of [`verify_with`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VerifyOptions {
    /// Largest record length accepted (at most the format's 1 GiB limit). It must be at
    /// least the `max_record_bytes` the log was written with. Default: 1 GiB.
    pub max_record_bytes: usize,
    /// The `index_interval_bytes` the index files are checked against (the one the log is
    /// opened with decides what opening rebuilds). Default: `LogConfig`'s, 4096.
    pub index_interval_bytes: u32,
}

impl Default for VerifyOptions {
    fn default() -> Self {
        Self {
            max_record_bytes: DEFAULT_MAX_RECORD_BYTES,
            index_interval_bytes: LogConfig::default().index_interval_bytes,
        }
    }
}

/// Progress of [`verify_with`], reported after each segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VerifyProgress {
    /// Segments checked so far.
    pub segments_done: usize,
    /// Segments in all.
    pub segments_total: usize,
    /// Bytes of segment files checked so far.
    pub bytes_done: u64,
    /// Bytes of all segment files.
    pub bytes_total: u64,
}

/// What [`verify`] found about one segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentSummary {
    /// The segment's file name.
    pub file: String,
    /// Its base offset (from the file name).
    pub base_offset: u64,
    /// The offset after its last valid record (`base_offset` when it has none or could not
    /// be scanned).
    pub next_offset: u64,
    /// Valid records found.
    pub records: u64,
    /// Byte position after its last valid record (header included).
    pub data_bytes: u64,
    /// Length of the file (a preallocated newest segment is longer than its data).
    pub file_bytes: u64,
    /// Timestamp of its first valid record.
    pub first_timestamp_ms: Option<u64>,
    /// Timestamp of its last valid record.
    pub last_timestamp_ms: Option<u64>,
    /// When the segment was created, from its header (when the header is readable).
    pub created_ms: Option<u64>,
    /// False for the newest segment (the one appended to), true for the others.
    pub sealed: bool,
    /// False when the header was too damaged to scan the records.
    pub scanned: bool,
    /// Problems of severity error in this segment or its index.
    pub errors: usize,
    /// Problems of severity warning in this segment or its index.
    pub warnings: usize,
}

/// What [`verify`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    /// The directory verified.
    pub dir: PathBuf,
    /// The segments, oldest first (without an unfinished newest segment; see `problems`).
    pub segments: Vec<SegmentSummary>,
    /// Every problem found, in the order found.
    pub problems: Vec<Problem>,
    /// Index files present.
    pub index_files: usize,
    /// Whether a spare segment is present (normal; removed and re-made on open).
    pub spare_present: bool,
    /// Whether the directory lock was held by a running process during the check: the
    /// newest segment may then have changed while it was read.
    pub in_use: bool,
    /// The options used.
    pub options: VerifyOptions,
}

impl VerifyReport {
    /// Problems of severity error.
    #[must_use]
    pub fn errors(&self) -> usize {
        self.problems
            .iter()
            .filter(|p| p.severity() == Severity::Error)
            .count()
    }

    /// Problems of severity warning.
    #[must_use]
    pub fn warnings(&self) -> usize {
        self.problems
            .iter()
            .filter(|p| p.severity() == Severity::Warning)
            .count()
    }

    /// No problem at all.
    #[must_use]
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }

    /// The first offset (the oldest segment's base offset; 0 for an empty log).
    #[must_use]
    pub fn first_offset(&self) -> u64 {
        self.segments.first().map_or(0, |s| s.base_offset)
    }

    /// The offset after the last valid record.
    #[must_use]
    pub fn next_offset(&self) -> u64 {
        self.segments.last().map_or(0, |s| s.next_offset)
    }

    /// Valid records in all segments.
    #[must_use]
    pub fn records(&self) -> u64 {
        self.segments.iter().map(|s| s.records).sum()
    }

    /// Bytes of segment data (headers and valid records).
    #[must_use]
    pub fn data_bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.data_bytes).sum()
    }
}

/// Verifies the log in `dir` without modifying it, reading records up to
/// `max_record_bytes` long (default [`DEFAULT_MAX_RECORD_BYTES`], 1 GiB).
///
/// # Errors
/// An I/O error listing the directory or reading a file. Damage is not an error: it is
/// in the report.
pub fn verify(dir: &Path, max_record_bytes: Option<usize>) -> Result<VerifyReport> {
    let mut opts = VerifyOptions::default();
    if let Some(m) = max_record_bytes {
        opts.max_record_bytes = m;
    }
    verify_with(dir, &opts, &mut |_| {})
}

/// [`verify`] with options, calling `progress` after each segment.
///
/// # Errors
/// As [`verify`].
pub fn verify_with(
    dir: &Path,
    opts: &VerifyOptions,
    progress: &mut dyn FnMut(&VerifyProgress),
) -> Result<VerifyReport> {
    let opts = VerifyOptions {
        max_record_bytes: opts.max_record_bytes.min(MAX_RECORD_LEN_LIMIT),
        index_interval_bytes: opts.index_interval_bytes.max(1),
    };
    let listing = list(dir)?;
    let mut report = VerifyReport {
        dir: dir.to_path_buf(),
        segments: Vec::new(),
        problems: Vec::new(),
        index_files: listing.indexes.len(),
        spare_present: !listing.spares.is_empty(),
        in_use: lock_held(dir),
        options: opts,
    };
    report.problems = directory_problems(&listing);
    let mut bases = listing.segments.clone();
    let mut newest = newest_segment(dir, &mut bases, &mut report.problems)?;

    let mut sizes = Vec::with_capacity(bases.len());
    for &base in &bases {
        let path = dir.join(segment_file_name(base));
        let len = fs::metadata(&path)
            .map_err(|e| Error::io(IoOp::Open, &path, e))?
            .len();
        sizes.push(len);
    }
    let mut prog = VerifyProgress {
        segments_done: 0,
        segments_total: bases.len(),
        bytes_done: 0,
        bytes_total: sizes.iter().sum(),
    };
    for (i, &base) in bases.iter().enumerate() {
        let sealed = i + 1 < bases.len();
        let bytes = match newest.take() {
            Some(b) if !sealed => b,
            other => {
                newest = other;
                Bytes::load(&dir.join(segment_file_name(base)), sealed)?
            }
        };
        let has_index = listing.indexes.binary_search(&base).is_ok();
        let (summary, problems) = verify_segment(dir, base, bytes.get(), sealed, has_index, &opts);
        report.segments.push(summary);
        report.problems.extend(problems);
        prog.segments_done += 1;
        prog.bytes_done += sizes[i];
        progress(&prog);
    }

    check_chain(&report.segments, &mut report.problems);
    for s in &mut report.segments {
        let mine = report
            .problems
            .iter()
            .filter(|p| p.segment.as_deref() == Some(s.file.as_str()));
        for p in mine {
            match p.severity() {
                Severity::Error => s.errors += 1,
                Severity::Warning => s.warnings += 1,
            }
        }
    }
    Ok(report)
}

/// Problems of the directory itself: unknown files and leftovers.
fn directory_problems(listing: &Listing) -> Vec<Problem> {
    let mut problems = Vec::new();
    for (name, why) in &listing.unknown {
        problems.push(Problem::file_only(
            ProblemKind::UnknownFile,
            name,
            (*why).to_owned(),
        ));
    }
    for name in &listing.temporaries {
        problems.push(Problem::file_only(
            ProblemKind::Leftover,
            name,
            "temporary file of an interrupted index rewrite; opening the log removes it".to_owned(),
        ));
    }
    for &base in &listing.indexes {
        if listing.segments.binary_search(&base).is_err() {
            problems.push(Problem::file_only(
                ProblemKind::Leftover,
                &index_file_name(base),
                "index file without its segment; opening the log removes it".to_owned(),
            ));
        }
    }
    problems
}

/// Reads the newest segment into memory (a running writer may still change it). An
/// all-zero one was being created when its process stopped: opening removes it, so it is
/// reported, dropped from `bases`, and `None` is returned (the next newest is read later).
fn newest_segment(
    dir: &Path,
    bases: &mut Vec<u64>,
    problems: &mut Vec<Problem>,
) -> Result<Option<Bytes>> {
    let Some(&last) = bases.last() else {
        return Ok(None);
    };
    let name = segment_file_name(last);
    let bytes = Bytes::load(&dir.join(&name), false)?;
    if !unfinished(bytes.get()) {
        return Ok(Some(bytes));
    }
    problems.push(Problem::in_segment(
        ProblemKind::Leftover,
        &name,
        0,
        last,
        format!(
        "the newest segment holds only zeros ({} bytes): it was being created when its process \
         stopped and holds no record; opening the log removes it",
        bytes.get().len()
    ),
    ));
    bases.pop();
    Ok(None)
}

/// Each segment must end at the offset the next one starts at.
fn check_chain(segments: &[SegmentSummary], problems: &mut Vec<Problem>) {
    for w in segments.windows(2) {
        let (a, b) = (&w[0], &w[1]);
        if !a.scanned || a.next_offset == b.base_offset {
            continue;
        }
        let what = if a.next_offset < b.base_offset {
            format!("{} missing", offsets(a.next_offset, b.base_offset))
        } else {
            format!("{} in both segments", offsets(b.base_offset, a.next_offset))
        };
        problems.push(Problem::corruption(
            &a.file,
            a.data_bytes as usize,
            a.next_offset,
            format!(
            "the segment's records end at offset {} but the next segment ({}) starts at {}: {what}",
            a.next_offset, b.file, b.base_offset
        ),
        ));
    }
}

/// Checks a segment's header; returns the base offset to check its records against (`None`
/// when they cannot be read) and its creation time.
fn check_header(
    file: &str,
    base: u64,
    bytes: &[u8],
    problems: &mut Vec<Problem>,
) -> (Option<u64>, Option<u64>) {
    match SegmentHeader::decode(bytes) {
        Ok(h) => {
            if h.base_offset != base {
                problems.push(Problem::corruption(
                    file,
                    0,
                    base,
                    format!(
                    "the segment header says base offset {} but the file name says {base}; records \
                     are checked against the header's",
                    h.base_offset
                ),
                ));
            }
            (Some(h.base_offset), Some(h.created_ms))
        }
        Err(e @ HeaderError::UnsupportedVersion { .. }) => {
            problems.push(Problem::in_segment(
                ProblemKind::UnsupportedVersion,
                file,
                0,
                base,
                format!("segment header: {e}; its records are not checked"),
            ));
            (None, None)
        }
        Err(e @ (HeaderError::Short { .. } | HeaderError::BadMagic)) => {
            problems.push(Problem::corruption(
                file,
                0,
                base,
                format!("segment header: {e}; its records are not checked"),
            ));
            (None, None)
        }
        Err(e) => {
            problems.push(Problem::corruption(
                file,
                0,
                base,
                format!(
                "segment header: {e}; records are checked against the base offset in the file name"
            ),
            ));
            (Some(base), None)
        }
    }
}

/// Checks one segment: header, every record, its end, and its index.
fn verify_segment(
    dir: &Path,
    base: u64,
    bytes: &[u8],
    sealed: bool,
    has_index: bool,
    opts: &VerifyOptions,
) -> (SegmentSummary, Vec<Problem>) {
    let file = segment_file_name(base);
    let mut summary = SegmentSummary {
        file: file.clone(),
        base_offset: base,
        next_offset: base,
        records: 0,
        data_bytes: bytes.len().min(SEGMENT_HEADER_LEN) as u64,
        file_bytes: bytes.len() as u64,
        first_timestamp_ms: None,
        last_timestamp_ms: None,
        created_ms: None,
        sealed,
        scanned: false,
        errors: 0,
        warnings: 0,
    };
    let mut problems = Vec::new();
    let (scan_base, created_ms) = check_header(&file, base, bytes, &mut problems);
    summary.created_ms = created_ms;
    let Some(scan_base) = scan_base else {
        return (summary, problems);
    };
    summary.scanned = true;

    let implied_index = scan_records(bytes, scan_base, opts, &mut summary, &mut problems);
    let damaged = problems.iter().any(|p| p.severity() == Severity::Error);
    if !damaged {
        problems.extend(check_index(
            dir,
            base,
            bytes,
            &implied_index,
            has_index,
            opts,
        ));
    }
    (summary, problems)
}

/// Scans every record of a segment, going on after damage to find what else is wrong;
/// fills in `summary` and returns the index the records before any damage imply.
fn scan_records(
    bytes: &[u8],
    scan_base: u64,
    opts: &VerifyOptions,
    summary: &mut SegmentSummary,
    problems: &mut Vec<Problem>,
) -> Vec<IndexEntry> {
    let max = opts.max_record_bytes;
    let len = bytes.len();
    let mut sc = scan(bytes, scan_base, max, opts.index_interval_bytes);
    let implied_index = std::mem::take(&mut sc.index);
    let (file, sealed) = (summary.file.clone(), summary.sealed);
    loop {
        if sc.records > 0 {
            summary.first_timestamp_ms.get_or_insert(sc.first_timestamp);
            summary.last_timestamp_ms = Some(sc.last_timestamp);
            summary.records += sc.records;
        }
        if sc.records > 0 || summary.records == 0 {
            summary.next_offset = sc.next_offset;
        }
        let end = sc.end;
        summary.data_bytes = end as u64;
        let next = sc.next_offset;
        if !sealed {
            let Some(p) = classify_tail(&file, bytes, end, &sc.stop, next, max) else {
                break;
            };
            let mid_log = p.kind == ProblemKind::Corruption;
            problems.push(p);
            // Mid-log damage: go on after it to find what else is wrong.
            let resume = if mid_log {
                resume_point(bytes, end, &sc.stop, next, max)
            } else {
                None
            };
            let Some((pos, offset)) = resume else { break };
            sc = scan_from(bytes, pos, offset, max);
            continue;
        }
        if end == len {
            break;
        }
        if sc.stop == Stop::End && bytes[end..].iter().all(|&b| b == 0) {
            problems.push(Problem::in_segment(
                ProblemKind::InterruptedSeal,
                &file,
                end,
                next,
                format!(
                "the records end at byte {end} and only zeros follow up to the end of the file \
                 ({len} bytes): a seal interrupted before its truncation; opening the log \
                 (verify_on_open, the default) truncates the file to its data"
            ),
            ));
            break;
        }
        let mut reason = sealed_damage(&sc.stop, end, len, next);
        let resume = resume_point(bytes, end, &sc.stop, next, max);
        match resume {
            Some((pos, offset)) => {
                let _ = write!(
                    reason,
                    "; valid records resume at byte {pos} with offset {offset}"
                );
                if offset > next {
                    let _ = write!(reason, ": {} unreadable", offsets(next, offset));
                }
            }
            None => reason.push_str("; no valid record follows in this segment"),
        }
        problems.push(Problem::corruption(&file, end, next, reason));
        let Some((pos, offset)) = resume else { break };
        sc = scan_from(bytes, pos, offset, max);
    }
    implied_index
}

/// Compares a segment's index file with the index its records imply.
fn check_index(
    dir: &Path,
    base: u64,
    bytes: &[u8],
    implied: &[IndexEntry],
    has_index: bool,
    opts: &VerifyOptions,
) -> Option<Problem> {
    let seg = segment_file_name(base);
    let idx = index_file_name(base);
    let problem = |position: u64, offset: u64, message: String| Problem {
        kind: ProblemKind::IndexMismatch,
        file: idx.clone(),
        segment: Some(seg.clone()),
        position: Some(position),
        offset: Some(offset),
        message: format!("{message}; indexes are derived, and opening the log rebuilds it"),
    };
    let first = SEGMENT_HEADER_LEN as u64;
    if !has_index {
        return Some(problem(first, base, "the index file is missing".to_owned()));
    }
    let path = dir.join(&idx);
    let Some(stored) = read_index_file(&StdFs, &path, base) else {
        return Some(problem(first, base, unreadable_index(&path, base)));
    };
    if stored == implied {
        return None;
    }
    let at = |e: &IndexEntry| (u64::from(e.position), base + u64::from(e.rel_offset));
    let first_diff = stored
        .iter()
        .zip(implied)
        .position(|(a, b)| a != b)
        .unwrap_or(stored.len().min(implied.len()));
    if first_diff == stored.len() {
        let (pos, off) = at(&implied[first_diff]);
        return Some(problem(
            pos,
            off,
            format!(
                "the index is short: it has {} entries where the segment's records imply {} \
             (the first missing one is for offset {off} at byte {pos})",
                stored.len(),
                implied.len()
            ),
        ));
    }
    if first_diff == implied.len() {
        let (pos, off) = at(&stored[first_diff]);
        return Some(problem(
            pos,
            off,
            format!(
            "the index has {} entries where the segment's records imply {}: entry {first_diff} \
             claims offset {off} at byte {pos}, beyond the segment's records",
            stored.len(),
            implied.len()
        ),
        ));
    }
    let claim_ok = |e: &IndexEntry| {
        record_at(bytes, e.position as usize, opts.max_record_bytes).is_ok_and(|v| {
            v.offset == base + u64::from(e.rel_offset) && v.timestamp_ms == e.timestamp_ms
        })
    };
    let ordered = stored
        .windows(2)
        .all(|w| w[0].rel_offset < w[1].rel_offset && w[0].position < w[1].position);
    let (pos, off) = at(&implied[first_diff]);
    if ordered && stored.first() == implied.first() && stored.iter().all(claim_ok) {
        return Some(problem(
            pos,
            off,
            format!(
            "the index's entries all point at the right records, but from entry {first_diff} on \
             they are spaced otherwise than index_interval_bytes = {} implies (written with \
             another interval?)",
            opts.index_interval_bytes
        ),
        ));
    }
    let (got, want) = (stored[first_diff], implied[first_diff]);
    Some(problem(
        pos,
        off,
        format!(
            "entry {first_diff} says offset {} is at byte {} with timestamp {}, but the segment's \
         records imply offset {} at byte {} with timestamp {}",
            base + u64::from(got.rel_offset),
            got.position,
            got.timestamp_ms,
            base + u64::from(want.rel_offset),
            want.position,
            want.timestamp_ms
        ),
    ))
}

/// Why `read_index_file` refused an index file.
fn unreadable_index(path: &Path, base: u64) -> String {
    let buf = match fs::read(path) {
        Ok(b) => b,
        Err(e) => return format!("the index file cannot be read: {e}"),
    };
    match decode_index_header(&buf) {
        Err(e) => format!("index header: {e}"),
        Ok(b) if b != base => {
            format!("the index header says base offset {b} but the file name says {base}")
        }
        Ok(_) => {
            let partial = buf.len().saturating_sub(INDEX_HEADER_LEN) % INDEX_ENTRY_LEN;
            format!("the index ends in a partial entry ({partial} trailing bytes)")
        }
    }
}

// ------------------------------------------------------------------------------------------
// dump
// ------------------------------------------------------------------------------------------

/// The segment a [`Dump`] is reading.
#[derive(Debug)]
struct Cursor {
    path: PathBuf,
    bytes: Bytes,
    pos: usize,
    expected: u64,
    sealed: bool,
}

/// An iterator over the records of a log directory, read-only; see [`dump`].
#[derive(Debug)]
pub struct Dump {
    dir: PathBuf,
    bases: Vec<u64>,
    /// Index in `bases` of the segment to open next.
    next_segment: usize,
    /// The segment `from` falls in (read from its index entry, not its start).
    start_segment: usize,
    cur: Option<Cursor>,
    from: u64,
    remaining: Option<u64>,
    max_record: usize,
    done: bool,
    torn_tail: Option<Problem>,
}

/// Reads the records of the log in `dir` with offsets ≥ `from_offset`, at most `limit` of
/// them, in order and without modifying anything. Stops at the end of the valid data: a
/// clean end, or a torn tail of the newest segment (see [`Dump::torn_tail`]); any other
/// damage yields one `Err` ([`Error::Corruption`] naming the segment, byte position and
/// offset) and ends the iteration. Records before `from_offset` in its segment are read
/// (from the nearest index entry that checks out) and skipped.
///
/// # Errors
/// An I/O error listing the directory; later errors come from the iterator.
pub fn dump(dir: &Path, from_offset: u64, limit: Option<u64>) -> Result<Dump> {
    let listing = list(dir)?;
    let bases = listing.segments;
    let start = bases
        .partition_point(|&b| b <= from_offset)
        .saturating_sub(1);
    Ok(Dump {
        dir: dir.to_path_buf(),
        bases,
        next_segment: start,
        start_segment: start,
        cur: None,
        from: from_offset,
        remaining: limit,
        max_record: DEFAULT_MAX_RECORD_BYTES,
        done: false,
        torn_tail: None,
    })
}

impl Dump {
    /// When the iteration ended at a torn tail of the newest segment (invalid bytes with no
    /// valid record after them, which opening the log would cut): where and why.
    #[must_use]
    pub fn torn_tail(&self) -> Option<&Problem> {
        self.torn_tail.as_ref()
    }

    /// Opens segment `k`; `None` for an unfinished (all-zero) newest segment.
    fn open(&self, k: usize) -> Result<Option<Cursor>> {
        let base = self.bases[k];
        let sealed = k + 1 < self.bases.len();
        let path = self.dir.join(segment_file_name(base));
        let bytes = Bytes::load(&path, sealed)?;
        if !sealed && unfinished(bytes.get()) {
            return Ok(None);
        }
        header_for_read(&path, bytes.get(), base)?;
        let (pos, expected) = if k == self.start_segment {
            start_position(&self.dir, bytes.get(), base, self.from, self.max_record)
        } else {
            (SEGMENT_HEADER_LEN, base)
        };
        Ok(Some(Cursor {
            path,
            bytes,
            pos,
            expected,
            sealed,
        }))
    }

    fn advance(&mut self) -> Result<Option<StoredRecord>> {
        if self.remaining == Some(0) {
            return Ok(None);
        }
        loop {
            if self.cur.is_none() {
                let k = self.next_segment;
                if k >= self.bases.len() {
                    return Ok(None);
                }
                self.next_segment += 1;
                match self.open(k)? {
                    Some(c) => self.cur = Some(c),
                    None => return Ok(None),
                }
            }
            let Some(cur) = self.cur.as_mut() else {
                return Ok(None);
            };
            let bytes = cur.bytes.get();
            let (pos, expected) = (cur.pos, cur.expected);
            let stop = match record_at(bytes, pos, self.max_record) {
                Ok(v) if v.offset == expected => {
                    cur.pos += v.len;
                    cur.expected += 1;
                    if v.offset < self.from {
                        continue;
                    }
                    if let Some(n) = self.remaining.as_mut() {
                        *n -= 1;
                    }
                    return Ok(Some(v.to_owned_record()));
                }
                Ok(v) => Stop::WrongOffset { found: v.offset },
                Err(stop) => stop,
            };
            if cur.sealed {
                // The end of the file, or only zeros after the records (an interrupted seal,
                // which opening the log finishes).
                if stop == Stop::End && bytes[pos..].iter().all(|&b| b == 0) {
                    let next_base = self.bases[self.next_segment];
                    if next_base != expected {
                        return Err(corrupt(
                            &cur.path,
                            pos,
                            expected,
                            format!(
                            "the segment's records end at offset {expected} but the next segment \
                             starts at {next_base}"
                        ),
                        ));
                    }
                    self.cur = None;
                    continue;
                }
                return Err(corrupt(
                    &cur.path,
                    pos,
                    expected,
                    sealed_damage(&stop, pos, bytes.len(), expected),
                ));
            }
            let name = cur
                .path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            return match classify_tail(&name, bytes, pos, &stop, expected, self.max_record) {
                None => Ok(None),
                Some(p) if p.kind == ProblemKind::TornTail => {
                    self.torn_tail = Some(p);
                    Ok(None)
                }
                Some(p) => Err(corrupt(&cur.path, pos, expected, p.message)),
            };
        }
    }
}

impl Iterator for Dump {
    type Item = Result<StoredRecord>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        match self.advance() {
            Ok(Some(r)) => Some(Ok(r)),
            Ok(None) => {
                self.done = true;
                None
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}

// ------------------------------------------------------------------------------------------
// stats
// ------------------------------------------------------------------------------------------

/// A summary of a log directory; see [`stats`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogSummary {
    /// The directory.
    pub dir: PathBuf,
    /// Segment files (without an unfinished newest segment).
    pub segments: usize,
    /// The first offset held (the oldest segment's base offset; 0 when empty).
    pub first_offset: u64,
    /// The offset after the last valid record.
    pub next_offset: u64,
    /// Records held: `next_offset − first_offset` (offsets are dense).
    pub records: u64,
    /// Bytes of segment data: sealed segments' lengths plus the newest segment's data.
    pub bytes: u64,
    /// Bytes of all files in the directory (preallocated space, indexes, spare included).
    pub disk_bytes: u64,
    /// Timestamp of the first record.
    pub first_timestamp_ms: Option<u64>,
    /// Timestamp of the last valid record.
    pub last_timestamp_ms: Option<u64>,
    /// Index files present.
    pub index_files: usize,
    /// Whether a spare segment is present.
    pub spare_present: bool,
    /// Whether the directory lock is held by a running process.
    pub in_use: bool,
    /// Whether an unfinished (all-zero) newest segment is present; opening removes it.
    pub unfinished_segment: bool,
    /// What follows the last valid record of the newest segment, when it is not clean: a
    /// torn tail, or damage with valid records after it.
    pub tail: Option<Problem>,
    /// Files that do not belong in a log directory.
    pub unknown_files: Vec<String>,
}

/// Summarizes the log in `dir` quickly, without modifying it: trusts the segment file
/// names and sealed segments' lengths, reads the first record and scans only the newest
/// segment. [`verify`] checks everything.
///
/// # Errors
/// An I/O error, or damage that hides the answer (a bad header of the newest segment, a
/// bad first record).
pub fn stats(dir: &Path) -> Result<LogSummary> {
    let listing = list(dir)?;
    let max = DEFAULT_MAX_RECORD_BYTES;
    let mut disk_bytes = 0;
    for name in listing
        .segments
        .iter()
        .map(|&b| segment_file_name(b))
        .chain(listing.indexes.iter().map(|&b| index_file_name(b)))
        .chain(listing.spares.iter().cloned())
        .chain(listing.temporaries.iter().cloned())
    {
        let path = dir.join(&name);
        disk_bytes += fs::metadata(&path)
            .map_err(|e| Error::io(IoOp::Open, &path, e))?
            .len();
    }
    let mut s = LogSummary {
        dir: dir.to_path_buf(),
        segments: 0,
        first_offset: 0,
        next_offset: 0,
        records: 0,
        bytes: 0,
        disk_bytes,
        first_timestamp_ms: None,
        last_timestamp_ms: None,
        index_files: listing.indexes.len(),
        spare_present: !listing.spares.is_empty(),
        in_use: lock_held(dir),
        unfinished_segment: false,
        tail: None,
        unknown_files: listing.unknown.iter().map(|(n, _)| n.clone()).collect(),
    };
    let mut bases = listing.segments;
    let Some(&last) = bases.last() else {
        return Ok(s);
    };
    let last_path = dir.join(segment_file_name(last));
    let mut newest = Bytes::load(&last_path, false)?;
    if unfinished(newest.get()) {
        s.unfinished_segment = true;
        bases.pop();
        let Some(&prev) = bases.last() else {
            return Ok(s);
        };
        newest = Bytes::load(&dir.join(segment_file_name(prev)), false)?;
    }
    let last = bases[bases.len() - 1];
    let last_path = dir.join(segment_file_name(last));
    let bytes = newest.get();
    header_for_read(&last_path, bytes, last)?;
    let sc = scan(bytes, last, max, u32::MAX);
    s.tail = classify_tail(
        &segment_file_name(last),
        bytes,
        sc.end,
        &sc.stop,
        sc.next_offset,
        max,
    );
    s.segments = bases.len();
    s.first_offset = bases[0];
    s.next_offset = sc.next_offset;
    s.records = sc.next_offset.saturating_sub(s.first_offset);
    s.bytes = sc.end as u64;
    for &b in &bases[..bases.len() - 1] {
        let path = dir.join(segment_file_name(b));
        s.bytes += fs::metadata(&path)
            .map_err(|e| Error::io(IoOp::Open, &path, e))?
            .len();
    }
    if sc.records > 0 {
        s.last_timestamp_ms = Some(sc.last_timestamp);
    }
    if bases.len() == 1 {
        s.first_timestamp_ms = (sc.records > 0).then_some(sc.first_timestamp);
        return Ok(s);
    }
    s.first_timestamp_ms = first_timestamp(dir, bases[0], max)?;
    if s.last_timestamp_ms.is_none() {
        // The newest segment is empty: the last record is the previous segment's.
        s.last_timestamp_ms = last_timestamp(dir, bases[bases.len() - 2], max)?;
    }
    Ok(s)
}

/// The timestamp of the first record of a sealed segment.
fn first_timestamp(dir: &Path, base: u64, max: usize) -> Result<Option<u64>> {
    let path = dir.join(segment_file_name(base));
    let bytes = Bytes::load(&path, true)?;
    let b = bytes.get();
    header_for_read(&path, b, base)?;
    match record_at(b, SEGMENT_HEADER_LEN, max) {
        Ok(v) => Ok(Some(v.timestamp_ms)),
        Err(Stop::End) => Ok(None),
        Err(stop) => Err(corrupt(
            &path,
            SEGMENT_HEADER_LEN,
            base,
            describe_stop(&stop, SEGMENT_HEADER_LEN, b.len(), base),
        )),
    }
}

/// The timestamp of the last record of a sealed segment, scanning from its last index
/// entry that checks out.
fn last_timestamp(dir: &Path, base: u64, max: usize) -> Result<Option<u64>> {
    let path = dir.join(segment_file_name(base));
    let bytes = Bytes::load(&path, true)?;
    let b = bytes.get();
    let (pos, offset) = start_position(dir, b, base, u64::MAX, max);
    let mut tail = scan_from(b, pos, offset, max);
    if tail.records == 0 {
        tail = scan(b, base, max, u32::MAX);
    }
    Ok((tail.records > 0).then_some(tail.last_timestamp))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::format::record::Record;
    use crate::{Durability, Log};

    fn cfg() -> LogConfig {
        LogConfig {
            segment_bytes: 64 << 10,
            max_record_bytes: 16 << 10,
            ..Default::default()
        }
    }

    fn record(i: u64) -> Record {
        Record {
            key: format!("key-{i}").into_bytes(),
            headers: vec![("id".to_owned(), format!("m-{i}").into_bytes())],
            payload: format!("{{\"n\":{i},\"pad\":\"{}\"}}", "x".repeat(300)).into_bytes(),
            due_ms: 0,
        }
    }

    /// A closed log of `n` records over several 64 KiB segments.
    fn build(n: u64) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(dir.path(), cfg()).unwrap();
        let mut i = 0;
        while i < n {
            let batch: Vec<Record> = (i..(i + 25).min(n)).map(record).collect();
            log.append(&batch, Durability::None)
                .unwrap()
                .wait()
                .unwrap();
            i += batch.len() as u64;
        }
        log.close().unwrap();
        dir
    }

    /// Every file's name and bytes.
    fn snapshot(dir: &Path) -> BTreeMap<String, Vec<u8>> {
        fs::read_dir(dir)
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (
                    e.file_name().into_string().unwrap(),
                    fs::read(e.path()).unwrap(),
                )
            })
            .collect()
    }

    /// Runs every tool and checks that nothing in the directory changed.
    fn inspect_all(dir: &Path) -> VerifyReport {
        let before = snapshot(dir);
        let report = verify(dir, None).unwrap();
        let _ = stats(dir);
        if let Ok(d) = dump(dir, 0, None) {
            for _ in d {}
        }
        assert_eq!(snapshot(dir), before, "the tools changed the directory");
        report
    }

    /// (position, offset) of every record of a segment file.
    fn records_of(bytes: &[u8], base: u64) -> Vec<(usize, u64)> {
        let mut out = Vec::new();
        let mut pos = SEGMENT_HEADER_LEN;
        while let Ok(v) = record_at(bytes, pos, 1 << 20) {
            assert_eq!(v.offset, base + out.len() as u64);
            out.push((pos, v.offset));
            pos += v.len;
        }
        out
    }

    fn segment_path(dir: &Path, report: &VerifyReport, i: usize) -> PathBuf {
        dir.join(&report.segments[i].file)
    }

    #[test]
    fn a_clean_log_verifies_clean() {
        let dir = build(600);
        let r = inspect_all(dir.path());
        assert!(r.is_clean(), "{:#?}", r.problems);
        assert!(
            r.segments.len() >= 3,
            "want several segments, got {}",
            r.segments.len()
        );
        assert_eq!(r.records(), 600);
        assert_eq!(r.next_offset(), 600);
        assert_eq!(r.index_files, r.segments.len());
        for w in r.segments.windows(2) {
            assert_eq!(w[0].next_offset, w[1].base_offset);
            assert!(w[0].sealed && w[0].data_bytes == w[0].file_bytes);
        }
        let last = r.segments.last().unwrap();
        assert!(!last.sealed && last.file_bytes == 64 << 10 && last.records > 0);
        assert!(!r.in_use);
    }

    #[test]
    fn a_flipped_byte_in_a_sealed_segment_is_corruption_at_its_record() {
        let dir = build(600);
        let r = verify(dir.path(), None).unwrap();
        let seg = &r.segments[1];
        let path = segment_path(dir.path(), &r, 1);
        let mut bytes = fs::read(&path).unwrap();
        let recs = records_of(&bytes, seg.base_offset);
        let mid = bytes.len() / 2;
        let &(pos, offset) = recs.iter().rev().find(|(p, _)| *p <= mid).unwrap();
        bytes[mid] ^= 0x20;
        fs::write(&path, &bytes).unwrap();

        let r = inspect_all(dir.path());
        let errors: Vec<_> = r
            .problems
            .iter()
            .filter(|p| p.severity() == Severity::Error)
            .collect();
        assert_eq!(errors.len(), 1, "{:#?}", r.problems);
        let p = errors[0];
        assert_eq!(p.kind, ProblemKind::Corruption);
        assert_eq!(p.file, seg.file);
        assert_eq!(p.position, Some(pos as u64));
        assert_eq!(p.offset, Some(offset));
        assert!(p.message.contains("resume"), "{p}");
        assert!(p.to_string().contains(&seg.file));
        // The records after the damaged one were still found and checked.
        assert_eq!(r.segments[1].records, seg.records - 1);
        assert_eq!(r.segments[1].next_offset, seg.next_offset);
        assert_eq!(r.segments[1].errors, 1);

        // dump stops there with an error naming the segment, position and offset.
        let mut d = dump(dir.path(), 0, None).unwrap();
        let good = d.by_ref().take_while(Result::is_ok).count() as u64;
        assert_eq!(good, offset);
        let mut d = dump(dir.path(), offset, None).unwrap();
        match d.next() {
            Some(Err(Error::Corruption {
                segment,
                position,
                offset: o,
                ..
            })) => {
                assert_eq!(segment, path);
                assert_eq!(position, pos as u64);
                assert_eq!(o, offset);
            }
            other => panic!("expected corruption, got {other:?}"),
        }
        assert!(d.next().is_none());
    }

    #[test]
    fn a_truncated_last_segment_is_a_torn_tail() {
        let dir = build(600);
        let r = verify(dir.path(), None).unwrap();
        let last = r.segments.last().unwrap().clone();
        let path = segment_path(dir.path(), &r, r.segments.len() - 1);
        let bytes = fs::read(&path).unwrap();
        let recs = records_of(&bytes, last.base_offset);
        let &(pos, offset) = recs.last().unwrap();
        let f = fs::OpenOptions::new().write(true).open(&path).unwrap();
        f.set_len(pos as u64 + 30).unwrap();
        drop(f);

        let r = inspect_all(dir.path());
        assert_eq!(r.errors(), 0, "{:#?}", r.problems);
        let torn: Vec<_> = r
            .problems
            .iter()
            .filter(|p| p.kind == ProblemKind::TornTail)
            .collect();
        assert_eq!(torn.len(), 1, "{:#?}", r.problems);
        assert_eq!(torn[0].severity(), Severity::Warning);
        assert_eq!(torn[0].file, last.file);
        assert_eq!(torn[0].position, Some(pos as u64));
        assert_eq!(torn[0].offset, Some(offset));
        assert!(torn[0].message.contains("TolerateTailCorruption"));
        assert_eq!(r.next_offset(), offset);

        // dump ends cleanly before it and says so; stats sees it too.
        let mut d = dump(dir.path(), 0, None).unwrap();
        assert_eq!(d.by_ref().map(Result::unwrap).count() as u64, offset);
        assert_eq!(d.torn_tail().map(|p| p.position), Some(Some(pos as u64)));
        let s = stats(dir.path()).unwrap();
        assert_eq!(s.next_offset, offset);
        assert_eq!(s.tail.map(|p| p.kind), Some(ProblemKind::TornTail));
    }

    #[test]
    fn damage_inside_the_last_segment_is_corruption() {
        let dir = build(600);
        let r = verify(dir.path(), None).unwrap();
        let last = r.segments.last().unwrap().clone();
        let path = segment_path(dir.path(), &r, r.segments.len() - 1);
        let mut bytes = fs::read(&path).unwrap();
        let recs = records_of(&bytes, last.base_offset);
        assert!(recs.len() >= 3);
        let (pos, offset) = recs[1];
        bytes[pos + 50] ^= 1;
        fs::write(&path, &bytes).unwrap();
        let r = inspect_all(dir.path());
        assert_eq!(r.errors(), 1, "{:#?}", r.problems);
        assert_eq!(r.problems[0].position, Some(pos as u64));
        assert_eq!(r.problems[0].offset, Some(offset));
        assert_eq!(r.segments.last().unwrap().next_offset, last.next_offset);
    }

    #[test]
    fn a_missing_segment_breaks_the_chain() {
        let dir = build(600);
        let report = verify(dir.path(), None).unwrap();
        assert!(report.segments.len() >= 3);
        let (first, gone, third) = (
            &report.segments[0],
            &report.segments[1],
            &report.segments[2],
        );
        fs::remove_file(dir.path().join(&gone.file)).unwrap();
        fs::remove_file(dir.path().join(gone.file.replace(".log", ".idx"))).unwrap();
        let r2 = inspect_all(dir.path());
        assert_eq!(r2.errors(), 1, "{:#?}", r2.problems);
        let p = &r2.problems[0];
        assert_eq!(
            (p.kind, p.file.as_str()),
            (ProblemKind::Corruption, first.file.as_str())
        );
        assert_eq!(
            (p.position, p.offset),
            (Some(first.file_bytes), Some(first.next_offset))
        );
        let missing = format!(
            "offsets {} to {} are missing",
            gone.base_offset,
            third.base_offset - 1
        );
        assert!(p.message.contains(&missing), "{p}");
        let mut d = dump(dir.path(), 0, None).unwrap();
        assert_eq!(
            d.by_ref().take_while(Result::is_ok).count() as u64,
            first.next_offset
        );
    }

    #[test]
    fn an_interrupted_seal_is_a_warning() {
        let dir = build(600);
        let r = verify(dir.path(), None).unwrap();
        let seg = r.segments[0].clone();
        let f = fs::OpenOptions::new()
            .write(true)
            .open(dir.path().join(&seg.file))
            .unwrap();
        f.set_len(seg.file_bytes + 5000).unwrap();
        drop(f);
        let r2 = inspect_all(dir.path());
        assert_eq!(r2.errors(), 0, "{:#?}", r2.problems);
        assert_eq!(r2.problems.len(), 1, "{:#?}", r2.problems);
        let p = &r2.problems[0];
        assert_eq!(
            (p.kind, p.position, p.offset),
            (
                ProblemKind::InterruptedSeal,
                Some(seg.file_bytes),
                Some(seg.next_offset)
            )
        );
        assert_eq!(r2.records(), 600);
        assert_eq!(
            dump(dir.path(), 0, None)
                .unwrap()
                .map(Result::unwrap)
                .count(),
            600
        );
        // Opening the log finishes the seal.
        Log::open(dir.path(), cfg()).unwrap().close().unwrap();
        assert!(verify(dir.path(), None).unwrap().is_clean());
    }

    #[test]
    fn a_damaged_header_is_corruption_at_byte_0() {
        let dir = build(600);
        let r = verify(dir.path(), None).unwrap();
        let path = segment_path(dir.path(), &r, 0);
        let mut bytes = fs::read(&path).unwrap();
        bytes[40] ^= 1; // reserved, covered by the header CRC
        fs::write(&path, &bytes).unwrap();
        let r2 = inspect_all(dir.path());
        assert_eq!(r2.errors(), 1, "{:#?}", r2.problems);
        let p = &r2.problems[0];
        assert_eq!(
            (p.kind, p.position, p.offset),
            (ProblemKind::Corruption, Some(0), Some(0))
        );
        assert!(p.message.contains("header checksum mismatch"), "{p}");
        // The records were checked all the same.
        assert_eq!(r2.records(), 600);
        assert!(matches!(
            dump(dir.path(), 0, None).unwrap().next(),
            Some(Err(Error::Corruption { position: 0, .. }))
        ));
    }

    #[test]
    fn a_missing_or_stale_index_is_a_warning() {
        let dir = build(600);
        let r = verify(dir.path(), None).unwrap();
        let seg = r.segments[0].file.clone();
        let idx = seg.replace(".log", ".idx");
        fs::remove_file(dir.path().join(&idx)).unwrap();
        // Shorten another index by one entry.
        let idx1 = r.segments[1].file.replace(".log", ".idx");
        let mut b = fs::read(dir.path().join(&idx1)).unwrap();
        b.truncate(b.len() - INDEX_ENTRY_LEN);
        fs::write(dir.path().join(&idx1), &b).unwrap();

        let r = inspect_all(dir.path());
        assert_eq!(r.errors(), 0, "{:#?}", r.problems);
        assert_eq!(r.warnings(), 2, "{:#?}", r.problems);
        let p = &r.problems[0];
        assert_eq!(
            (p.kind, p.file.as_str(), p.segment.as_deref()),
            (ProblemKind::IndexMismatch, idx.as_str(), Some(seg.as_str()))
        );
        assert!(p.message.contains("missing"));
        assert!(r.problems[1].message.contains("short"), "{}", r.problems[1]);
    }

    #[test]
    fn unknown_files_and_leftovers_are_flagged_and_left_alone() {
        let dir = build(100);
        fs::write(dir.path().join("notes.txt"), b"hi").unwrap();
        fs::write(dir.path().join("00000000000000000000.idx.tmp"), b"x").unwrap();
        fs::write(dir.path().join(index_file_name(12345)), b"x").unwrap();
        let r = inspect_all(dir.path());
        let kinds: Vec<_> = r
            .problems
            .iter()
            .map(|p| (p.kind, p.file.as_str()))
            .collect();
        assert!(
            kinds.contains(&(ProblemKind::UnknownFile, "notes.txt")),
            "{kinds:?}"
        );
        assert!(kinds.contains(&(ProblemKind::Leftover, "00000000000000000000.idx.tmp")));
        assert!(kinds.contains(&(ProblemKind::Leftover, "00000000000000012345.idx")));
        assert_eq!(r.errors(), 1);
    }

    #[test]
    fn the_tools_create_no_lock_file() {
        let dir = build(100);
        fs::remove_file(dir.path().join(LOCK_FILE)).unwrap();
        let r = inspect_all(dir.path());
        assert!(r.is_clean(), "{:#?}", r.problems);
        assert!(!dir.path().join(LOCK_FILE).exists());
    }

    #[test]
    fn an_open_log_is_reported_in_use() {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(dir.path(), cfg()).unwrap();
        log.append_one(record(0), Durability::Sync).unwrap();
        assert!(verify(dir.path(), None).unwrap().in_use);
        assert!(stats(dir.path()).unwrap().in_use);
        log.close().unwrap();
        assert!(!verify(dir.path(), None).unwrap().in_use);
    }

    #[test]
    fn dump_reads_from_an_offset_with_a_limit() {
        let dir = build(600);
        let all: Vec<StoredRecord> = dump(dir.path(), 0, None)
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(all.len(), 600);
        for (i, r) in all.iter().enumerate() {
            let want = record(i as u64);
            assert_eq!(
                (r.offset, &r.key, &r.payload, &r.headers),
                (i as u64, &want.key, &want.payload, &want.headers)
            );
        }
        let some: Vec<u64> = dump(dir.path(), 333, Some(50))
            .unwrap()
            .map(|r| r.unwrap().offset)
            .collect();
        assert_eq!(some, (333..383).collect::<Vec<_>>());
        assert_eq!(dump(dir.path(), 599, None).unwrap().count(), 1);
        assert_eq!(dump(dir.path(), 600, None).unwrap().count(), 0);
        assert_eq!(dump(dir.path(), 10, Some(0)).unwrap().count(), 0);
        let empty = tempfile::tempdir().unwrap();
        assert_eq!(dump(empty.path(), 0, None).unwrap().count(), 0);
    }

    #[test]
    fn stats_summarizes() {
        let dir = build(600);
        let r = verify(dir.path(), None).unwrap();
        let s = stats(dir.path()).unwrap();
        assert_eq!(
            (s.segments, s.first_offset, s.next_offset, s.records),
            (r.segments.len(), 0, 600, 600)
        );
        assert_eq!(s.bytes, r.data_bytes());
        assert_eq!(s.first_timestamp_ms, r.segments[0].first_timestamp_ms);
        assert_eq!(
            s.last_timestamp_ms,
            r.segments.last().unwrap().last_timestamp_ms
        );
        assert_eq!(s.index_files, r.segments.len());
        assert!(s.tail.is_none() && s.unknown_files.is_empty() && !s.unfinished_segment);
        assert!(s.disk_bytes >= s.bytes);
        let empty = tempfile::tempdir().unwrap();
        let s = stats(empty.path()).unwrap();
        assert_eq!((s.segments, s.records), (0, 0));
    }

    #[test]
    fn a_missing_directory_is_an_io_error() {
        let dir = tempfile::tempdir().unwrap();
        let gone = dir.path().join("nope");
        assert!(matches!(
            verify(&gone, None),
            Err(Error::Io {
                op: IoOp::ListDir,
                ..
            })
        ));
        assert!(matches!(stats(&gone), Err(Error::Io { .. })));
        assert!(dump(&gone, 0, None).is_err());
        assert!(!gone.exists());
    }
}
