//! Read-only memory maps of sealed segments and their indexes — the only `unsafe` code in
//! the workspace.
//!
//! # Invariants that make the mapping sound
//!
//! A memory map is only sound while nobody changes or shrinks the mapped bytes under it
//! (a shrink turns reads past the new end into `SIGBUS`; a write is a data race with our
//! `&[u8]`). `wald-storage` guarantees that for every file it maps:
//!
//! 1. **Only sealed files are mapped.** A segment is mapped only after it was sealed: its
//!    data synced, the file truncated to its final length, and no writer handle kept. The
//!    active segment is never mapped (it is read with positioned reads).
//! 2. **Sealed files are immutable while mapped.** No code path of this crate writes to a
//!    sealed segment or index that is mapped. Recovery may rewrite an *index* — always by
//!    writing a new file and renaming it over the old one, so an existing mapping keeps the
//!    old inode. The one repair that shrinks a sealed segment (finishing a seal interrupted
//!    by a crash, `recovery::open_sealed`) runs while the log is being opened, before any
//!    reader exists, and drops its own map of the file before truncating it.
//! 3. **Other processes are excluded.** A log directory is held under an exclusive lock
//!    file (`LOCK`) for as long as the log is open; a second `wald` cannot open it for
//!    writing. Tools that only read (`wald log dump|verify|stats`) never write.
//! 4. **Deletion is safe.** Retention unlinks sealed files; on Unix an unlinked file stays
//!    intact for as long as a mapping of it exists, and maps are reference-counted
//!    (`Arc<Mapped>`), so readers still holding one keep reading valid bytes.
//!
//! What we do not defend against: a person or program outside `wald` truncating or editing
//! files inside a live log directory. That is outside the contract (docs/DURABILITY.md).

use std::fs::File;
use std::io;

/// A read-only mapping of a whole sealed file.
#[derive(Debug)]
pub struct Mapped {
    map: Option<memmap2::Mmap>,
}

impl Mapped {
    /// Maps `file` read-only. An empty file gives an empty mapping (mmap of length 0 is an
    /// error on Linux, so none is made).
    ///
    /// # Errors
    /// The OS error from `mmap`.
    pub fn map(file: &File) -> io::Result<Self> {
        if file.metadata()?.len() == 0 {
            return Ok(Self { map: None });
        }
        // SAFETY: `file` is a sealed segment or index of a log whose directory we hold
        // locked; by the invariants in this module's documentation the mapped bytes are
        // never modified or truncated while any `Mapped` of them exists.
        let map = unsafe { memmap2::MmapOptions::new().map(file)? };
        // Sequential scans dominate (replay, verify); the hint is advisory.
        let _ = map.advise(memmap2::Advice::Sequential);
        Ok(Self { map: Some(map) })
    }

    /// The mapped bytes.
    #[must_use]
    pub fn bytes(&self) -> &[u8] {
        self.map.as_deref().unwrap_or(&[])
    }
}
