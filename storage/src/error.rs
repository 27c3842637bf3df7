//! The one error type of `wald-storage`.
//!
//! Every variant is structured so that callers (the HTTP edge in particular) can map it to
//! an explicit answer: a disk fault is never confused with a caller's mistake.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use crate::format::header::HeaderError;
use crate::format::record::RecordError;

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Which I/O step failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoOp {
    /// Opening or creating a file.
    Open,
    /// Reading.
    Read,
    /// Writing records or headers.
    Write,
    /// `fdatasync` / `fsync` of a file.
    Sync,
    /// `fsync` of a directory.
    SyncDir,
    /// Renaming a file.
    Rename,
    /// Removing a file.
    Remove,
    /// Truncating or extending a file.
    SetLen,
    /// Listing a directory.
    ListDir,
    /// Memory-mapping a sealed segment.
    Map,
    /// Taking the directory lock.
    Lock,
}

impl std::fmt::Display for IoOp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = match self {
            Self::Open => "open",
            Self::Read => "read",
            Self::Write => "write",
            Self::Sync => "fsync",
            Self::SyncDir => "fsync of directory",
            Self::Rename => "rename",
            Self::Remove => "remove",
            Self::SetLen => "set_len",
            Self::ListDir => "list directory",
            Self::Map => "mmap",
            Self::Lock => "lock",
        };
        f.write_str(s)
    }
}

/// Why a log was poisoned: the first fatal I/O failure on its write path.
#[derive(Debug, Clone)]
pub struct PoisonCause {
    /// The step that failed.
    pub op: IoOp,
    /// The file it failed on.
    pub path: PathBuf,
    /// The OS error kind.
    pub kind: io::ErrorKind,
    /// The OS error's text.
    pub message: String,
    /// Raw OS error number, when there was one (ENOSPC = 28, EIO = 5).
    pub raw_os_error: Option<i32>,
}

impl PoisonCause {
    /// True when the cause is the disk being full (ENOSPC / `StorageFull`).
    #[must_use]
    pub fn is_disk_full(&self) -> bool {
        self.kind == io::ErrorKind::StorageFull || self.raw_os_error == Some(28)
    }
}

impl std::fmt::Display for PoisonCause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} of {} failed: {}",
            self.op,
            self.path.display(),
            self.message
        )
    }
}

/// Errors of the storage engine.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An I/O operation failed (outside the write path, or the write path's first failure).
    #[error("{op} of {path} failed: {source}")]
    Io {
        /// Which step.
        op: IoOp,
        /// On which file or directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },

    /// The log suffered a fatal write or fsync failure earlier and refuses all writes.
    #[error(
        "log {dir} is poisoned and refuses writes: {cause}. Records acknowledged before the \
         failure are safe; nothing after it was acknowledged. Fix the disk (free space, check \
         dmesg), then reopen the log (restart the service) to recover"
    )]
    Poisoned {
        /// The log's directory.
        dir: PathBuf,
        /// The failure that poisoned it.
        cause: Arc<PoisonCause>,
    },

    /// A record fails its checksum or is malformed where it must not be.
    #[error(
        "corruption in segment {segment} at byte {position} (expected offset {offset}): {reason}"
    )]
    Corruption {
        /// The segment file.
        segment: PathBuf,
        /// Byte position of the bad record in the file.
        position: u64,
        /// The offset the record should have had.
        offset: u64,
        /// What is wrong.
        reason: String,
    },

    /// A file has a bad header (not a wald file, a newer version, a damaged header).
    #[error("{path}: {reason}")]
    BadHeader {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: HeaderError,
    },

    /// The directory holds something that is not a wald log, or an inconsistent set of segments.
    #[error("{path} is not a valid wald log: {reason}")]
    NotALog {
        /// The offending file or directory.
        path: PathBuf,
        /// Why.
        reason: String,
    },

    /// Another process (or another `Log` in this process) holds the directory.
    #[error("{dir} is locked by another process (lock file {lock}): {source}")]
    Locked {
        /// The log directory.
        dir: PathBuf,
        /// The lock file.
        lock: PathBuf,
        /// The OS answer.
        #[source]
        source: io::Error,
    },

    /// A record is larger than the log accepts.
    #[error("record of {size} bytes exceeds the maximum record size of {max} bytes")]
    RecordTooLarge {
        /// Encoded size of the record.
        size: usize,
        /// The configured maximum (`LogConfig::max_record_bytes`).
        max: usize,
    },

    /// A read asked for an offset outside the log.
    #[error("offset {requested} is out of range: the log holds offsets {first}..{next}")]
    OffsetOutOfRange {
        /// The offset asked for.
        requested: u64,
        /// The first offset still held.
        first: u64,
        /// The next offset to be written.
        next: u64,
    },

    /// A configuration value is invalid.
    #[error("invalid log configuration: {key}: {reason}")]
    InvalidConfig {
        /// The key (field name) that is wrong.
        key: &'static str,
        /// Why.
        reason: String,
    },

    /// The append queue is full (only from the non-blocking `try_append`).
    #[error("append queue is full ({pending_bytes} bytes pending, limit {limit})")]
    QueueFull {
        /// Bytes waiting.
        pending_bytes: usize,
        /// The limit (`LogConfig::max_pending_bytes`).
        limit: usize,
    },

    /// The log was closed.
    #[error("log {dir} is closed")]
    Closed {
        /// The log's directory.
        dir: PathBuf,
    },

    /// A record's header bytes are malformed (an encoding problem on input).
    #[error("record cannot be encoded: {0}")]
    Record(#[from] RecordError),
}

impl Error {
    /// Wraps an I/O error with the step and the path.
    pub(crate) fn io(op: IoOp, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Self::Io {
            op,
            path: path.into(),
            source,
        }
    }

    /// True when this error comes from the disk (a server fault), not from the caller.
    #[must_use]
    pub fn is_storage_fault(&self) -> bool {
        matches!(
            self,
            Self::Io { .. }
                | Self::Poisoned { .. }
                | Self::Corruption { .. }
                | Self::BadHeader { .. }
        )
    }

    /// True when the disk is full (ENOSPC), directly or as the cause of poisoning.
    #[must_use]
    pub fn is_disk_full(&self) -> bool {
        match self {
            Self::Io { source, .. } => {
                source.kind() == io::ErrorKind::StorageFull || source.raw_os_error() == Some(28)
            }
            Self::Poisoned { cause, .. } => cause.is_disk_full(),
            _ => false,
        }
    }
}
