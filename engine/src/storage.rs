//! The storage layer under the write-ahead log and snapshots: one flat directory of files.
//!
//! Behind a trait so that tests can run the real WAL and snapshot code against `SimStorage`, a
//! directory that keeps written and synced bytes apart and can fail or lose power on command.
//! `FsStorage` is the real one. What the code assumes of the media is written down in
//! `docs/design.md` ("Storage assumptions").

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;

/// A directory of named files.
pub trait Storage: Send + Sync + 'static {
    /// Names of the files in the directory, in no particular order.
    fn list(&self) -> io::Result<Vec<String>>;
    /// The whole content of a file.
    fn read(&self, name: &str) -> io::Result<Vec<u8>>;
    /// Creates an empty file (replacing any file of that name), open for appending.
    fn create(&self, name: &str) -> io::Result<Box<dyn StorageFile>>;
    /// Opens an existing file for appending at its end.
    fn open_append(&self, name: &str) -> io::Result<Box<dyn StorageFile>>;
    /// Creates `name` holding `len` zero bytes, written and synced together with the file's size,
    /// replacing any file of that name. Writing over such a file, an `fdatasync` has no new size
    /// to record, only data (measured here: 6,800-8,600 syncs/s against 3,800-6,100 appending).
    /// `Unsupported` where a storage does not offer it; the log then appends.
    fn create_zeroed(&self, name: &str, len: u64) -> io::Result<()> {
        let _ = (name, len);
        Err(io::ErrorKind::Unsupported.into())
    }
    /// Opens an existing file to write it from its first byte on, over what it holds (a file made
    /// by `create_zeroed`): `append` then writes at the position after the last write.
    fn open_overwrite(&self, name: &str) -> io::Result<Box<dyn StorageFile>> {
        let _ = name;
        Err(io::ErrorKind::Unsupported.into())
    }
    /// Cuts a file to `len` bytes and syncs it.
    fn truncate(&self, name: &str, len: u64) -> io::Result<()>;
    /// Atomically replaces `to` with `from`.
    fn rename(&self, from: &str, to: &str) -> io::Result<()>;
    fn remove(&self, name: &str) -> io::Result<()>;
    /// Makes creations, renames and removals in the directory durable.
    fn sync_dir(&self) -> io::Result<()>;
    /// Where the files are, for messages.
    fn describe(&self, name: &str) -> String;
}

/// A file open for appending.
pub trait StorageFile: Send {
    fn append(&mut self, bytes: &[u8]) -> io::Result<()>;
    /// `fdatasync`: when it returns `Ok`, every appended byte survives a power loss.
    fn sync_data(&mut self) -> io::Result<()>;
    /// A handle that syncs this file from another thread while appends go on, so that the
    /// group commit can write the next batch while the last one syncs. Each handle is a file
    /// description of its own, opened now: Linux reports a write-back error once per open file
    /// description, to whichever of its syncs checks first, so two syncs in flight on one
    /// description could see the error go to the later one while the earlier returns `Ok` for
    /// pages that were lost. On its own description, a handle's next sync reports every
    /// write-back error that happens from now on.
    fn syncer(&self) -> io::Result<Arc<dyn FileSync>>;
}

/// Syncs one file from any thread.
pub trait FileSync: Send + Sync {
    /// `fdatasync`: when it returns `Ok`, every byte written to the file before the call, through
    /// any handle, survives a power loss, and no write-back error happened since this handle
    /// was opened or its last sync.
    fn sync_data(&self) -> io::Result<()>;
}

/// A real directory.
#[derive(Debug, Clone)]
pub struct FsStorage {
    dir: PathBuf,
}

impl FsStorage {
    /// Opens `dir`, creating it (and its parents) if needed.
    pub fn open(dir: impl AsRef<Path>) -> io::Result<Self> {
        let dir = dir.as_ref().to_path_buf();
        fs::create_dir_all(&dir)?;
        Ok(Self { dir })
    }
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// A file open for writing, and its path, from which `syncer` opens further descriptions.
struct FsFile {
    file: File,
    path: PathBuf,
}

impl FsFile {
    fn boxed(file: File, path: PathBuf) -> Box<dyn StorageFile> {
        Box::new(Self { file, path })
    }
}

impl StorageFile for FsFile {
    fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.file.write_all(bytes)
    }
    fn sync_data(&mut self) -> io::Result<()> {
        self.file.sync_data()
    }
    fn syncer(&self) -> io::Result<Arc<dyn FileSync>> {
        // Opened for writing, though it only syncs: some systems refuse `fsync` on a file
        // opened read-only.
        Ok(Arc::new(OpenOptions::new().write(true).open(&self.path)?))
    }
}

impl FileSync for File {
    fn sync_data(&self) -> io::Result<()> {
        File::sync_data(self)
    }
}

impl Storage for FsStorage {
    fn list(&self) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in fs::read_dir(&self.dir)? {
            let entry = entry?;
            if entry.file_type()?.is_file()
                && let Ok(name) = entry.file_name().into_string()
            {
                names.push(name);
            }
        }
        Ok(names)
    }
    fn read(&self, name: &str) -> io::Result<Vec<u8>> {
        fs::read(self.dir.join(name))
    }
    fn create(&self, name: &str) -> io::Result<Box<dyn StorageFile>> {
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(self.dir.join(name))?;
        Ok(FsFile::boxed(file, self.dir.join(name)))
    }
    fn open_append(&self, name: &str) -> io::Result<Box<dyn StorageFile>> {
        let file = OpenOptions::new().append(true).open(self.dir.join(name))?;
        Ok(FsFile::boxed(file, self.dir.join(name)))
    }
    fn create_zeroed(&self, name: &str, len: u64) -> io::Result<()> {
        let path = self.dir.join(name);
        let zero_fill = || {
            let mut file = File::create(&path)?;
            let zeros = vec![0u8; 1 << 20];
            let mut left = len;
            while left > 0 {
                let n = left.min(zeros.len() as u64) as usize;
                file.write_all(&zeros[..n])?;
                left -= n as u64;
            }
            file.sync_all()
        };
        let result = zero_fill();
        if result.is_err() {
            // A partial file (the disk filled up) would hold space the log needs.
            let _ = fs::remove_file(&path);
        }
        result
    }
    fn open_overwrite(&self, name: &str) -> io::Result<Box<dyn StorageFile>> {
        let file = OpenOptions::new().write(true).open(self.dir.join(name))?;
        Ok(FsFile::boxed(file, self.dir.join(name)))
    }
    fn truncate(&self, name: &str, len: u64) -> io::Result<()> {
        let file = OpenOptions::new().write(true).open(self.dir.join(name))?;
        file.set_len(len)?;
        file.sync_all()
    }
    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        fs::rename(self.dir.join(from), self.dir.join(to))
    }
    fn remove(&self, name: &str) -> io::Result<()> {
        fs::remove_file(self.dir.join(name))
    }
    fn sync_dir(&self) -> io::Result<()> {
        File::open(&self.dir)?.sync_all()
    }
    fn describe(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }
}

/// Which operation an injected fault hits.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum FaultOp {
    Append,
    Sync,
}

#[derive(Debug, Default, Clone)]
struct SimFile {
    /// What a reader sees now.
    data: Vec<u8>,
    /// What survives a power loss: the data as of the last successful sync.
    synced: Vec<u8>,
}

#[derive(Debug, Default, Clone)]
struct SimState {
    /// Directory entries now: name -> file id.
    names: HashMap<String, usize>,
    /// Directory entries as of the last `sync_dir`.
    synced_names: HashMap<String, usize>,
    files: Vec<SimFile>,
    /// Faults to inject: every operation of the kind fails while set.
    failing: Vec<(FaultOp, io::ErrorKind)>,
    /// Whether `create_zeroed` and `open_overwrite` are offered (off by default, so that most
    /// tests keep small appended segments; the preallocation tests turn it on).
    preallocation: bool,
}

/// An in-memory directory with POSIX-like durability: file bytes survive a power loss only once
/// synced, directory entries only once the directory is synced. Cloning shares the directory.
#[derive(Debug, Clone, Default)]
pub struct SimStorage {
    state: Arc<Mutex<SimState>>,
}

/// How a simulated power loss treats bytes written but never synced.
#[derive(Copy, Clone, Debug)]
pub enum PowerLoss {
    /// They are lost.
    DropUnsynced,
    /// A prefix of `keep` bytes of them survives, the last `garbage` of those overwritten with
    /// junk (a torn sector).
    Tear { keep: usize, garbage: usize },
    /// Each `page`-byte page of them survives or not on its own (chosen by `seed`), as on a
    /// disk that writes back pages in any order: a hole can come before pages that made it.
    Scatter { page: usize, seed: u64 },
}

impl SimStorage {
    pub fn new() -> Self {
        Self::default()
    }

    /// A directory that offers `create_zeroed` and `open_overwrite`, so that the log writes into
    /// preallocated segments as it does on a real disk.
    pub fn with_preallocation() -> Self {
        let sim = Self::default();
        sim.state.lock().preallocation = true;
        sim
    }

    /// Makes every later operation of kind `op` fail with `kind` until `heal`.
    pub fn fail(&self, op: FaultOp, kind: io::ErrorKind) {
        self.state.lock().failing.push((op, kind));
    }

    pub fn heal(&self) {
        self.state.lock().failing.clear();
    }

    /// Flips the bits of byte `offset` of a file, as media damage would.
    pub fn corrupt(&self, name: &str, offset: usize) {
        let mut st = self.state.lock();
        let id = st.names[name];
        let file = &mut st.files[id];
        file.data[offset] ^= 0xFF;
        file.synced = file.data.clone();
    }

    /// A new directory as a process killed now leaves this one: every written byte and name
    /// stays (the kernel's page cache has them), but nothing more is synced than was.
    pub fn process_crash(&self) -> SimStorage {
        let mut state = self.state.lock().clone();
        state.failing.clear();
        SimStorage {
            state: Arc::new(Mutex::new(state)),
        }
    }

    /// A new directory holding what survives a power loss of this one now.
    pub fn power_loss(&self, mode: PowerLoss) -> SimStorage {
        let st = self.state.lock();
        let mut out = SimState {
            preallocation: st.preallocation,
            ..SimState::default()
        };
        for (name, &id) in &st.synced_names {
            let file = &st.files[id];
            let data = mode.apply(file, id as u64);
            out.files.push(SimFile {
                synced: data.clone(),
                data,
            });
            out.names.insert(name.clone(), out.files.len() - 1);
        }
        out.synced_names = out.names.clone();
        SimStorage {
            state: Arc::new(Mutex::new(out)),
        }
    }

    fn check(st: &SimState, op: FaultOp) -> io::Result<()> {
        match st.failing.iter().find(|f| f.0 == op) {
            Some(&(_, kind)) => Err(io::Error::new(kind, format!("injected {op:?} fault"))),
            None => Ok(()),
        }
    }
}

impl PowerLoss {
    /// What of `file` survives this power loss.
    fn apply(self, file: &SimFile, file_id: u64) -> Vec<u8> {
        let mut data = file.synced.clone();
        // Writes since the last sync lie between the first and the last byte that differ from
        // the synced bytes (past their end for a file appended to, inside them for one written
        // over).
        let differs = |i: &usize| file.synced.get(*i) != Some(&file.data[*i]);
        let from = (0..file.data.len()).find(differs).unwrap_or(file.data.len());
        let to = (from..file.data.len()).rfind(differs).map_or(from, |i| i + 1);
        let keep = |data: &mut Vec<u8>, range: std::ops::Range<usize>| {
            if data.len() < range.end {
                data.resize(range.end, 0);
            }
            data[range.clone()].copy_from_slice(&file.data[range]);
        };
        match self {
            Self::DropUnsynced => {}
            Self::Tear { keep: n, garbage } => {
                let end = from + n.min(to - from);
                keep(&mut data, from..end);
                let junk = end - garbage.min(end - from);
                for (i, b) in data[junk..end].iter_mut().enumerate() {
                    *b = 0xA5 ^ i as u8;
                }
            }
            Self::Scatter { page, seed } => {
                let page = page.max(1);
                let mut at = from;
                while at < to {
                    let end = ((at / page + 1) * page).min(to);
                    if mix(seed ^ (file_id << 40) ^ (at / page) as u64) & 1 == 1 {
                        keep(&mut data, at..end);
                    }
                    at = end;
                }
            }
        }
        data
    }
}

/// SplitMix64's finaliser: a well-spread coin per page, deterministic in its input.
fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

fn not_found(name: &str) -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, format!("no file {name}"))
}

struct SimHandle {
    state: Arc<Mutex<SimState>>,
    id: usize,
    /// Where the next write goes when the file is written over (`open_overwrite`); appending
    /// otherwise.
    at: Option<usize>,
}

impl SimHandle {
    fn write(&mut self, st: &mut SimState, bytes: &[u8]) {
        let data = &mut st.files[self.id].data;
        match &mut self.at {
            None => data.extend_from_slice(bytes),
            Some(at) => {
                let end = *at + bytes.len();
                if data.len() < end {
                    data.resize(end, 0);
                }
                data[*at..end].copy_from_slice(bytes);
                *at = end;
            }
        }
    }
}

impl StorageFile for SimHandle {
    fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        let state = self.state.clone();
        let mut st = state.lock();
        if let Err(e) = SimStorage::check(&st, FaultOp::Append) {
            // A failed write may still have written part of the buffer.
            self.write(&mut st, &bytes[..bytes.len() / 2]);
            return Err(e);
        }
        self.write(&mut st, bytes);
        Ok(())
    }
    fn sync_data(&mut self) -> io::Result<()> {
        sim_sync(&self.state, self.id)
    }
    fn syncer(&self) -> io::Result<Arc<dyn FileSync>> {
        Ok(Arc::new(SimSync {
            state: self.state.clone(),
            id: self.id,
        }))
    }
}

/// Syncs a `SimStorage` file: what was written before the call becomes what survives.
struct SimSync {
    state: Arc<Mutex<SimState>>,
    id: usize,
}

impl FileSync for SimSync {
    fn sync_data(&self) -> io::Result<()> {
        sim_sync(&self.state, self.id)
    }
}

fn sim_sync(state: &Mutex<SimState>, id: usize) -> io::Result<()> {
    let mut st = state.lock();
    SimStorage::check(&st, FaultOp::Sync)?;
    let file = &mut st.files[id];
    file.synced = file.data.clone();
    Ok(())
}

impl Storage for SimStorage {
    fn list(&self) -> io::Result<Vec<String>> {
        Ok(self.state.lock().names.keys().cloned().collect())
    }
    fn read(&self, name: &str) -> io::Result<Vec<u8>> {
        let st = self.state.lock();
        let id = *st.names.get(name).ok_or_else(|| not_found(name))?;
        Ok(st.files[id].data.clone())
    }
    fn create(&self, name: &str) -> io::Result<Box<dyn StorageFile>> {
        let mut st = self.state.lock();
        SimStorage::check(&st, FaultOp::Append)?;
        st.files.push(SimFile::default());
        let id = st.files.len() - 1;
        st.names.insert(name.to_string(), id);
        Ok(Box::new(SimHandle {
            state: self.state.clone(),
            id,
            at: None,
        }))
    }
    fn open_append(&self, name: &str) -> io::Result<Box<dyn StorageFile>> {
        let st = self.state.lock();
        let id = *st.names.get(name).ok_or_else(|| not_found(name))?;
        Ok(Box::new(SimHandle {
            state: self.state.clone(),
            id,
            at: None,
        }))
    }
    fn create_zeroed(&self, name: &str, len: u64) -> io::Result<()> {
        let mut st = self.state.lock();
        if !st.preallocation {
            return Err(io::ErrorKind::Unsupported.into());
        }
        SimStorage::check(&st, FaultOp::Append)?;
        SimStorage::check(&st, FaultOp::Sync)?;
        let zeros = vec![0u8; len as usize];
        st.files.push(SimFile {
            data: zeros.clone(),
            synced: zeros,
        });
        let id = st.files.len() - 1;
        st.names.insert(name.to_string(), id);
        Ok(())
    }
    fn open_overwrite(&self, name: &str) -> io::Result<Box<dyn StorageFile>> {
        let st = self.state.lock();
        if !st.preallocation {
            return Err(io::ErrorKind::Unsupported.into());
        }
        let id = *st.names.get(name).ok_or_else(|| not_found(name))?;
        Ok(Box::new(SimHandle {
            state: self.state.clone(),
            id,
            at: Some(0),
        }))
    }
    fn truncate(&self, name: &str, len: u64) -> io::Result<()> {
        let mut st = self.state.lock();
        SimStorage::check(&st, FaultOp::Sync)?;
        let id = *st.names.get(name).ok_or_else(|| not_found(name))?;
        let file = &mut st.files[id];
        file.data.truncate(len as usize);
        file.synced = file.data.clone();
        Ok(())
    }
    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        let mut st = self.state.lock();
        let id = st.names.remove(from).ok_or_else(|| not_found(from))?;
        st.names.insert(to.to_string(), id);
        Ok(())
    }
    fn remove(&self, name: &str) -> io::Result<()> {
        let mut st = self.state.lock();
        st.names.remove(name).ok_or_else(|| not_found(name))?;
        Ok(())
    }
    fn sync_dir(&self) -> io::Result<()> {
        let mut st = self.state.lock();
        SimStorage::check(&st, FaultOp::Sync)?;
        st.synced_names = st.names.clone();
        Ok(())
    }
    fn describe(&self, name: &str) -> String {
        format!("sim:{name}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(synced: Vec<u8>, data: Vec<u8>) -> SimFile {
        SimFile { data, synced }
    }

    #[test]
    fn a_tear_keeps_a_prefix_of_what_was_written_and_nothing_past_it() {
        // Appended: 100 synced bytes, 300 written after them.
        let appended = file(vec![1; 100], [vec![1; 100], vec![2; 300]].concat());
        let all = PowerLoss::Tear {
            keep: 1_000,
            garbage: 10,
        }
        .apply(&appended, 0);
        assert_eq!(all.len(), 400, "a tear never grows a file past what was written");
        assert!(all[100..390].iter().all(|&b| b == 2));
        assert_ne!(&all[390..], &[2; 10][..], "the torn sector is junk");
        let some = PowerLoss::Tear { keep: 50, garbage: 0 }.apply(&appended, 0);
        assert_eq!(some, [vec![1; 100], vec![2; 50]].concat());

        // Written over a zero-filled file: the tear stays inside the bytes written.
        let mut data = vec![0; 4096];
        data[1000..1500].fill(7);
        let over = file(vec![0; 4096], data.clone());
        let whole = PowerLoss::Tear {
            keep: 10_000,
            garbage: 0,
        }
        .apply(&over, 0);
        assert_eq!(whole, data);
        let torn = PowerLoss::Tear {
            keep: 100,
            garbage: 5,
        }
        .apply(&over, 0);
        assert_eq!(torn.len(), 4096);
        assert!(torn[1000..1095].iter().all(|&b| b == 7));
        assert!(torn[..1000].iter().chain(&torn[1100..]).all(|&b| b == 0));
        assert!(PowerLoss::DropUnsynced.apply(&over, 0).iter().all(|&b| b == 0));
    }

    #[test]
    fn a_scatter_keeps_whole_pages_and_can_leave_a_hole_before_a_kept_one() {
        let mut data = vec![0; 4096];
        data[64..4032].fill(7);
        let over = file(vec![0; 4096], data);
        let mut hole_before_kept = false;
        for seed in 0..16 {
            let out = PowerLoss::Scatter { page: 512, seed }.apply(&over, 3);
            assert_eq!(out.len(), 4096);
            let kept: Vec<bool> = (0..8)
                .map(|p| {
                    let page = p * 512..(p + 1) * 512;
                    let new = out[page.clone()] == over.data[page.clone()];
                    assert!(
                        new || out[page.clone()] == over.synced[page],
                        "seed {seed}: page {p} is kept whole or not at all"
                    );
                    new
                })
                .collect();
            hole_before_kept |= kept.windows(2).any(|w| !w[0] && w[1]);
        }
        assert!(hole_before_kept, "some seed drops a page and keeps a later one");
    }
}
