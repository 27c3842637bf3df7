//! # wald-storage
//!
//! The storage engine of `wald`: per partition, a directory of checksummed, preallocated
//! segments appended to through group commit, with a sparse offset/time index, explicit
//! recovery, and an I/O seam for fault injection and crash simulation.
//!
//! Synchronous and std-only: no async runtime, no networking. The service drives it through
//! [`Log::append`] (a [`Ticket`] that can be waited on or awaited) and [`Log::read_from`].
//!
//! The on-disk format is specified in `docs/FORMAT.md`; what each acknowledgement promises
//! in `docs/DURABILITY.md`.

#![forbid(unsafe_op_in_unsafe_fn)]
#![deny(unsafe_code)]
#![deny(clippy::all)]
#![deny(missing_docs)]
#![deny(clippy::unwrap_used)]
#![deny(clippy::expect_used)]
#![deny(clippy::panic)]
#![deny(clippy::todo)]
#![deny(clippy::unimplemented)]
#![deny(clippy::dbg_macro)]
#![warn(clippy::pedantic)]
#![allow(clippy::module_name_repetitions)]
#![allow(clippy::cast_possible_truncation)]
#![allow(clippy::missing_panics_doc)]
#![allow(clippy::doc_markdown)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod config;
pub mod error;
pub mod format;
pub mod inspect;
pub mod io;
pub mod log;
#[allow(unsafe_code)]
pub mod mmap;
pub mod recovery;
pub mod segment;

pub use config::{Durability, LogConfig, Preallocate, RecoveryMode, Retention};
pub use error::{Error, IoOp, PoisonCause, Result};
pub use format::record::{Record, StoredRecord};
pub use inspect::{
    dump, stats, verify, verify_with, Dump, LogSummary, Problem, ProblemKind, SegmentSummary,
    Severity, VerifyOptions, VerifyProgress, VerifyReport,
};
pub use log::{
    now_ms, Appended, CommitObserver, Completion, Log, LogCounters, LogReader, LogStats,
    RetentionReport, Ticket,
};
pub use recovery::{RecoveryReport, TailCut};
