//! A fault-injecting file system: fails the Nth operation of a kind, or models a disk
//! that fills up (writes that grow a file consume free space; a write that needs more than
//! is left writes what fits and fails with ENOSPC, as a real full disk does; truncating and
//! removing files give the space back).

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};

use super::{LockGuard, OpenMode, VFile, Vfs};
use crate::mmap::Mapped;

/// Which operations a [`FaultPlan`] counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultOp {
    /// `write_all_at`.
    Write,
    /// `sync_data` / `sync_all` of a file.
    Sync,
    /// `sync_dir`.
    SyncDir,
    /// `set_len`.
    SetLen,
    /// `open` (any mode) and `rename`.
    Open,
    /// Any of the above.
    Any,
    /// `read_at` (not part of [`FaultOp::Any`]: a plan for the write path leaves reads
    /// alone). Reads of a mapped file do not go through `read_at`: over [`crate::io::StdFs`]
    /// only unmapped reads fail; over [`crate::io::SimFs`] (never mapped) every read does.
    Read,
}

/// What the failing operation does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    /// Fails with EIO.
    Eio,
    /// Fails with ENOSPC.
    Enospc,
    /// For writes: writes the first half of the buffer, then fails with EIO.
    /// For other operations: behaves like [`FaultKind::Eio`].
    ShortWrite,
    /// Waits until the plan is disarmed (or replaced), then goes through: a disk that stops
    /// answering for a while.
    Stall,
}

/// Fail the `nth` (1-based) operation matching `op`, and — when `sticky` — every matching
/// operation after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FaultPlan {
    /// Which operations count.
    pub op: FaultOp,
    /// The first one to fail, counting from 1 after the plan is armed.
    pub nth: u64,
    /// The failure.
    pub kind: FaultKind,
    /// Keep failing after the first.
    pub sticky: bool,
}

/// The plan, and the condition stalled operations wait on.
#[derive(Debug, Default)]
struct Gate {
    state: Mutex<State>,
    resumed: Condvar,
}

#[derive(Debug, Default)]
struct State {
    plan: Option<FaultPlan>,
    seen: u64,
    injected: u64,
    /// Plans armed so far (a stalled operation ends when its plan is replaced).
    armed: u64,
    /// Bytes files may still grow by (`None`: unlimited).
    free: Option<u64>,
}

/// Wraps a [`Vfs`] and injects failures according to the armed [`FaultPlan`].
#[derive(Debug, Clone)]
pub struct FaultFs {
    inner: Arc<dyn Vfs>,
    state: Arc<Gate>,
}

fn lock(gate: &Gate) -> MutexGuard<'_, State> {
    gate.state.lock().unwrap_or_else(PoisonError::into_inner)
}

impl FaultFs {
    /// Wraps `inner` with no plan armed.
    #[must_use]
    pub fn new(inner: Arc<dyn Vfs>) -> Self {
        Self {
            inner,
            state: Arc::new(Gate::default()),
        }
    }

    /// Arms a plan (replacing any previous one) and resets its counter.
    pub fn arm(&self, plan: FaultPlan) {
        let mut s = lock(&self.state);
        s.plan = Some(plan);
        s.seen = 0;
        s.armed += 1;
        self.state.resumed.notify_all();
    }

    /// Disarms: nothing fails any more.
    pub fn disarm(&self) {
        lock(&self.state).plan = None;
        self.state.resumed.notify_all();
    }

    /// Models a disk with `free` bytes left (`None`: no limit): from now on a write past a
    /// file's end consumes space, and what does not fit fails with ENOSPC after writing what
    /// fits; `set_len` down and `remove_file` give space back.
    pub fn set_free_space(&self, free: Option<u64>) {
        lock(&self.state).free = free;
    }

    /// The modelled free space, if a limit is set.
    #[must_use]
    pub fn free_space(&self) -> Option<u64> {
        lock(&self.state).free
    }

    /// Gives `bytes` back to the modelled free space (a no-op without a limit).
    fn release(&self, bytes: u64) {
        if let Some(f) = lock(&self.state).free.as_mut() {
            *f = f.saturating_add(bytes);
        }
    }

    /// How many failures were injected so far.
    #[must_use]
    pub fn injected(&self) -> u64 {
        lock(&self.state).injected
    }

    /// The failure the next `op` gets, if any; a [`FaultKind::Stall`] waits here until the
    /// plan it came from is disarmed or replaced, and then the operation goes through.
    fn check(gate: &Gate, op: FaultOp) -> Option<FaultKind> {
        let mut s = lock(gate);
        let plan = s.plan?;
        let matches = plan.op == op || (plan.op == FaultOp::Any && op != FaultOp::Read);
        if !matches {
            return None;
        }
        s.seen += 1;
        let fire = if plan.sticky {
            s.seen >= plan.nth
        } else {
            s.seen == plan.nth
        };
        if !fire {
            return None;
        }
        s.injected += 1;
        if plan.kind != FaultKind::Stall {
            return Some(plan.kind);
        }
        let armed = s.armed;
        while s.plan == Some(plan) && s.armed == armed {
            s = gate.resumed.wait(s).unwrap_or_else(PoisonError::into_inner);
        }
        None
    }
}

fn error_for(kind: FaultKind) -> io::Error {
    match kind {
        FaultKind::Eio | FaultKind::ShortWrite | FaultKind::Stall => {
            io::Error::from_raw_os_error(5)
        }
        FaultKind::Enospc => io::Error::from_raw_os_error(28),
    }
}

impl Vfs for FaultFs {
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        self.inner.create_dir_all(path)
    }

    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn VFile>> {
        if let Some(kind) = Self::check(&self.state, FaultOp::Open) {
            return Err(error_for(kind));
        }
        let inner = self.inner.open(path, mode)?;
        Ok(Arc::new(FaultFile {
            inner,
            fs: self.clone(),
            path: path.to_path_buf(),
        }))
    }

    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        self.inner.list_dir(path)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let len = self
            .inner
            .open(path, OpenMode::Read)
            .and_then(|f| f.len())
            .unwrap_or(0);
        self.inner.remove_file(path)?;
        self.release(len);
        Ok(())
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        if let Some(kind) = Self::check(&self.state, FaultOp::Open) {
            return Err(error_for(kind));
        }
        self.inner.rename(from, to)
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        if let Some(kind) = Self::check(&self.state, FaultOp::SyncDir) {
            return Err(error_for(kind));
        }
        self.inner.sync_dir(path)
    }

    fn exists(&self, path: &Path) -> bool {
        self.inner.exists(path)
    }

    fn lock(&self, path: &Path) -> io::Result<Box<dyn LockGuard>> {
        self.inner.lock(path)
    }

    fn available_space(&self, path: &Path) -> Option<u64> {
        self.inner.available_space(path)
    }
}

#[derive(Debug)]
struct FaultFile {
    inner: Arc<dyn VFile>,
    fs: FaultFs,
    path: PathBuf,
}

impl FaultFile {
    /// Under a free-space limit: how many of `len` bytes at `offset` fit (all when no limit),
    /// the space they take consumed.
    fn reserve(&self, offset: u64, len: usize) -> io::Result<usize> {
        let mut s = lock(&self.fs.state);
        let Some(free) = s.free else {
            return Ok(len);
        };
        let cur = self.inner.len()?;
        let need = (offset + len as u64).saturating_sub(cur);
        if need <= free {
            s.free = Some(free - need);
            return Ok(len);
        }
        // The file can grow to `cur + free`: what lies below that is written.
        s.free = Some(0);
        let limit = (cur + free).saturating_sub(offset);
        Ok(usize::try_from(limit.min(len as u64)).unwrap_or(len))
    }
}

impl VFile for FaultFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        match FaultFs::check(&self.fs.state, FaultOp::Read) {
            None => self.inner.read_at(buf, offset),
            Some(kind) => Err(error_for(kind)),
        }
    }

    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        match FaultFs::check(&self.fs.state, FaultOp::Write) {
            None => {
                let fits = self.reserve(offset, buf.len())?;
                if fits < buf.len() {
                    if fits > 0 {
                        self.inner.write_all_at(&buf[..fits], offset)?;
                    }
                    return Err(error_for(FaultKind::Enospc));
                }
                self.inner.write_all_at(buf, offset)
            }
            Some(FaultKind::ShortWrite) => {
                let half = buf.len() / 2;
                self.inner.write_all_at(&buf[..half], offset)?;
                Err(error_for(FaultKind::ShortWrite))
            }
            Some(kind) => Err(error_for(kind)),
        }
    }

    fn sync_data(&self) -> io::Result<()> {
        if let Some(kind) = FaultFs::check(&self.fs.state, FaultOp::Sync) {
            return Err(error_for(kind));
        }
        self.inner.sync_data()
    }

    fn sync_all(&self) -> io::Result<()> {
        if let Some(kind) = FaultFs::check(&self.fs.state, FaultOp::Sync) {
            return Err(error_for(kind));
        }
        self.inner.sync_all()
    }

    fn len(&self) -> io::Result<u64> {
        self.inner.len()
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        if let Some(kind) = FaultFs::check(&self.fs.state, FaultOp::SetLen) {
            return Err(error_for(kind));
        }
        let cur = self.inner.len()?;
        self.inner.set_len(len)?;
        // Growing with set_len makes a sparse file (no space taken); shrinking frees space.
        self.fs.release(cur.saturating_sub(len));
        Ok(())
    }

    fn map(&self) -> io::Result<Option<Mapped>> {
        self.inner.map()
    }

    fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::SimFs;

    #[test]
    fn a_stalled_sync_waits_for_the_disarm_then_goes_through() {
        let fs = FaultFs::new(Arc::new(SimFs::new()));
        let f = fs.open(Path::new("/a"), OpenMode::CreateNew).expect("open");
        fs.arm(FaultPlan {
            op: FaultOp::Sync,
            nth: 1,
            kind: FaultKind::Stall,
            sticky: false,
        });
        let (tx, rx) = std::sync::mpsc::channel();
        let t = std::thread::spawn(move || tx.send(f.sync_data().is_ok()));
        assert!(
            rx.recv_timeout(std::time::Duration::from_millis(200))
                .is_err(),
            "the sync is held"
        );
        fs.disarm();
        assert_eq!(
            rx.recv_timeout(std::time::Duration::from_secs(10)),
            Ok(true),
            "released, and it succeeded"
        );
        t.join().expect("thread").expect("sent");
        assert_eq!(fs.injected(), 1);
    }

    #[test]
    fn fails_the_nth_write_only() {
        let fs = FaultFs::new(Arc::new(SimFs::new()));
        let f = fs.open(Path::new("/a"), OpenMode::CreateNew).expect("open");
        fs.arm(FaultPlan {
            op: FaultOp::Write,
            nth: 2,
            kind: FaultKind::Enospc,
            sticky: false,
        });
        assert!(f.write_all_at(b"one", 0).is_ok());
        let err = f.write_all_at(b"two", 3).expect_err("second write fails");
        assert_eq!(err.raw_os_error(), Some(28));
        assert!(f.write_all_at(b"three", 3).is_ok());
        assert!(
            f.sync_data().is_ok(),
            "syncs are not counted by a Write plan"
        );
        assert_eq!(fs.injected(), 1);
    }

    #[test]
    fn a_full_disk_writes_what_fits_and_gives_space_back() {
        let fs = FaultFs::new(Arc::new(SimFs::new()));
        let f = fs.open(Path::new("/a"), OpenMode::CreateNew).expect("open");
        f.write_all_at(&[1; 100], 0).expect("no limit yet");
        fs.set_free_space(Some(50));
        f.write_all_at(&[2; 100], 0)
            .expect("overwrites take no space");
        f.write_all_at(&[3; 30], 100).expect("30 of 50");
        assert_eq!(fs.free_space(), Some(20));
        let err = f.write_all_at(&[4; 40], 130).expect_err("only 20 left");
        assert_eq!(err.raw_os_error(), Some(28));
        assert_eq!(f.len().expect("len"), 150, "what fits was written");
        assert_eq!(fs.free_space(), Some(0));
        f.set_len(120).expect("shrink");
        assert_eq!(fs.free_space(), Some(30));
        fs.remove_file(Path::new("/a")).expect("remove");
        assert_eq!(fs.free_space(), Some(150));
    }

    #[test]
    fn short_write_writes_half() {
        let fs = FaultFs::new(Arc::new(SimFs::new()));
        let f = fs.open(Path::new("/a"), OpenMode::CreateNew).expect("open");
        fs.arm(FaultPlan {
            op: FaultOp::Write,
            nth: 1,
            kind: FaultKind::ShortWrite,
            sticky: true,
        });
        assert!(f.write_all_at(b"abcdef", 0).is_err());
        assert_eq!(f.len().expect("len"), 3);
        assert!(
            f.write_all_at(b"x", 0).is_err(),
            "sticky plan keeps failing"
        );
    }

    #[test]
    fn sync_eio() {
        let fs = FaultFs::new(Arc::new(SimFs::new()));
        let f = fs.open(Path::new("/a"), OpenMode::CreateNew).expect("open");
        fs.arm(FaultPlan {
            op: FaultOp::Sync,
            nth: 1,
            kind: FaultKind::Eio,
            sticky: false,
        });
        assert_eq!(f.sync_data().expect_err("eio").raw_os_error(), Some(5));
    }
}
