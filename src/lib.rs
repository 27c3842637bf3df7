//! # wald
//!
//! A write-ahead-log service: durable HTTP writes over `wald-storage`'s segmented,
//! group-committed log, with delivery to targets. This crate holds the service and the
//! `wald` command line; the engine is the `wald-storage` crate.

#![deny(unsafe_code)]
#![deny(clippy::all)]
#![deny(clippy::unwrap_used)]
#![deny(clippy::expect_used)]
#![warn(clippy::pedantic)]
#![allow(clippy::module_name_repetitions)]
#![allow(clippy::cast_possible_truncation)]
#![allow(clippy::cast_precision_loss)]
#![allow(clippy::cast_sign_loss)]
#![allow(clippy::doc_markdown)]
#![allow(clippy::missing_errors_doc)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod app;
pub mod bench;
pub mod cli;
pub mod config;
pub mod delivery;
pub mod egress;
pub mod engine;
pub mod http;
pub mod ingest;
pub mod io_loop;
pub mod keys;
pub mod message;
pub mod metrics;
pub mod mirror;
pub mod model;
pub mod redact;
pub mod retention;
pub mod server;
pub mod state;
pub mod supervise;
pub mod txn;
