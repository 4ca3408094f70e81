//! The on-disk store of leak reports: `<state_dir>/reports/<id>.json` and `<id>.pb.gz`, written
//! atomically so a report survives the traced process being OOM-killed and the daemon
//! restarting, with retention by count and total size, and ids validated so that no caller can
//! name a file outside the directory.
//!
//! An id is `<unix millis>-<pid>-<sanitized comm>`. A report exists once its `.json` file does:
//! the pprof file is renamed into place first, the JSON last, and leftovers of a crash in
//! between (temporary files, a pprof file without its JSON) are removed at [`ReportStore::open`].
//! Saving under an existing id replaces that report (a trace's interim reports, its final one,
//! and its process's end are written under one id).
//!
//! A host in trouble often has a full or read-only disk too, so the evidence does not depend on
//! the disk: the latest report of each process is also held in memory (at most [`MAX_HELD`]
//! processes, those whose report could not be written kept first), served from there, and
//! written again by [`ReportStore::retry`] until it is stored. Failed writes are counted
//! ([`StoreHealth`]).

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::config::ReportsConfig;
use crate::model::{Method, StoreHealth};
use crate::report::{EncodeError, OutputFormat, Report, encode};

/// Suffix of a report's JSON file.
const JSON_SUFFIX: &str = ".json";
/// Suffix of a report's gzipped pprof file.
const PPROF_SUFFIX: &str = ".pb.gz";
/// Prefix of a file being written; never a valid id, since ids start with a digit.
const TEMP_PREFIX: &str = ".tmp-";
/// Longest sanitized command name in an id (the kernel's `comm` holds 15 bytes).
const MAX_COMM_LEN: usize = 32;
/// Longest id accepted.
const MAX_ID_LEN: usize = 96;
/// Processes whose latest report is held in memory.
pub const MAX_HELD: usize = 32;

/// Why the store failed.
#[derive(Debug, Error)]
pub enum StoreError {
    /// The id is not one the store could have produced.
    #[error("invalid report id `{0}`")]
    InvalidId(String),
    /// No report has that id (it was never written or retention removed it).
    #[error("no report `{0}`")]
    NotFound(String),
    /// A file system operation failed.
    #[error("cannot {action} {}: {source}", .path.display())]
    Io {
        /// What was being done, e.g. `write`.
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// A stored JSON file is not a report.
    #[error("cannot decode report {}: {source}", .path.display())]
    Decode {
        /// The file.
        path: PathBuf,
        /// The error.
        source: serde_json::Error,
    },
    /// The report could not be encoded.
    #[error(transparent)]
    Encode(#[from] EncodeError),
}

/// What [`ReportStore::list`] tells about one stored report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportMeta {
    /// The report's id.
    pub id: String,
    /// The traced process.
    pub pid: u32,
    /// Its command name, sanitized as in the id.
    pub comm: String,
    /// When the report was saved, in milliseconds since the Unix epoch.
    pub created_unix_ms: u64,
    /// Bytes on disk, both files together.
    pub bytes: u64,
}

/// The latest report of one process, held in memory.
#[derive(Debug)]
struct Held {
    id: String,
    report: Arc<Report>,
    /// Written to disk as it is now.
    stored: bool,
}

/// What the store keeps in memory: the held reports, least recently saved first, and the
/// health of its writes.
#[derive(Debug, Default)]
struct Memory {
    held: Vec<Held>,
    health: StoreHealth,
}

impl Memory {
    /// Holds `report` as the latest of its process, replacing the one it had; drops the least
    /// recently saved report beyond [`MAX_HELD`], a stored one first.
    fn hold(&mut self, id: &str, report: Arc<Report>, stored: bool) {
        self.held
            .retain(|held| held.id != id && held.report.pid != report.pid);
        self.held.push(Held {
            id: id.to_owned(),
            report,
            stored,
        });
        if self.held.len() > MAX_HELD {
            let victim = self.held.iter().position(|held| held.stored).unwrap_or(0);
            let dropped = self.held.remove(victim);
            if !dropped.stored {
                log::error!(
                    "report {} could not be written and is dropped from memory: more than \
                     {MAX_HELD} reports wait to be written",
                    dropped.id
                );
            }
        }
        self.health.unstored = self.held.iter().filter(|held| !held.stored).count() as u64;
    }

    fn failed(&mut self, err: &StoreError) {
        self.health.errors_total += 1;
        self.health.last_error = Some(err.to_string());
    }
}

/// The report directory, with the latest report of each process held in memory. Saving is
/// serialized; reads may run concurrently with it.
#[derive(Debug)]
pub struct ReportStore {
    dir: PathBuf,
    limits: ReportsConfig,
    write_lock: Mutex<()>,
    memory: Mutex<Memory>,
}

impl ReportStore {
    /// Opens (creating it, mode 0700) `<state_dir>/reports/` and removes what a crash left
    /// half-written.
    pub fn open(state_dir: &Path, limits: ReportsConfig) -> Result<Self, StoreError> {
        let dir = state_dir.join("reports");
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(io_error("create", &dir))?;
        let mode = fs::metadata(&dir)
            .map_err(io_error("inspect", &dir))?
            .permissions()
            .mode();
        if mode & 0o777 != 0o700 {
            fs::set_permissions(&dir, fs::Permissions::from_mode(0o700))
                .map_err(io_error("set permissions of", &dir))?;
        }
        let store = Self {
            dir,
            limits,
            write_lock: Mutex::new(()),
            memory: Mutex::new(Memory::default()),
        };
        store.remove_crash_leftovers()?;
        Ok(store)
    }

    /// The directory holding the reports.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn memory(&self) -> std::sync::MutexGuard<'_, Memory> {
        self.memory.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A new id for a report on process `pid` (`comm`), taken by no report on disk or in
    /// memory: the daemon names a trace's report when the trace starts, and its interim and
    /// final reports are saved under it.
    pub fn new_id(&self, pid: u32, comm: &str) -> String {
        let comm = sanitize_comm(comm);
        let mut millis = unix_millis();
        loop {
            let id = format!("{millis}-{pid}-{comm}");
            let held = self.memory().held.iter().any(|held| held.id == id);
            // A disk that cannot say is taken as free: the write will tell.
            let on_disk = self.path(&id, JSON_SUFFIX).try_exists().unwrap_or(false);
            if !held && !on_disk {
                return id;
            }
            millis += 1;
        }
    }

    /// Saves `report` under `id` (a new id when `None`; an existing report of that id is
    /// replaced): holds it in memory as the latest report of its process, then writes it (JSON
    /// and gzipped pprof) and removes the oldest reports until the retention limits hold again,
    /// never the one just written. Gives its id, and why it could not be written (it is then
    /// served from memory until [`ReportStore::retry`] writes it).
    pub fn save(&self, report: Report, id: Option<&str>) -> (String, Result<(), StoreError>) {
        let id = match id {
            Some(id) => id.to_owned(),
            None => self.new_id(report.pid, &report.comm),
        };
        let report = Arc::new(report);
        self.memory().hold(&id, Arc::clone(&report), false);
        let written = self.write(&id, &report);
        (id, written)
    }

    /// Writes the held reports that could not be written yet; gives each one's id and outcome.
    pub fn retry(&self) -> Vec<(String, Result<(), StoreError>)> {
        let unstored: Vec<(String, Arc<Report>)> = self
            .memory()
            .held
            .iter()
            .filter(|held| !held.stored)
            .map(|held| (held.id.clone(), Arc::clone(&held.report)))
            .collect();
        unstored
            .into_iter()
            .map(|(id, report)| {
                let written = self.write(&id, &report);
                (id, written)
            })
            .collect()
    }

    /// Writes a held report and notes the outcome.
    fn write(&self, id: &str, report: &Arc<Report>) -> Result<(), StoreError> {
        let written = self.write_files(id, report);
        let mut memory = self.memory();
        match &written {
            Ok(()) => {
                // Stored as held, unless it was replaced meanwhile.
                if let Some(held) = memory
                    .held
                    .iter_mut()
                    .find(|held| held.id == id && Arc::ptr_eq(&held.report, report))
                {
                    held.stored = true;
                }
            }
            Err(err) => memory.failed(err),
        }
        memory.health.unstored = memory.held.iter().filter(|held| !held.stored).count() as u64;
        written
    }

    fn write_files(&self, id: &str, report: &Report) -> Result<(), StoreError> {
        let json = encode(report, OutputFormat::Json, 0)?;
        let pprof = encode(report, OutputFormat::Pprof, 0)?;
        let _guard = self
            .write_lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        self.write_atomically(id, PPROF_SUFFIX, &pprof)?;
        self.write_atomically(id, JSON_SUFFIX, &json)?;
        self.sync_dir()?;
        self.enforce_retention(id)
    }

    /// The ids of every report, on disk or held in memory.
    pub fn ids(&self) -> Result<std::collections::HashSet<String>, StoreError> {
        let mut ids: std::collections::HashSet<String> =
            self.list()?.into_iter().map(|meta| meta.id).collect();
        ids.extend(self.memory().held.iter().map(|held| held.id.clone()));
        Ok(ids)
    }

    /// How writing reports has fared.
    pub fn health(&self) -> StoreHealth {
        self.memory().health.clone()
    }

    /// The newest report of process `pid`, with its id: the one held in memory, else the
    /// newest on disk; with `method`, the newest made by that method.
    pub fn latest_for(
        &self,
        pid: u32,
        method: Option<Method>,
    ) -> Result<Option<(String, Arc<Report>)>, StoreError> {
        let wanted = |report: &Report| method.is_none_or(|method| report.method == method);
        if let Some(held) = self
            .memory()
            .held
            .iter()
            .find(|held| held.report.pid == pid && wanted(&held.report))
        {
            return Ok(Some((held.id.clone(), Arc::clone(&held.report))));
        }
        for meta in self.list()?.into_iter().filter(|meta| meta.pid == pid) {
            let report = self.read(&meta.id)?;
            if wanted(&report) {
                return Ok(Some((meta.id, Arc::new(report))));
            }
        }
        Ok(None)
    }

    /// Reads the report `id`, from memory when it is held.
    pub fn read(&self, id: &str) -> Result<Report, StoreError> {
        parse_id(id).ok_or_else(|| StoreError::InvalidId(id.to_owned()))?;
        if let Some(held) = self.memory().held.iter().find(|held| held.id == id) {
            return Ok(Report::clone(&held.report));
        }
        let path = self.path(id, JSON_SUFFIX);
        let bytes = read_existing(&path, id)?;
        serde_json::from_slice(&bytes).map_err(|source| StoreError::Decode { path, source })
    }

    /// Reads the gzipped pprof profile of report `id` (encoded anew when it is held in memory
    /// and not written yet).
    pub fn read_pprof(&self, id: &str) -> Result<Vec<u8>, StoreError> {
        parse_id(id).ok_or_else(|| StoreError::InvalidId(id.to_owned()))?;
        let unstored = self
            .memory()
            .held
            .iter()
            .find(|held| held.id == id && !held.stored)
            .map(|held| Arc::clone(&held.report));
        if let Some(report) = unstored {
            return Ok(encode(&report, OutputFormat::Pprof, 0)?);
        }
        if !self
            .path(id, JSON_SUFFIX)
            .try_exists()
            .map_err(io_error("inspect", &self.dir))?
        {
            return Err(StoreError::NotFound(id.to_owned()));
        }
        read_existing(&self.path(id, PPROF_SUFFIX), id)
    }

    /// Every stored report, newest first.
    pub fn list(&self) -> Result<Vec<ReportMeta>, StoreError> {
        let mut reports = Vec::new();
        for name in self.file_names()? {
            let Some(id) = name.strip_suffix(JSON_SUFFIX) else {
                continue;
            };
            let Some((created_unix_ms, pid, comm)) = parse_id(id) else {
                continue;
            };
            let Some(json_bytes) = self.file_size(&self.path(id, JSON_SUFFIX))? else {
                continue;
            };
            let pprof_bytes = self.file_size(&self.path(id, PPROF_SUFFIX))?.unwrap_or(0);
            reports.push(ReportMeta {
                id: id.to_owned(),
                pid,
                comm: comm.to_owned(),
                created_unix_ms,
                bytes: json_bytes + pprof_bytes,
            });
        }
        reports.sort_by(|a, b| (b.created_unix_ms, &b.id).cmp(&(a.created_unix_ms, &a.id)));
        Ok(reports)
    }

    fn path(&self, id: &str, suffix: &str) -> PathBuf {
        self.dir.join(format!("{id}{suffix}"))
    }

    /// Writes `bytes` to `<id><suffix>` through a temporary file in the same directory, synced
    /// before the rename.
    fn write_atomically(&self, id: &str, suffix: &str, bytes: &[u8]) -> Result<(), StoreError> {
        let temp = self.dir.join(format!("{TEMP_PREFIX}{id}{suffix}"));
        let result = (|| {
            let mut file = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&temp)
                .map_err(io_error("create", &temp))?;
            file.write_all(bytes).map_err(io_error("write", &temp))?;
            file.sync_all().map_err(io_error("sync", &temp))?;
            let target = self.path(id, suffix);
            fs::rename(&temp, &target).map_err(io_error("rename into place", &target))
        })();
        if result.is_err() {
            // Best effort: the temporary file is removed at the next open anyway.
            let _ = fs::remove_file(&temp);
        }
        result
    }

    fn sync_dir(&self) -> Result<(), StoreError> {
        File::open(&self.dir)
            .and_then(|dir| dir.sync_all())
            .map_err(io_error("sync", &self.dir))
    }

    /// Removes the oldest reports, except `keep`, while the limits are exceeded.
    fn enforce_retention(&self, keep: &str) -> Result<(), StoreError> {
        let mut reports = self.list()?;
        let mut count = reports.len();
        let mut bytes: u64 = reports.iter().map(|r| r.bytes).sum();
        let mut removed = false;
        // `list` is newest first: pop the oldest.
        while count > self.limits.max_count || bytes > self.limits.max_bytes {
            let Some(oldest) = reports.pop() else {
                break;
            };
            if oldest.id == keep {
                continue;
            }
            self.remove(&oldest.id)?;
            self.memory()
                .held
                .retain(|held| !(held.stored && held.id == oldest.id));
            removed = true;
            count -= 1;
            bytes = bytes.saturating_sub(oldest.bytes);
        }
        if removed {
            self.sync_dir()?;
        }
        Ok(())
    }

    /// Removes both files of report `id`, the JSON first so it is never listed half-removed.
    fn remove(&self, id: &str) -> Result<(), StoreError> {
        for suffix in [JSON_SUFFIX, PPROF_SUFFIX] {
            let path = self.path(id, suffix);
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(err) if err.kind() == io::ErrorKind::NotFound => {}
                Err(err) => return Err(io_error("remove", &path)(err)),
            }
        }
        Ok(())
    }

    /// Removes temporary files and pprof files whose JSON was never renamed into place.
    fn remove_crash_leftovers(&self) -> Result<(), StoreError> {
        let names = self.file_names()?;
        let mut removed = false;
        for name in &names {
            let orphan = name.strip_suffix(PPROF_SUFFIX).is_some_and(|id| {
                parse_id(id).is_some() && !names.contains(&format!("{id}{JSON_SUFFIX}"))
            });
            if name.starts_with(TEMP_PREFIX) || orphan {
                let path = self.dir.join(name);
                match fs::remove_file(&path) {
                    Ok(()) => removed = true,
                    Err(err) if err.kind() == io::ErrorKind::NotFound => {}
                    Err(err) => return Err(io_error("remove", &path)(err)),
                }
            }
        }
        if removed {
            self.sync_dir()?;
        }
        Ok(())
    }

    /// The names of the directory's entries that are valid UTF-8.
    fn file_names(&self) -> Result<Vec<String>, StoreError> {
        let entries = fs::read_dir(&self.dir).map_err(io_error("list", &self.dir))?;
        let mut names = Vec::new();
        for entry in entries {
            let entry = entry.map_err(io_error("list", &self.dir))?;
            if let Ok(name) = entry.file_name().into_string() {
                names.push(name);
            }
        }
        Ok(names)
    }

    /// The size of a regular file, `None` when it does not exist (removed meanwhile).
    fn file_size(&self, path: &Path) -> Result<Option<u64>, StoreError> {
        match fs::symlink_metadata(path) {
            Ok(meta) if meta.is_file() => Ok(Some(meta.len())),
            Ok(_) => Ok(None),
            Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(err) => Err(io_error("inspect", path)(err)),
        }
    }
}

/// Splits a valid id into creation time, pid and sanitized comm; `None` for anything the store
/// could not have produced, in particular anything holding a path separator or `..`.
pub fn parse_id(id: &str) -> Option<(u64, u32, &str)> {
    if id.is_empty() || id.len() > MAX_ID_LEN || !id.bytes().all(is_id_byte) {
        return None;
    }
    let mut parts = id.splitn(3, '-');
    let millis = parts.next()?;
    let pid = parts.next()?;
    let comm = parts.next()?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(millis) || !digits(pid) || comm.is_empty() || comm.len() > MAX_COMM_LEN {
        return None;
    }
    Some((millis.parse().ok()?, pid.parse().ok()?, comm))
}

/// The bytes an id may hold: no `/`, no `.`, nothing a shell or URL would need quoted.
fn is_id_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
}

/// A command name reduced to id bytes: anything else becomes `_`; empty becomes `unknown`.
fn sanitize_comm(comm: &str) -> String {
    let sanitized: String = comm
        .chars()
        .take(MAX_COMM_LEN)
        .map(|c| {
            if c.is_ascii() && is_id_byte(c as u8) {
                c
            } else {
                '_'
            }
        })
        .collect();
    if sanitized.is_empty() {
        "unknown".to_owned()
    } else {
        sanitized
    }
}

fn unix_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn read_existing(path: &Path, id: &str) -> Result<Vec<u8>, StoreError> {
    fs::read(path).map_err(|err| {
        if err.kind() == io::ErrorKind::NotFound {
            StoreError::NotFound(id.to_owned())
        } else {
            io_error("read", path)(err)
        }
    })
}

fn io_error(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> StoreError {
    let path = path.to_path_buf();
    move |source| StoreError::Io {
        action,
        path,
        source,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::report::pprof::decode_pprof;
    use crate::report::{Frame, StackReport, Totals};

    fn report(pid: u32, comm: &str, stacks: usize) -> Report {
        let stacks = (0..stacks)
            .map(|i| StackReport {
                bytes: 1024 + i as u64,
                allocations: 1,
                growth_bytes_per_second: 3.5,
                oldest_age_seconds: 2.0,
                leaking: i % 2 == 0,
                frames: vec![Frame {
                    address: 0x1000 + i as u64,
                    symbol: Some(format!("function_number_{i}")),
                    module: Some("/usr/bin/app".to_owned()),
                    file: None,
                    line: None,
                    inlined: false,
                    ..Default::default()
                }],
                ..StackReport::default()
            })
            .collect();
        Report {
            notes: vec!["a note".to_owned()],
            totals: Totals {
                outstanding_bytes: 4096,
                outstanding_allocations: 4,
            },
            events: BTreeMap::from([("allocs".to_owned(), 10)]),
            ..crate::testing::report(pid, comm, stacks)
        }
    }

    /// Saves `report` under a new id, which it gives; panics unless it was written.
    fn saved(store: &ReportStore, report: Report) -> String {
        let (id, written) = store.save(report, None);
        written.unwrap();
        id
    }

    fn limits(max_count: usize, max_bytes: u64) -> ReportsConfig {
        ReportsConfig {
            max_count,
            max_bytes,
        }
    }

    #[test]
    fn round_trip() {
        let state = tempfile::tempdir().unwrap();
        let store = ReportStore::open(state.path(), ReportsConfig::default()).unwrap();
        let mode = fs::metadata(store.dir()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);

        let original = report(42, "my app/x", 3);
        let id = saved(&store, original.clone());
        let (millis, pid, comm) = parse_id(&id).unwrap();
        assert!(millis > 1_600_000_000_000, "{id}");
        assert_eq!((pid, comm), (42, "my_app_x"));

        assert_eq!(store.read(&id).unwrap(), original);
        let profile = decode_pprof(&store.read_pprof(&id).unwrap()).unwrap();
        assert_eq!(profile.sample.len(), 3);
        let (latest_id, latest) = store.latest_for(42, None).unwrap().unwrap();
        assert_eq!((latest_id.as_str(), &*latest), (id.as_str(), &original));
        assert!(store.latest_for(43, None).unwrap().is_none());

        let listed = store.list().unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].id, id);
        assert_eq!(listed[0].created_unix_ms, millis);
        let on_disk = fs::metadata(store.path(&id, JSON_SUFFIX)).unwrap().len()
            + fs::metadata(store.path(&id, PPROF_SUFFIX)).unwrap().len();
        assert_eq!(listed[0].bytes, on_disk);

        // A second report of the same process, in the same millisecond or not, gets its own
        // id and becomes the latest; reopening the store finds both.
        let newer = report(42, "my app/x", 1);
        let newer_id = saved(&store, newer);
        assert_ne!(newer_id, id);
        drop(store);
        let store = ReportStore::open(state.path(), ReportsConfig::default()).unwrap();
        assert_eq!(store.latest_for(42, None).unwrap().unwrap().0, newer_id);
        let ids: Vec<String> = store.list().unwrap().into_iter().map(|m| m.id).collect();
        assert_eq!(ids, [newer_id.clone(), id.clone()]);
        // The newest of each method: a page-fault report saved after both.
        let faults = Report {
            method: Method::PageFaults,
            ..report(42, "my app/x", 2)
        };
        let faults_id = saved(&store, faults);
        let latest = |method| store.latest_for(42, method).unwrap().map(|(id, _)| id);
        assert_eq!(latest(None), Some(faults_id.clone()));
        assert_eq!(latest(Some(Method::PageFaults)), Some(faults_id));
        assert_eq!(latest(Some(Method::Allocations)), Some(newer_id));
        assert_eq!(
            store.latest_for(43, Some(Method::PageFaults)).unwrap(),
            None
        );
    }

    #[test]
    fn retention_by_count_removes_oldest_first() {
        let state = tempfile::tempdir().unwrap();
        let store = ReportStore::open(state.path(), limits(3, u64::MAX)).unwrap();
        let ids: Vec<String> = (0..5)
            .map(|pid| saved(&store, report(pid, "app", 1)))
            .collect();
        let listed: Vec<String> = store.list().unwrap().into_iter().map(|m| m.id).collect();
        assert_eq!(listed, [ids[4].clone(), ids[3].clone(), ids[2].clone()]);
        assert!(matches!(store.read(&ids[0]), Err(StoreError::NotFound(_))));
        assert!(matches!(
            store.read_pprof(&ids[1]),
            Err(StoreError::NotFound(_))
        ));
        assert!(!store.path(&ids[0], PPROF_SUFFIX).exists());
    }

    #[test]
    fn retention_by_bytes_keeps_the_newest_report() {
        let state = tempfile::tempdir().unwrap();
        let probe =
            ReportStore::open(&state.path().join("probe"), ReportsConfig::default()).unwrap();
        saved(&probe, report(1, "app", 20));
        let size = probe.list().unwrap()[0].bytes;

        // Room for two reports of this size, not three.
        let store = ReportStore::open(state.path(), limits(100, size * 2 + size / 2)).unwrap();
        let ids: Vec<String> = (0..4)
            .map(|pid| saved(&store, report(pid, "app", 20)))
            .collect();
        let listed: Vec<String> = store.list().unwrap().into_iter().map(|m| m.id).collect();
        assert_eq!(listed, [ids[3].clone(), ids[2].clone()]);

        // A report larger than the whole budget is still kept, alone.
        let tiny = ReportStore::open(state.path(), limits(100, 10)).unwrap();
        let big = saved(&tiny, report(9, "big", 50));
        let listed: Vec<String> = tiny.list().unwrap().into_iter().map(|m| m.id).collect();
        assert_eq!(listed, [big.as_str()]);
        assert_eq!(tiny.read(&big).unwrap().pid, 9);
    }

    #[test]
    fn crash_leftovers_are_ignored_and_cleaned() {
        let state = tempfile::tempdir().unwrap();
        let store = ReportStore::open(state.path(), ReportsConfig::default()).unwrap();
        let id = saved(&store, report(7, "app", 1));
        // A crash while writing a JSON file, and one between the two renames.
        let temp = store
            .dir()
            .join(format!("{TEMP_PREFIX}1700000000000-8-app.json"));
        fs::write(&temp, b"{\"half\":").unwrap();
        let orphan = store.dir().join("1700000000001-9-app.pb.gz");
        fs::write(&orphan, b"gz").unwrap();
        let stray = store.dir().join("notes.txt");
        fs::write(&stray, b"not ours").unwrap();

        let ids: Vec<String> = store.list().unwrap().into_iter().map(|m| m.id).collect();
        assert_eq!(ids, [id.as_str()]);
        assert!(store.latest_for(8, None).unwrap().is_none());
        assert!(matches!(
            store.read_pprof("1700000000001-9-app"),
            Err(StoreError::NotFound(_))
        ));

        drop(store);
        let store = ReportStore::open(state.path(), ReportsConfig::default()).unwrap();
        assert!(!temp.exists());
        assert!(!orphan.exists());
        assert!(stray.exists(), "files that are not ours are left alone");
        assert_eq!(store.read(&id).unwrap().pid, 7);
    }

    #[test]
    fn bad_ids_are_rejected() {
        let state = tempfile::tempdir().unwrap();
        let store = ReportStore::open(state.path(), ReportsConfig::default()).unwrap();
        // A file outside the directory that a traversal would reach.
        fs::write(state.path().join("1-2-x.json"), b"{}").unwrap();
        for bad in [
            "",
            "..",
            "../1-2-x",
            "1-2-../../x",
            "1-2-x/../../1-2-x",
            "1-2-a/b",
            "/etc/passwd",
            "1-2-x.json",
            ".tmp-1-2-x",
            "1-2-",
            "1--x",
            "x-2-y",
            "1-2",
            "99999999999999999999999-2-x",
            "1-2-x\0",
        ] {
            assert!(
                matches!(store.read(bad), Err(StoreError::InvalidId(_))),
                "{bad:?}"
            );
            assert!(
                matches!(store.read_pprof(bad), Err(StoreError::InvalidId(_))),
                "{bad:?}"
            );
        }
        assert!(matches!(store.read("1-2-x"), Err(StoreError::NotFound(_))));
        assert_eq!(parse_id("17-42-a_b-c"), Some((17, 42, "a_b-c")));
    }

    #[test]
    fn comm_is_sanitized() {
        assert_eq!(sanitize_comm("nginx: worker"), "nginx__worker");
        assert_eq!(sanitize_comm("../.."), "_____");
        assert_eq!(sanitize_comm(""), "unknown");
        assert_eq!(sanitize_comm("é"), "_");
        assert_eq!(sanitize_comm(&"a".repeat(100)).len(), MAX_COMM_LEN);
    }

    #[test]
    fn corrupt_report_is_a_decode_error() {
        let state = tempfile::tempdir().unwrap();
        let store = ReportStore::open(state.path(), ReportsConfig::default()).unwrap();
        fs::write(store.path("5-6-app", JSON_SUFFIX), b"not json").unwrap();
        let err = store.read("5-6-app").unwrap_err();
        assert!(matches!(err, StoreError::Decode { .. }), "{err}");
        assert!(matches!(
            store.latest_for(6, None),
            Err(StoreError::Decode { .. })
        ));
    }

    #[test]
    fn saving_under_an_id_replaces_the_report() {
        let state = tempfile::tempdir().unwrap();
        let store = ReportStore::open(state.path(), ReportsConfig::default()).unwrap();
        let id = store.new_id(42, "app");
        let interim = Report {
            interim: true,
            ..report(42, "app", 1)
        };
        let (same, written) = store.save(interim, Some(&id));
        written.unwrap();
        assert_eq!(same, id);
        assert!(store.read(&id).unwrap().interim);
        let (same, written) = store.save(report(42, "app", 3), Some(&id));
        written.unwrap();
        assert_eq!(same, id);
        let listed: Vec<String> = store.list().unwrap().into_iter().map(|m| m.id).collect();
        assert_eq!(listed, [id.as_str()]);
        drop(store);
        let store = ReportStore::open(state.path(), ReportsConfig::default()).unwrap();
        let back = store.read(&id).unwrap();
        assert!(!back.interim && back.stacks.len() == 3);
        assert_ne!(store.new_id(42, "app"), id);
    }

    #[test]
    fn reports_that_cannot_be_written_are_served_from_memory_and_retried() {
        let state = tempfile::tempdir().unwrap();
        let store = ReportStore::open(state.path(), ReportsConfig::default()).unwrap();
        let kept = saved(&store, report(1, "kept", 1));
        // The directory goes away (a real failure of the file system calls).
        fs::remove_dir_all(store.dir()).unwrap();
        let (id, written) = store.save(report(2, "lost", 2), None);
        let err = written.unwrap_err();
        assert!(
            matches!(
                err,
                StoreError::Io {
                    action: "create",
                    ..
                }
            ),
            "{err}"
        );
        let health = store.health();
        assert_eq!((health.errors_total, health.unstored), (1, 1));
        assert!(
            health
                .last_error
                .unwrap()
                .contains("No such file or directory")
        );
        // Served from memory, in every format.
        let (latest, held) = store.latest_for(2, None).unwrap().unwrap();
        assert_eq!((latest.as_str(), held.stacks.len()), (id.as_str(), 2));
        assert_eq!(store.read(&id).unwrap().comm, "lost");
        let profile = decode_pprof(&store.read_pprof(&id).unwrap()).unwrap();
        assert_eq!(profile.sample.len(), 2);
        assert_eq!(store.read(&kept).unwrap().comm, "kept");
        // Retried until the disk takes it again.
        let outcomes = store.retry();
        assert_eq!(outcomes.len(), 1);
        assert!(outcomes[0].1.is_err());
        assert_eq!(store.health().errors_total, 2);
        fs::create_dir(store.dir()).unwrap();
        let outcomes = store.retry();
        assert_eq!(outcomes.len(), 1);
        assert_eq!(outcomes[0].0, id);
        outcomes[0].1.as_ref().unwrap();
        assert_eq!(store.health().unstored, 0);
        assert!(store.retry().is_empty());
        drop(store);
        let store = ReportStore::open(state.path(), ReportsConfig::default()).unwrap();
        assert_eq!(store.read(&id).unwrap().comm, "lost");
    }

    #[test]
    fn memory_holds_the_latest_report_of_a_bounded_number_of_processes() {
        let state = tempfile::tempdir().unwrap();
        let store = ReportStore::open(state.path(), ReportsConfig::default()).unwrap();
        fs::remove_dir_all(store.dir()).unwrap();
        let ids: Vec<String> = (0..MAX_HELD as u32 + 8)
            .map(|pid| store.save(report(pid, "app", 1), None).0)
            .collect();
        assert_eq!(store.health().unstored, MAX_HELD as u64);
        assert!(matches!(store.read(&ids[0]), Err(StoreError::NotFound(_))));
        assert_eq!(store.read(&ids[8]).unwrap().pid, 8);
        // A newer report of a process replaces its held one.
        let newer = store.save(report(20, "app", 4), None).0;
        assert_eq!(store.latest_for(20, None).unwrap().unwrap().0, newer);
        assert_eq!(store.health().unstored, MAX_HELD as u64);
        assert!(matches!(store.read(&ids[20]), Err(StoreError::NotFound(_))));
    }
}
