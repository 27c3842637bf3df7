//! The `file_system` target: appends one JSON line per message to `config.path`:
//!
//! ```json
//! {"messageId":"…","namespace":"…","partition":0,"offset":12,"attempt":1,"payload":{…}}
//! ```
//!
//! `payload` is the client's JSON exactly as sent, with line breaks outside strings (the only
//! place a JSON text can hold raw ones) turned into spaces so the line stays one line. The
//! file and its directories are created when missing; the file is opened in append mode and
//! kept open; each line is written whole and flushed. An I/O error is retryable (`io`) and
//! drops the handle, so the next attempt reopens the file.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use serde_json::value::RawValue;

use super::{DeliverFuture, Delivery, ErrorClass, Target, TargetError};
use crate::model::target::FileTargetConfig;

/// A `file_system` target.
#[derive(Debug)]
pub struct FileTarget {
    path: PathBuf,
    file: Arc<Mutex<Option<std::fs::File>>>,
}

#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct Line<'a> {
    message_id: &'a str,
    namespace: &'a str,
    partition: u32,
    offset: u64,
    attempt: u32,
    payload: &'a RawValue,
}

fn io_err(what: &str, path: &std::path::Path, e: &std::io::Error) -> TargetError {
    TargetError::retryable(ErrorClass::Io, format!("{what} {}: {e}", path.display()))
}

impl FileTarget {
    /// A target appending to `cfg.path` (opened on first delivery).
    #[must_use]
    pub fn new(cfg: &FileTargetConfig) -> Self {
        Self {
            path: PathBuf::from(&cfg.path),
            file: Arc::new(Mutex::new(None)),
        }
    }

    /// The line written for `d`, newline included.
    fn line(d: &Delivery<'_>) -> Result<Vec<u8>, TargetError> {
        let text = std::str::from_utf8(d.payload).map_err(|_| {
            TargetError::permanent(ErrorClass::BadPayload, "the payload is not UTF-8")
        })?;
        let one_line: String = text
            .chars()
            .map(|c| if c == '\n' || c == '\r' { ' ' } else { c })
            .collect();
        let raw = RawValue::from_string(one_line).map_err(|e| {
            TargetError::permanent(
                ErrorClass::BadPayload,
                format!("the payload is not JSON: {e}"),
            )
        })?;
        let mut out = serde_json::to_vec(&Line {
            message_id: d.message_id,
            namespace: d.namespace,
            partition: d.partition,
            offset: d.offset,
            attempt: d.attempt,
            payload: &raw,
        })
        .map_err(|e| TargetError::permanent(ErrorClass::BadPayload, e.to_string()))?;
        out.push(b'\n');
        Ok(out)
    }

    /// Appends `line` (blocking I/O, on the runtime's blocking pool).
    async fn append(&self, line: Vec<u8>) -> Result<(), TargetError> {
        let path = self.path.clone();
        let file = Arc::clone(&self.file);
        tokio::task::spawn_blocking(move || append_blocking(&path, &file, &line))
            .await
            .map_err(|e| TargetError::retryable(ErrorClass::Io, format!("append task: {e}")))?
    }
}

fn append_blocking(
    path: &Path,
    file: &Mutex<Option<std::fs::File>>,
    line: &[u8],
) -> Result<(), TargetError> {
    let mut slot = file.lock().unwrap_or_else(PoisonError::into_inner);
    if slot.is_none() {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| io_err("cannot create the directory of", path, &e))?;
        }
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| io_err("cannot open", path, &e))?;
        *slot = Some(f);
    }
    let Some(f) = slot.as_mut() else {
        return Err(TargetError::retryable(ErrorClass::Io, "file not open"));
    };
    if let Err(e) = f.write_all(line).and_then(|()| f.flush()) {
        *slot = None;
        return Err(io_err("cannot append to", path, &e));
    }
    Ok(())
}

impl Target for FileTarget {
    fn deliver<'a>(&'a self, delivery: Delivery<'a>) -> DeliverFuture<'a> {
        Box::pin(async move {
            let line = Self::line(&delivery)?;
            self.append(line).await
        })
    }
}
