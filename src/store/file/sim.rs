//! A simulated disk for the crash tests, in the spirit of SQLite's `test6.c`: in memory, it keeps
//! apart, for every file, what is *durable* and what was written but not yet synced, and for the
//! directory, which entries are durable and which creations and renames are still pending.
//!
//! - [`AppendFile::append`] is pending until [`AppendFile::sync_data`] of that file.
//! - [`Disk::write_synced`] makes the file's content durable, but the directory entry of a new
//!   name only becomes durable at [`Disk::sync_dir`].
//! - [`Disk::rename`] is a directory operation: durable only after [`Disk::sync_dir`].
//! - [`Disk::truncate`] is durable at once (it syncs the file).
//! - [`Disk::create_dir`] is durable at once (a simplification: the store's directory exists).
//!
//! Every sync (`sync_data`, the sync of `write_synced`, `sync_dir`, `truncate`) is a *sync
//! point*: the disk numbers them from 1. Told to crash at sync point `k`
//! ([`SimDisk::crash_at_sync_point`]), the `k`-th sync returns an error without landing and the
//! disk freezes: every later operation fails and nothing more is written, as if the process had
//! stopped there. Told to record ([`SimDisk::record_sync_points`]), the disk keeps a copy of its
//! state at every sync point, just before the sync lands: the state a crash there would leave,
//! without replaying the workload.
//!
//! Told to fail a sync point without stopping ([`SimDisk::fail_sync_point`]), the disk does what
//! Linux does after a failed `fdatasync`: the call returns an error, the writes it should have
//! made durable stay readable (the page cache keeps them) but are never written (their pages are
//! marked clean), so that a later successful sync makes the file's size durable with zeros (a
//! hole) where they were. [`AppendFile::cut_back`] over them removes them.
//!
//! [`SimDisk::crash`] (or [`DiskState::crash`]) then cuts the power: from a seed, either nothing
//! pending survives, or all of it, or each pending write is kept, dropped or torn, and each
//! pending truncation and directory operation kept or dropped, independently. A torn write keeps
//! a prefix, cut at a 512-byte sector boundary or at any byte, and then the file ends at the cut,
//! or the rest of the cut sector reads as zeros or as garbage, or the rest of the write reads as
//! zeros (its size landed, its data did not); or else its sectors land independently, those
//! that did not reading as zeros. The result is a new disk holding only what survived. The same
//! seed gives the same image.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use super::disk::{AppendFile, Disk};

/// The sector size of the simulated device: torn writes are often cut at its multiples.
pub(crate) const SECTOR: u64 = 512;

/// SplitMix64: a tiny, seedable, deterministic generator (no dependency needed).
#[derive(Debug, Clone)]
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n > 0`).
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        assert!(n > 0, "Rng::below(0)");
        // The bias of a plain modulo is irrelevant at these sizes.
        self.next_u64() % n
    }

    /// True with probability `num / den`.
    pub(crate) fn chance(&mut self, num: u64, den: u64) -> bool {
        self.below(den) < num
    }

    /// One of `items` (non-empty).
    pub(crate) fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

/// Combines two seeds into one (for per-point, per-image seeds).
pub(crate) fn mix(a: u64, b: u64) -> u64 {
    Rng::new(a ^ b.rotate_left(32) ^ 0xD1B5_4A32_D192_ED03).next_u64()
}

type Ino = usize;

/// A write to a file that has not been synced yet.
#[derive(Debug, Clone, PartialEq, Eq)]
enum FileOp {
    Write { at: u64, bytes: Vec<u8> },
    SetLen(u64),
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Inode {
    /// What a crash cannot take away.
    durable: Vec<u8>,
    /// What reads see: `durable` with `pending` applied.
    live: Vec<u8>,
    /// Operations since the last sync of this file, oldest first.
    pending: Vec<FileOp>,
    /// Not reachable by any name, durable or not: writes to it are dropped.
    dead: bool,
    /// Byte ranges whose writes a failed sync lost: readable, never durable (zeros on disk).
    lost: Vec<(u64, u64)>,
}

impl Inode {
    fn sync(&mut self) {
        if !self.pending.is_empty() {
            self.durable = self.landed();
            self.pending.clear();
        }
    }

    /// What a sync of everything would make durable: `live`, with zeros where writes were lost.
    fn landed(&self) -> Vec<u8> {
        let mut content = self.live.clone();
        for &(from, to) in &self.lost {
            let to = (to as usize).min(content.len());
            for byte in content.iter_mut().take(to).skip(from as usize) {
                *byte = 0;
            }
        }
        content
    }

    /// A failed sync: the pending writes stay readable and are never written.
    fn lose_pending(&mut self) {
        for op in std::mem::take(&mut self.pending) {
            if let FileOp::Write { at, bytes } = op {
                self.lost.push((at, at + bytes.len() as u64));
            }
        }
    }

    /// Keeps the lost ranges consistent with a write at `at..to` (which lands: not lost) or a
    /// cut at `len`.
    fn rewritten(&mut self, at: u64, to: u64) {
        let mut kept = Vec::new();
        for &(from, end) in &self.lost {
            if end <= at || from >= to {
                kept.push((from, end));
                continue;
            }
            if from < at {
                kept.push((from, at));
            }
            if end > to {
                kept.push((to, end));
            }
        }
        self.lost = kept;
    }
}

/// A directory operation that has not been synced yet.
#[derive(Debug, Clone, PartialEq, Eq)]
enum DirOp {
    /// A new name for a new file.
    Link { name: PathBuf, ino: Ino },
    /// `from` renamed to `to` (replacing it): atomic, kept or dropped as a whole.
    Rename {
        from: PathBuf,
        to: PathBuf,
        ino: Ino,
    },
}

impl DirOp {
    fn in_dir(&self, dir: &Path) -> bool {
        let (a, b) = match self {
            DirOp::Link { name, .. } => (name, name),
            DirOp::Rename { from, to, .. } => (from, to),
        };
        a.parent() == Some(dir) || b.parent() == Some(dir)
    }

    fn apply(&self, names: &mut BTreeMap<PathBuf, Ino>) {
        match self {
            DirOp::Link { name, ino } => {
                names.insert(name.clone(), *ino);
            }
            DirOp::Rename { from, to, ino } => {
                names.remove(from);
                names.insert(to.clone(), *ino);
            }
        }
    }
}

/// Everything on the simulated disk: durable and pending. Cloning it is what recording a sync
/// point does.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct DiskState {
    inodes: Vec<Inode>,
    dirs: BTreeSet<PathBuf>,
    /// The directory as a crash would leave it (before pending operations).
    durable_names: BTreeMap<PathBuf, Ino>,
    /// The directory as the process sees it.
    live_names: BTreeMap<PathBuf, Ino>,
    /// Directory operations since the last `sync_dir`, oldest first.
    pending_dir: Vec<DirOp>,
    /// Sync points reached so far.
    sync_points: u64,
}

/// What a crash does with the pending operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    /// Nothing pending survives: the state of the last syncs.
    DropAll,
    /// Everything pending survives, whole: as if the sync had landed just before the crash.
    KeepAll,
    /// Each pending operation is kept, dropped or torn, independently.
    Random,
}

impl DiskState {
    /// The sync points reached so far (the number of the last one).
    pub(crate) fn sync_points(&self) -> u64 {
        self.sync_points
    }

    /// Whether anything is written but not synced.
    pub(crate) fn has_pending(&self) -> bool {
        !self.pending_dir.is_empty() || self.inodes.iter().any(|i| !i.dead && !i.pending.is_empty())
    }

    /// The files as the process sees them.
    pub(crate) fn files(&self) -> BTreeMap<PathBuf, Vec<u8>> {
        self.live_names
            .iter()
            .map(|(name, &ino)| (name.clone(), self.inodes[ino].live.clone()))
            .collect()
    }

    /// The power fails now: the durable image that survives, as a new disk. Deterministic in
    /// `seed`.
    pub(crate) fn crash(&self, seed: u64) -> SimDisk {
        let mut rng = Rng::new(seed);
        let fate = match rng.below(8) {
            0 => Fate::DropAll,
            1 => Fate::KeepAll,
            _ => Fate::Random,
        };
        let mut names = self.durable_names.clone();
        for op in &self.pending_dir {
            let keep = match fate {
                Fate::DropAll => false,
                Fate::KeepAll => true,
                Fate::Random => rng.chance(1, 2),
            };
            if keep {
                op.apply(&mut names);
            }
        }
        // Every file reachable after the crash, with what survived of its pending writes.
        let mut renumber: BTreeMap<Ino, Ino> = BTreeMap::new();
        let mut inodes = Vec::new();
        for &ino in names.values() {
            if renumber.contains_key(&ino) {
                continue;
            }
            renumber.insert(ino, inodes.len());
            let content = survive(&self.inodes[ino], fate, &mut rng);
            inodes.push(Inode {
                durable: content.clone(),
                live: content,
                ..Inode::default()
            });
        }
        let names: BTreeMap<PathBuf, Ino> = names
            .into_iter()
            .map(|(name, ino)| (name, renumber[&ino]))
            .collect();
        let state = DiskState {
            inodes,
            dirs: self.dirs.clone(),
            durable_names: names.clone(),
            live_names: names,
            pending_dir: Vec::new(),
            sync_points: 0,
        };
        SimDisk::from_state(state)
    }
}

/// What survives of one file's content and pending operations.
fn survive(inode: &Inode, fate: Fate, rng: &mut Rng) -> Vec<u8> {
    match fate {
        Fate::DropAll => return inode.durable.clone(),
        Fate::KeepAll => return inode.landed(),
        Fate::Random => {}
    }
    let mut content = inode.durable.clone();
    // (Lost writes are not pending any more: they never reach the disk.)
    for op in &inode.pending {
        match op {
            FileOp::SetLen(len) => {
                if rng.chance(1, 2) {
                    content.resize(*len as usize, 0);
                }
            }
            FileOp::Write { at, bytes } => match rng.below(10) {
                0..=3 => write_at(&mut content, *at, bytes),
                4..=6 => {}
                _ => tear(&mut content, *at, bytes, rng),
            },
        }
    }
    content
}

/// Writes `bytes` at `at`, extending the file (with zeros up to `at`) if needed.
fn write_at(content: &mut Vec<u8>, at: u64, bytes: &[u8]) {
    let at = at as usize;
    if content.len() < at + bytes.len() {
        content.resize(at + bytes.len(), 0);
    }
    content[at..at + bytes.len()].copy_from_slice(bytes);
}

/// A write interrupted by the power cut.
fn tear(content: &mut Vec<u8>, at: u64, bytes: &[u8], rng: &mut Rng) {
    let len = bytes.len() as u64;
    if len == 0 {
        return;
    }
    let end = at + len;
    if rng.chance(1, 5) {
        // The write's sectors land independently (a device may reorder them); a sector that
        // did not land reads as zeros (the file's size did land).
        let mut from = at;
        while from < end {
            let to = ((from / SECTOR + 1) * SECTOR).min(end);
            let piece = &bytes[(from - at) as usize..(to - at) as usize];
            if rng.chance(1, 2) {
                write_at(content, from, piece);
            } else {
                write_at(content, from, &vec![0; piece.len()]);
            }
            from = to;
        }
        return;
    }
    // A prefix lands: cut at a sector boundary inside the write, or at any byte.
    let first_boundary = (at / SECTOR + 1) * SECTOR;
    let cut = if first_boundary < end && rng.chance(1, 2) {
        let boundaries = (end - 1 - first_boundary) / SECTOR + 1;
        first_boundary + SECTOR * rng.below(boundaries) - at
    } else {
        rng.below(len)
    };
    write_at(content, at, &bytes[..cut as usize]);
    let cut_at = at + cut;
    let sector_end = ((cut_at / SECTOR + 1) * SECTOR).min(end);
    match rng.below(4) {
        // The file ends at the cut.
        0 => {}
        // The rest of the cut sector reads as zeros.
        1 => write_at(content, cut_at, &vec![0; (sector_end - cut_at) as usize]),
        // The rest of the cut sector is garbage (a sector half written when the power failed).
        2 => {
            let garbage: Vec<u8> = (cut_at..sector_end).map(|_| rng.next_u64() as u8).collect();
            write_at(content, cut_at, &garbage);
        }
        // The file's new size landed, its data did not: zeros to the end of the write.
        _ => write_at(content, cut_at, &vec![0; (end - cut_at) as usize]),
    }
}

#[derive(Debug, Default)]
struct Inner {
    state: DiskState,
    /// The sync point at which the simulated process stops.
    crash_at: Option<u64>,
    /// Sync points that fail while the machine runs on (a failed `fdatasync`).
    fail_at: BTreeSet<u64>,
    /// Frozen: a crash happened, nothing lands any more.
    crashed: bool,
    /// The state at every sync point since recording began.
    recorded: Option<Vec<DiskState>>,
}

/// The simulated disk. Clones share it.
#[derive(Debug, Clone, Default)]
pub(crate) struct SimDisk {
    inner: Arc<Mutex<Inner>>,
}

/// A file of a [`SimDisk`] opened for appending.
#[derive(Debug)]
pub(crate) struct SimFile {
    disk: SimDisk,
    ino: Ino,
    path: PathBuf,
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("{} does not exist (simulated disk)", path.display()),
    )
}

impl Inner {
    fn alive(&self) -> io::Result<()> {
        if self.crashed {
            return Err(io::Error::other(
                "the simulated machine crashed: nothing reaches the disk any more",
            ));
        }
        Ok(())
    }

    /// Reaches a sync point, whose effect the caller applies only if this returns `Ok`.
    fn sync_point(&mut self) -> io::Result<()> {
        self.state.sync_points += 1;
        let k = self.state.sync_points;
        if let Some(recorded) = &mut self.recorded {
            recorded.push(self.state.clone());
        }
        if self.crash_at == Some(k) {
            self.crashed = true;
            return Err(io::Error::other(format!(
                "simulated crash at sync point {k}"
            )));
        }
        if self.fail_at.contains(&k) {
            return Err(io::Error::other(format!(
                "simulated failed sync at sync point {k} (the machine runs on)"
            )));
        }
        Ok(())
    }

    /// Forgets the files no name reaches any more (durably or not, nor a pending operation).
    fn collect_garbage(&mut self) {
        let state = &mut self.state;
        let mut reachable = vec![false; state.inodes.len()];
        for &ino in state
            .live_names
            .values()
            .chain(state.durable_names.values())
        {
            reachable[ino] = true;
        }
        for op in &state.pending_dir {
            match op {
                DirOp::Link { ino, .. } | DirOp::Rename { ino, .. } => reachable[*ino] = true,
            }
        }
        for (inode, reachable) in state.inodes.iter_mut().zip(reachable) {
            if !reachable && !inode.dead {
                *inode = Inode {
                    dead: true,
                    ..Inode::default()
                };
            }
        }
    }
}

impl SimDisk {
    /// An empty disk.
    pub(crate) fn new() -> Self {
        Self::default()
    }

    fn from_state(state: DiskState) -> Self {
        Self {
            inner: Arc::new(Mutex::new(Inner {
                state,
                ..Inner::default()
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Every operation leaves the state consistent before it can panic.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The `k`-th sync point (1-based, counted since this disk was made) fails and freezes the
    /// disk: the simulated process stops there.
    pub(crate) fn crash_at_sync_point(&self, k: u64) {
        self.lock().crash_at = Some(k);
    }

    /// The `k`-th sync point fails, but the machine runs on: a failed `fdatasync` loses the
    /// writes it should have made durable (they stay readable). Only a file's `sync_data` is
    /// modelled so; other syncs simply fail.
    pub(crate) fn fail_sync_point(&self, k: u64) {
        self.lock().fail_at.insert(k);
    }

    /// Whether the disk crashed (and froze).
    pub(crate) fn crashed(&self) -> bool {
        self.lock().crashed
    }

    /// From now on, keeps a copy of the state at every sync point, just before the sync lands.
    pub(crate) fn record_sync_points(&self) {
        self.lock().recorded.get_or_insert_with(Vec::new);
    }

    /// The states recorded so far (and stops recording).
    pub(crate) fn take_recorded(&self) -> Vec<DiskState> {
        self.lock().recorded.take().unwrap_or_default()
    }

    /// The sync points reached so far.
    pub(crate) fn sync_points(&self) -> u64 {
        self.lock().state.sync_points
    }

    /// A copy of the whole state (durable and pending).
    pub(crate) fn state(&self) -> DiskState {
        self.lock().state.clone()
    }

    /// The files as the process sees them.
    pub(crate) fn files(&self) -> BTreeMap<PathBuf, Vec<u8>> {
        self.lock().state.files()
    }

    /// Cuts the power now: the durable image that survives, as a new disk (see
    /// [`DiskState::crash`]).
    pub(crate) fn crash(&self, seed: u64) -> SimDisk {
        self.lock().state.crash(seed)
    }

    /// Replaces the content of a file (durably) behind the store's back: to doctor images.
    pub(crate) fn poke(&self, path: &Path, bytes: Vec<u8>) {
        let mut inner = self.lock();
        let ino = inner.state.live_names[path];
        let inode = &mut inner.state.inodes[ino];
        inode.live.clone_from(&bytes);
        inode.durable = bytes;
        inode.pending.clear();
    }
}

impl AppendFile for SimFile {
    fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        let mut inner = self.disk.lock();
        inner.alive()?;
        let inode = &mut inner.state.inodes[self.ino];
        if inode.dead {
            return Ok(());
        }
        let at = inode.live.len() as u64;
        inode.live.extend_from_slice(bytes);
        inode.rewritten(at, at + bytes.len() as u64);
        inode.pending.push(FileOp::Write {
            at,
            bytes: bytes.to_vec(),
        });
        Ok(())
    }

    fn sync_data(&mut self) -> io::Result<()> {
        let mut inner = self.disk.lock();
        inner.alive()?;
        if let Err(e) = inner.sync_point() {
            if !inner.crashed {
                inner.state.inodes[self.ino].lose_pending();
            }
            return Err(io::Error::new(
                e.kind(),
                format!("syncing {}: {e}", self.path.display()),
            ));
        }
        inner.state.inodes[self.ino].sync();
        Ok(())
    }

    fn cut_back(&mut self, len: u64) -> io::Result<()> {
        let mut inner = self.disk.lock();
        inner.alive()?;
        let inode = &mut inner.state.inodes[self.ino];
        inode.live.resize(len as usize, 0);
        inode.rewritten(len, u64::MAX);
        inode.pending.push(FileOp::SetLen(len));
        inner.sync_point()?;
        inner.state.inodes[self.ino].sync();
        Ok(())
    }
}

impl Disk for SimDisk {
    type File = SimFile;

    fn create_dir(&self, dir: &Path) -> io::Result<()> {
        let mut inner = self.lock();
        inner.alive()?;
        for ancestor in dir.ancestors() {
            inner.state.dirs.insert(ancestor.to_path_buf());
        }
        Ok(())
    }

    fn read(&self, path: &Path) -> io::Result<Option<Vec<u8>>> {
        let inner = self.lock();
        inner.alive()?;
        Ok(inner
            .state
            .live_names
            .get(path)
            .map(|&ino| inner.state.inodes[ino].live.clone()))
    }

    fn truncate(&self, path: &Path, len: u64) -> io::Result<()> {
        let mut inner = self.lock();
        inner.alive()?;
        let ino = *inner
            .state
            .live_names
            .get(path)
            .ok_or_else(|| not_found(path))?;
        let inode = &mut inner.state.inodes[ino];
        inode.live.resize(len as usize, 0);
        inode.rewritten(len, u64::MAX);
        inode.pending.push(FileOp::SetLen(len));
        inner.sync_point()?;
        inner.state.inodes[ino].sync();
        Ok(())
    }

    fn open_append(&self, path: &Path) -> io::Result<SimFile> {
        let inner = self.lock();
        inner.alive()?;
        let ino = *inner
            .state
            .live_names
            .get(path)
            .ok_or_else(|| not_found(path))?;
        Ok(SimFile {
            disk: self.clone(),
            ino,
            path: path.to_path_buf(),
        })
    }

    fn write_synced(&self, path: &Path, parts: &[&[u8]]) -> io::Result<()> {
        let bytes = parts.concat();
        let mut inner = self.lock();
        inner.alive()?;
        let parent = path.parent().unwrap_or(Path::new(""));
        if !inner.state.dirs.contains(parent) {
            return Err(not_found(parent));
        }
        let state = &mut inner.state;
        if state.live_names.contains_key(path) {
            // As `O_EXCL` does.
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{} exists (simulated disk)", path.display()),
            ));
        }
        let ino = state.inodes.len();
        state.inodes.push(Inode {
            live: bytes.clone(),
            ..Inode::default()
        });
        state.live_names.insert(path.to_path_buf(), ino);
        state.pending_dir.push(DirOp::Link {
            name: path.to_path_buf(),
            ino,
        });
        state.inodes[ino]
            .pending
            .push(FileOp::Write { at: 0, bytes });
        inner.sync_point()?;
        inner.state.inodes[ino].sync();
        Ok(())
    }

    fn remove(&self, path: &Path) -> io::Result<bool> {
        // Durable at once (a simplification: a leftover that came back after a crash would be
        // removed again at the next open).
        let mut inner = self.lock();
        inner.alive()?;
        let state = &mut inner.state;
        let existed = state.live_names.remove(path).is_some();
        state.durable_names.remove(path);
        state
            .pending_dir
            .retain(|op| !matches!(op, DirOp::Link { name, .. } if name == path));
        inner.collect_garbage();
        Ok(existed)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut inner = self.lock();
        inner.alive()?;
        let state = &mut inner.state;
        let ino = state
            .live_names
            .remove(from)
            .ok_or_else(|| not_found(from))?;
        state.live_names.insert(to.to_path_buf(), ino);
        state.pending_dir.push(DirOp::Rename {
            from: from.to_path_buf(),
            to: to.to_path_buf(),
            ino,
        });
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut inner = self.lock();
        inner.alive()?;
        inner.sync_point()?;
        let state = &mut inner.state;
        let (landing, staying): (Vec<DirOp>, Vec<DirOp>) = std::mem::take(&mut state.pending_dir)
            .into_iter()
            .partition(|op| op.in_dir(dir));
        for op in &landing {
            op.apply(&mut state.durable_names);
        }
        state.pending_dir = staying;
        inner.collect_garbage();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir() -> PathBuf {
        PathBuf::from("/sim/d")
    }

    fn name(n: &str) -> PathBuf {
        dir().join(n)
    }

    /// Every image of `state` over `seeds`, as file maps.
    fn images(state: &DiskState, seeds: u64) -> Vec<BTreeMap<PathBuf, Vec<u8>>> {
        (0..seeds).map(|s| state.crash(s).files()).collect()
    }

    #[test]
    fn synced_appends_survive_and_unsynced_ones_may_not() {
        let disk = SimDisk::new();
        disk.create_dir(&dir()).unwrap();
        disk.write_synced(&name("f"), &[b"head"]).unwrap();
        disk.sync_dir(&dir()).unwrap();
        let mut f = disk.open_append(&name("f")).unwrap();
        f.append(&[1; 700]).unwrap();
        f.sync_data().unwrap();
        f.append(&[2; 1500]).unwrap();
        assert_eq!(disk.sync_points(), 3);
        let state = disk.state();
        assert!(state.has_pending());
        let mut synced = b"head".to_vec();
        synced.extend([1; 700]);
        let mut whole = synced.clone();
        whole.extend([2; 1500]);
        let mut seen_whole = false;
        let mut seen_synced = false;
        let mut seen_torn = false;
        for image in images(&state, 400) {
            let f = &image[&name("f")];
            // What was synced is always there, unchanged.
            assert_eq!(&f[..synced.len()], &synced[..]);
            assert!(f.len() <= whole.len());
            // The rest is a prefix of the unsynced write, maybe with zeros or garbage after it.
            seen_whole |= *f == whole;
            seen_synced |= *f == synced;
            seen_torn |= f.len() > synced.len() && *f != whole;
        }
        assert!(seen_whole && seen_synced && seen_torn);
        // Once synced, nothing is lost.
        f.sync_data().unwrap();
        for image in images(&disk.state(), 50) {
            assert_eq!(image[&name("f")], whole);
        }
    }

    #[test]
    fn renames_and_new_names_are_durable_only_after_sync_dir() {
        let disk = SimDisk::new();
        disk.create_dir(&dir()).unwrap();
        disk.write_synced(&name("a"), &[b"old"]).unwrap();
        disk.sync_dir(&dir()).unwrap();
        disk.write_synced(&name("a.tmp"), &[b"new"]).unwrap();
        disk.rename(&name("a.tmp"), &name("a")).unwrap();
        assert_eq!(disk.files()[&name("a")], b"new");
        assert!(!disk.files().contains_key(&name("a.tmp")));
        let before = images(&disk.state(), 200);
        // The rename is atomic: `a` is the old file or the new one, whole.
        assert!(
            before
                .iter()
                .all(|i| i[&name("a")] == b"old" || i[&name("a")] == b"new")
        );
        assert!(before.iter().any(|i| i[&name("a")] == b"old"));
        assert!(before.iter().any(|i| i[&name("a")] == b"new"));
        disk.sync_dir(&dir()).unwrap();
        for image in images(&disk.state(), 50) {
            assert_eq!(image.len(), 1);
            assert_eq!(image[&name("a")], b"new");
        }
    }

    #[test]
    fn truncation_is_durable_at_once() {
        let disk = SimDisk::new();
        disk.create_dir(&dir()).unwrap();
        disk.write_synced(&name("f"), &[&[7; 100]]).unwrap();
        disk.sync_dir(&dir()).unwrap();
        let mut f = disk.open_append(&name("f")).unwrap();
        f.append(&[8; 100]).unwrap();
        disk.truncate(&name("f"), 50).unwrap();
        for image in images(&disk.state(), 50) {
            assert_eq!(image[&name("f")], vec![7; 50]);
        }
    }

    #[test]
    fn crashes_are_deterministic_and_seeds_differ() {
        let disk = SimDisk::new();
        disk.create_dir(&dir()).unwrap();
        disk.write_synced(&name("f"), &[b"x"]).unwrap();
        let mut f = disk.open_append(&name("f")).unwrap();
        f.append(&[3; 2000]).unwrap();
        let state = disk.state();
        assert_eq!(images(&state, 30), images(&state, 30));
        let distinct: BTreeSet<_> = images(&state, 60).into_iter().collect();
        assert!(distinct.len() > 10, "{} distinct images", distinct.len());
    }

    #[test]
    fn the_chosen_sync_point_fails_and_freezes_the_disk() {
        let disk = SimDisk::new();
        disk.record_sync_points();
        disk.crash_at_sync_point(2);
        disk.create_dir(&dir()).unwrap();
        disk.write_synced(&name("f"), &[b"one"]).unwrap();
        let mut f = disk.open_append(&name("f")).unwrap();
        f.append(b"two").unwrap();
        assert!(f.sync_data().is_err());
        assert!(disk.crashed());
        // Nothing lands any more, reads fail too.
        assert!(f.append(b"three").is_err());
        assert!(disk.sync_dir(&dir()).is_err());
        assert!(disk.read(&name("f")).is_err());
        // The state at the crash is the state recorded at that sync point.
        let recorded = disk.take_recorded();
        assert_eq!(recorded.len(), 2);
        assert_eq!(recorded[1], disk.state());
        assert_eq!(recorded[1].sync_points(), 2);
        // After the crash, the name of `f` (never synced into the directory) may be gone; if
        // it is there, its synced content is.
        for image in images(&disk.state(), 100) {
            if let Some(f) = image.get(&name("f")) {
                assert!(f.starts_with(b"one"));
            }
        }
    }
}
