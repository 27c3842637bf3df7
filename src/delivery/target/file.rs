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
//!
//! Where: `config.path` is relative to the server's `[delivery] file_root` (without it,
//! `file_system` targets are refused). Opening walks the path one directory at a time from
//! the canonical root, creating missing directories and refusing any symbolic link, and
//! opens the file with `O_NOFOLLOW`: no path, link or race leads outside the root.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use serde_json::value::RawValue;

use super::{DeliverFuture, Delivery, ErrorClass, Target, TargetError};
use crate::model::target::{check_file_path, FileTargetConfig};
use crate::model::validate::FieldError;

/// A `file_system` target.
#[derive(Debug)]
pub struct FileTarget {
    root: PathBuf,
    rel: PathBuf,
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
    /// A target appending to `cfg.path` under `root` (opened on first delivery).
    ///
    /// # Errors
    /// No `root` is configured, or the path is not a plain relative path (`config.path`).
    pub fn new(cfg: &FileTargetConfig, root: Option<&Path>) -> Result<Self, Vec<FieldError>> {
        let Some(root) = root else {
            return Err(vec![FieldError::new(
                "config.path",
                "file_system targets are disabled on this server: the operator sets \
                 [delivery] file_root to enable them",
            )]);
        };
        check_file_path(&cfg.path).map_err(|m| vec![FieldError::new("config.path", m)])?;
        Ok(Self {
            root: root.to_path_buf(),
            rel: PathBuf::from(&cfg.path),
            file: Arc::new(Mutex::new(None)),
        })
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
        let (root, rel) = (self.root.clone(), self.rel.clone());
        let file = Arc::clone(&self.file);
        tokio::task::spawn_blocking(move || append_blocking(&root, &rel, &file, &line))
            .await
            .map_err(|e| TargetError::retryable(ErrorClass::Io, format!("append task: {e}")))?
    }
}

/// Opens `rel` under `root` for appending: directories created one at a time, no symbolic
/// link followed anywhere (a link is a permanent error: an operator's mistake or an attack).
fn open_under(root: &Path, rel: &Path) -> Result<std::fs::File, TargetError> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut at =
        std::fs::canonicalize(root).map_err(|e| io_err("cannot open the file root", root, &e))?;
    let parts: Vec<_> = rel.components().collect();
    let Some((last, dirs)) = parts.split_last() else {
        return Err(TargetError::permanent(ErrorClass::Io, "empty file path"));
    };
    for c in dirs {
        at.push(c);
        match std::fs::symlink_metadata(&at) {
            Ok(m) if m.file_type().is_symlink() => {
                return Err(TargetError::permanent(
                    ErrorClass::Io,
                    format!("{} is a symbolic link: not followed", at.display()),
                ));
            }
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                // An operator can move the file away: retried.
                return Err(TargetError::retryable(
                    ErrorClass::Io,
                    format!("{} is not a directory", at.display()),
                ));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => match std::fs::create_dir(&at) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(io_err("cannot create the directory", &at, &e)),
            },
            Err(e) => return Err(io_err("cannot inspect", &at, &e)),
        }
    }
    at.push(last);
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&at)
        .map_err(|e| {
            if e.raw_os_error() == Some(libc::ELOOP) {
                TargetError::permanent(
                    ErrorClass::Io,
                    format!("{} is a symbolic link: not followed", at.display()),
                )
            } else {
                io_err("cannot open", &at, &e)
            }
        })
}

fn append_blocking(
    root: &Path,
    rel: &Path,
    file: &Mutex<Option<std::fs::File>>,
    line: &[u8],
) -> Result<(), TargetError> {
    let mut slot = file.lock().unwrap_or_else(PoisonError::into_inner);
    if slot.is_none() {
        *slot = Some(open_under(root, rel)?);
    }
    let Some(f) = slot.as_mut() else {
        return Err(TargetError::retryable(ErrorClass::Io, "file not open"));
    };
    if let Err(e) = f.write_all(line).and_then(|()| f.flush()) {
        *slot = None;
        return Err(io_err("cannot append to", &root.join(rel), &e));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_root_no_file_target() {
        let cfg = FileTargetConfig {
            path: "out.jsonl".into(),
        };
        let e = FileTarget::new(&cfg, None).unwrap_err();
        assert!(e[0].message.contains("file_root"), "{}", e[0].message);
    }

    #[test]
    fn paths_leaving_the_root_are_refused() {
        let root = tempfile::tempdir().unwrap();
        for bad in ["/etc/passwd", "../x", "a/../../x", "./x", "a/"] {
            let cfg = FileTargetConfig { path: bad.into() };
            assert!(FileTarget::new(&cfg, Some(root.path())).is_err(), "{bad}");
        }
    }

    #[test]
    fn symbolic_links_are_not_followed() {
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), root.path().join("link")).unwrap();
        std::os::unix::fs::symlink(outside.path().join("f"), root.path().join("flink")).unwrap();
        assert!(open_under(root.path(), Path::new("link/new/evil.sh")).is_err());
        assert!(open_under(root.path(), Path::new("flink")).is_err());
        assert!(!outside.path().join("new").exists());
        assert!(!outside.path().join("f").exists());
        let f = open_under(root.path(), Path::new("a/b/ok.jsonl"));
        assert!(f.is_ok());
        assert!(root.path().join("a/b/ok.jsonl").is_file());
    }
}
