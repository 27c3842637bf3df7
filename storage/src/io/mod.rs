//! The I/O seam: the engine touches the disk only through [`Vfs`] and [`VFile`].
//!
//! Three implementations:
//! - [`StdFs`]: the real file system (positioned I/O, `fdatasync`, `flock`, mmap);
//! - [`FaultFs`]: wraps another `Vfs` and fails the Nth operation of a kind with EIO,
//!   ENOSPC or a short write, to attack every failure path;
//! - [`SimFs`]: an in-memory file system that keeps, per file and per directory, the live
//!   image and the image as of the last completed sync; [`SimFs::crash`] returns what a
//!   power loss would leave.

mod fault;
mod sim;
mod std_fs;

use std::fmt::Debug;
use std::io;
use std::path::Path;
use std::sync::Arc;

pub use fault::{FaultFs, FaultKind, FaultOp, FaultPlan};
pub use sim::SimFs;
pub use std_fs::StdFs;

use crate::mmap::Mapped;

/// How to open a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenMode {
    /// Read only; the file must exist.
    Read,
    /// Read and write; the file must exist.
    ReadWrite,
    /// Read and write; the file must not exist yet (it is created).
    CreateNew,
}

/// A file system, as the engine sees it. Every fallible method returns the OS error of
/// the operation (or the simulated one).
#[allow(clippy::missing_errors_doc)]
pub trait Vfs: Send + Sync + Debug + 'static {
    /// Creates a directory and its parents.
    fn create_dir_all(&self, path: &Path) -> io::Result<()>;
    /// Opens a file.
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn VFile>>;
    /// The names (not paths) of the entries of a directory.
    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>>;
    /// Removes a file.
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    /// Renames a file, replacing the target.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Makes the directory's entries (creates, renames, removes) durable.
    fn sync_dir(&self, path: &Path) -> io::Result<()>;
    /// True when the path exists.
    fn exists(&self, path: &Path) -> bool;
    /// Takes an exclusive lock on the file at `path` (created if missing), held until the
    /// returned guard is dropped. Fails at once if another holder has it.
    fn lock(&self, path: &Path) -> io::Result<Box<dyn LockGuard>>;
    /// Bytes available to an unprivileged writer on the file system holding `path`, when known.
    fn available_space(&self, path: &Path) -> Option<u64> {
        let _ = path;
        None
    }
}

/// A held directory lock; released on drop.
pub trait LockGuard: Send + Sync + Debug {}

/// An open file.
#[allow(clippy::len_without_is_empty, clippy::missing_errors_doc)] // a file's length is asked for, never its emptiness
pub trait VFile: Send + Sync + Debug {
    /// Reads up to `buf.len()` bytes at `offset`; returns how many were read (0 at the end).
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize>;
    /// Writes all of `buf` at `offset`.
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;
    /// `fdatasync`: makes the data (and the size, if it changed) durable.
    fn sync_data(&self) -> io::Result<()>;
    /// `fsync`: data and all metadata.
    fn sync_all(&self) -> io::Result<()>;
    /// The file's length.
    fn len(&self) -> io::Result<u64>;
    /// Truncates or extends (with zeros) the file.
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// A read-only memory map of the whole file, where the implementation supports it
    /// (the real file system does); `Ok(None)` otherwise, and readers use `read_at`.
    fn map(&self) -> io::Result<Option<Mapped>> {
        Ok(None)
    }
    /// The path this file was opened at (for error messages).
    fn path(&self) -> &Path;
}

/// Reads exactly `buf.len()` bytes at `offset`, or fails with `UnexpectedEof`.
pub(crate) fn read_exact_at(
    file: &dyn VFile,
    mut buf: &mut [u8],
    mut offset: u64,
) -> io::Result<()> {
    while !buf.is_empty() {
        match file.read_at(buf, offset) {
            Ok(0) => return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "short read")),
            Ok(n) => {
                buf = &mut buf[n..];
                offset += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Reads as many bytes as are there, up to `buf.len()`; returns the count.
pub(crate) fn read_up_to(file: &dyn VFile, buf: &mut [u8], mut offset: u64) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], offset) {
            Ok(0) => break,
            Ok(n) => {
                done += n;
                offset += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}
