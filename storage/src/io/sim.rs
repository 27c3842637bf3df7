//! A crash-simulating, in-memory file system.
//!
//! Every file keeps two images: the *live* one (what reads see) and the *durable* one (as of
//! its last completed `sync_data`/`sync_all`). Every directory entry likewise exists live and,
//! after the directory's `sync_dir`, durably. [`SimFs::crash`] returns the file system a power
//! loss would leave: durable entries only, each file holding its durable image — everything
//! written after the last completed sync is gone. [`SimFs::crash_keeping`] models a torn
//! write instead: a prefix of each file's unsynced bytes survives. [`SimFs::cut_power`] is
//! the power loss as the running process meets it: the image is taken and, in the same
//! instant, every later operation on the old file system fails — no sync can complete after
//! the cut, so nothing is acknowledged that the image lacks.
//!
//! Directories themselves are treated as durable once created (the engine creates its
//! directory once, before any data).

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use super::{LockGuard, OpenMode, VFile, Vfs};

#[derive(Debug, Default, Clone)]
struct Inode {
    live: Vec<u8>,
    durable: Vec<u8>,
    /// Byte range written since the last sync (`start..end` of the live image).
    dirty: Option<(usize, usize)>,
}

impl Inode {
    fn mark(&mut self, start: usize, end: usize) {
        self.dirty = Some(match self.dirty {
            None => (start, end),
            Some((s, e)) => (s.min(start), e.max(end)),
        });
    }
}

#[derive(Debug, Default)]
struct State {
    inodes: BTreeMap<u64, Inode>,
    next_inode: u64,
    live: BTreeMap<PathBuf, u64>,
    durable: BTreeMap<PathBuf, u64>,
    dirs: BTreeSet<PathBuf>,
    locks: BTreeSet<PathBuf>,
    syncs: u64,
    /// Set by [`SimFs::cut_power`]: every operation fails from then on.
    powered_off: bool,
}

/// The error of every operation after [`SimFs::cut_power`].
fn power_off() -> io::Error {
    io::Error::other("the power is off (SimFs::cut_power)")
}

/// The state, unless the power is off.
fn powered(state: &Mutex<State>) -> io::Result<MutexGuard<'_, State>> {
    let s = lock(state);
    if s.powered_off {
        return Err(power_off());
    }
    Ok(s)
}

/// What a power loss leaves of `s` (see [`SimFs::crash_keeping`]).
fn after_crash(s: &State, mut keep: impl FnMut(&Path, usize) -> usize) -> State {
    let mut next = State {
        next_inode: s.next_inode,
        dirs: s.dirs.clone(),
        ..State::default()
    };
    for (path, ino) in &s.durable {
        let Some(inode) = s.inodes.get(ino) else {
            continue;
        };
        let mut image = inode.durable.clone();
        if let Some((start, end)) = inode.dirty {
            let end = end.min(inode.live.len());
            let span = end.saturating_sub(start);
            let kept = keep(path, span).min(span);
            if kept > 0 {
                let stop = start + kept;
                if image.len() < stop {
                    image.resize(stop, 0);
                }
                image[start..stop].copy_from_slice(&inode.live[start..stop]);
            }
        }
        next.inodes.insert(
            *ino,
            Inode {
                live: image.clone(),
                durable: image,
                dirty: None,
            },
        );
        next.live.insert(path.clone(), *ino);
        next.durable.insert(path.clone(), *ino);
    }
    next
}

/// The crash-simulating file system. Cloning shares the same state.
#[derive(Debug, Clone)]
pub struct SimFs {
    state: Arc<Mutex<State>>,
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("{}: no such file", path.display()),
    )
}

impl Default for SimFs {
    fn default() -> Self {
        let mut state = State::default();
        state.dirs.insert(PathBuf::from("/"));
        Self {
            state: Arc::new(Mutex::new(state)),
        }
    }
}

impl SimFs {
    /// An empty file system (just the root directory `/`).
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// What a power loss leaves: only synced directory entries, each file with its synced
    /// bytes. Locks are released (the process is gone).
    #[must_use]
    pub fn crash(&self) -> Self {
        self.crash_keeping(|_, _| 0)
    }

    /// Like [`SimFs::crash`], but for each file `keep(path, dirty_len)` says how many bytes
    /// of the range written since its last sync survive, as a prefix of that range (a torn
    /// write): `dirty_len` is the length of the span from the first to the last byte written
    /// since the sync, whether appended or overwritten in place.
    #[must_use]
    pub fn crash_keeping(&self, keep: impl FnMut(&Path, usize) -> usize) -> Self {
        let s = lock(&self.state);
        Self {
            state: Arc::new(Mutex::new(after_crash(&s, keep))),
        }
    }

    /// The power goes off: returns what a power loss leaves (as [`SimFs::crash`]) and, in the
    /// same instant, turns this file system off — every later operation on it or on a file
    /// opened from it fails. A running process keeps its handles but can neither read, write
    /// nor sync again, so every sync it saw complete is in the returned image.
    #[must_use]
    pub fn cut_power(&self) -> Self {
        self.cut_power_keeping(|_, _| 0)
    }

    /// [`SimFs::cut_power`] with a torn write: `keep` as in [`SimFs::crash_keeping`].
    #[must_use]
    pub fn cut_power_keeping(&self, keep: impl FnMut(&Path, usize) -> usize) -> Self {
        let mut s = lock(&self.state);
        s.powered_off = true;
        let mut next = after_crash(&s, keep);
        next.powered_off = false;
        Self {
            state: Arc::new(Mutex::new(next)),
        }
    }

    /// What a *process* crash leaves: the same files with the same live and durable images
    /// (the kernel's page cache survives the process), locks released. An independent copy:
    /// the crashed process's handles keep writing to the old one.
    #[must_use]
    pub fn process_crash(&self) -> Self {
        let s = lock(&self.state);
        let next = State {
            inodes: s.inodes.clone(),
            next_inode: s.next_inode,
            live: s.live.clone(),
            durable: s.durable.clone(),
            dirs: s.dirs.clone(),
            locks: BTreeSet::new(),
            syncs: 0,
            powered_off: s.powered_off,
        };
        Self {
            state: Arc::new(Mutex::new(next)),
        }
    }

    /// The live bytes of a file (for tests).
    #[must_use]
    pub fn read_live(&self, path: &Path) -> Option<Vec<u8>> {
        let s = lock(&self.state);
        let ino = s.live.get(path)?;
        s.inodes.get(ino).map(|i| i.live.clone())
    }

    /// Replaces the live bytes of an existing file (for tests that corrupt data); the
    /// durable image is replaced too.
    ///
    /// # Errors
    /// `NotFound` when no file is at `path`.
    pub fn write_raw(&self, path: &Path, bytes: Vec<u8>) -> io::Result<()> {
        let mut s = lock(&self.state);
        let ino = *s.live.get(path).ok_or_else(|| not_found(path))?;
        let inode = s.inodes.get_mut(&ino).ok_or_else(|| not_found(path))?;
        inode.live.clone_from(&bytes);
        inode.durable = bytes;
        inode.dirty = None;
        Ok(())
    }

    /// How many file and directory syncs completed.
    #[must_use]
    pub fn syncs(&self) -> u64 {
        lock(&self.state).syncs
    }
}

impl Vfs for SimFs {
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        let mut s = powered(&self.state)?;
        for a in path.ancestors() {
            s.dirs.insert(a.to_path_buf());
        }
        Ok(())
    }

    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn VFile>> {
        let mut s = powered(&self.state)?;
        let ino = match (mode, s.live.get(path).copied()) {
            (OpenMode::CreateNew, Some(_)) => {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!("{}: exists", path.display()),
                ))
            }
            (OpenMode::CreateNew, None) => {
                let parent = path.parent().map(Path::to_path_buf).unwrap_or_default();
                if !s.dirs.contains(&parent) {
                    return Err(not_found(&parent));
                }
                let ino = s.next_inode;
                s.next_inode += 1;
                s.inodes.insert(ino, Inode::default());
                s.live.insert(path.to_path_buf(), ino);
                ino
            }
            (_, Some(ino)) => ino,
            (_, None) => return Err(not_found(path)),
        };
        Ok(Arc::new(SimFile {
            state: Arc::clone(&self.state),
            ino,
            path: path.to_path_buf(),
            writable: mode != OpenMode::Read,
        }))
    }

    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        let s = powered(&self.state)?;
        if !s.dirs.contains(path) {
            return Err(not_found(path));
        }
        Ok(s.live
            .keys()
            .filter(|p| p.parent() == Some(path))
            .filter_map(|p| p.file_name().and_then(|n| n.to_str()).map(str::to_owned))
            .collect())
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let mut s = powered(&self.state)?;
        s.live
            .remove(path)
            .map(|_| ())
            .ok_or_else(|| not_found(path))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut s = powered(&self.state)?;
        let ino = s.live.remove(from).ok_or_else(|| not_found(from))?;
        s.live.insert(to.to_path_buf(), ino);
        Ok(())
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        let mut s = powered(&self.state)?;
        let in_dir = |p: &PathBuf| p.parent() == Some(path);
        let live: Vec<(PathBuf, u64)> = s
            .live
            .iter()
            .filter(|(p, _)| in_dir(p))
            .map(|(p, i)| (p.clone(), *i))
            .collect();
        s.durable.retain(|p, _| !in_dir(p));
        s.durable.extend(live);
        // Inodes no longer named anywhere can be dropped.
        let named: BTreeSet<u64> = s.live.values().chain(s.durable.values()).copied().collect();
        s.inodes.retain(|ino, _| named.contains(ino));
        s.syncs += 1;
        Ok(())
    }

    fn exists(&self, path: &Path) -> bool {
        let s = lock(&self.state);
        s.live.contains_key(path) || s.dirs.contains(path)
    }

    fn lock(&self, path: &Path) -> io::Result<Box<dyn LockGuard>> {
        let mut s = powered(&self.state)?;
        if !s.locks.insert(path.to_path_buf()) {
            return Err(io::Error::new(io::ErrorKind::WouldBlock, "lock held"));
        }
        if !s.live.contains_key(path) {
            let ino = s.next_inode;
            s.next_inode += 1;
            s.inodes.insert(ino, Inode::default());
            s.live.insert(path.to_path_buf(), ino);
        }
        Ok(Box::new(SimLock {
            state: Arc::clone(&self.state),
            path: path.to_path_buf(),
        }))
    }
}

#[derive(Debug)]
struct SimLock {
    state: Arc<Mutex<State>>,
    path: PathBuf,
}

impl LockGuard for SimLock {}

impl Drop for SimLock {
    fn drop(&mut self) {
        lock(&self.state).locks.remove(&self.path);
    }
}

#[derive(Debug)]
struct SimFile {
    state: Arc<Mutex<State>>,
    ino: u64,
    path: PathBuf,
    writable: bool,
}

impl SimFile {
    fn with<T>(&self, f: impl FnOnce(&mut Inode) -> io::Result<T>) -> io::Result<T> {
        let mut s = powered(&self.state)?;
        let inode = s
            .inodes
            .get_mut(&self.ino)
            .ok_or_else(|| not_found(&self.path))?;
        f(inode)
    }

    fn check_writable(&self) -> io::Result<()> {
        if self.writable {
            Ok(())
        } else {
            Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                "opened read-only",
            ))
        }
    }
}

impl VFile for SimFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.with(|i| {
            let Ok(start) = usize::try_from(offset) else {
                return Ok(0);
            };
            if start >= i.live.len() {
                return Ok(0);
            }
            let n = buf.len().min(i.live.len() - start);
            buf[..n].copy_from_slice(&i.live[start..start + n]);
            Ok(n)
        })
    }

    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.check_writable()?;
        self.with(|i| {
            let start = usize::try_from(offset)
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "offset too large"))?;
            let end = start + buf.len();
            if i.live.len() < end {
                i.live.resize(end, 0);
            }
            i.live[start..end].copy_from_slice(buf);
            i.mark(start, end);
            Ok(())
        })
    }

    fn sync_data(&self) -> io::Result<()> {
        self.check_writable()?;
        let mut s = powered(&self.state)?;
        s.syncs += 1;
        let inode = s
            .inodes
            .get_mut(&self.ino)
            .ok_or_else(|| not_found(&self.path))?;
        inode.durable.clone_from(&inode.live);
        inode.dirty = None;
        Ok(())
    }

    fn sync_all(&self) -> io::Result<()> {
        self.sync_data()
    }

    fn len(&self) -> io::Result<u64> {
        self.with(|i| Ok(i.live.len() as u64))
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.check_writable()?;
        self.with(|i| {
            let len = usize::try_from(len)
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "length too large"))?;
            let old = i.live.len();
            i.live.resize(len, 0);
            i.mark(old.min(len), old.max(len));
            Ok(())
        })
    }

    fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crash_keeps_only_synced_bytes_and_entries() {
        let fs = SimFs::new();
        fs.create_dir_all(Path::new("/d")).expect("mkdir");
        let a = fs
            .open(Path::new("/d/a"), OpenMode::CreateNew)
            .expect("create");
        a.write_all_at(b"hello", 0).expect("write");
        a.sync_data().expect("sync");
        a.write_all_at(b" world", 5).expect("write");
        // The entry of /d/a was never made durable: it vanishes.
        assert!(!fs.crash().exists(Path::new("/d/a")));
        fs.sync_dir(Path::new("/d")).expect("sync dir");
        let after = fs.crash();
        assert_eq!(
            after.read_live(Path::new("/d/a")).as_deref(),
            Some(&b"hello"[..])
        );
        let torn = fs.crash_keeping(|_, n| n / 2);
        assert_eq!(
            torn.read_live(Path::new("/d/a")).as_deref(),
            Some(&b"hello wo"[..])
        );
    }

    #[test]
    fn after_the_power_cut_nothing_completes_and_the_image_has_every_completed_sync() {
        let fs = SimFs::new();
        fs.create_dir_all(Path::new("/d")).expect("mkdir");
        let a = fs
            .open(Path::new("/d/a"), OpenMode::CreateNew)
            .expect("create");
        fs.sync_dir(Path::new("/d")).expect("sync dir");
        a.write_all_at(b"synced", 0).expect("write");
        a.sync_data().expect("sync");
        a.write_all_at(b" lost", 6).expect("write");
        let after = fs.cut_power();
        assert!(a.sync_data().is_err(), "a sync after the cut completes");
        assert!(a.write_all_at(b"x", 0).is_err());
        assert!(a.read_at(&mut [0; 4], 0).is_err());
        assert!(fs.open(Path::new("/d/a"), OpenMode::Read).is_err());
        assert!(fs.sync_dir(Path::new("/d")).is_err());
        assert_eq!(
            after.read_live(Path::new("/d/a")).as_deref(),
            Some(&b"synced"[..])
        );
        // The image is powered: a new process uses it.
        let b = after
            .open(Path::new("/d/a"), OpenMode::ReadWrite)
            .expect("open");
        b.write_all_at(b"!", 6).expect("write");
        b.sync_data().expect("sync");
    }

    #[test]
    fn rename_and_remove_need_a_dir_sync() {
        let fs = SimFs::new();
        fs.create_dir_all(Path::new("/d")).expect("mkdir");
        let a = fs
            .open(Path::new("/d/tmp"), OpenMode::CreateNew)
            .expect("create");
        a.write_all_at(b"x", 0).expect("write");
        a.sync_data().expect("sync");
        fs.sync_dir(Path::new("/d")).expect("sync dir");
        fs.rename(Path::new("/d/tmp"), Path::new("/d/final"))
            .expect("rename");
        let c = fs.crash();
        assert!(c.exists(Path::new("/d/tmp")) && !c.exists(Path::new("/d/final")));
        fs.sync_dir(Path::new("/d")).expect("sync dir");
        let c = fs.crash();
        assert!(!c.exists(Path::new("/d/tmp")) && c.exists(Path::new("/d/final")));
    }

    #[test]
    fn locks_are_exclusive_until_dropped() {
        let fs = SimFs::new();
        fs.create_dir_all(Path::new("/d")).expect("mkdir");
        let g = fs.lock(Path::new("/d/LOCK")).expect("first lock");
        assert!(fs.lock(Path::new("/d/LOCK")).is_err());
        drop(g);
        assert!(fs.lock(Path::new("/d/LOCK")).is_ok());
    }
}
