//! The unwind tables in the kernel maps: the rows of every object some traced process maps
//! (built by [`rows`](super::rows), one contiguous range of the rows map per object, shared by
//! every process that maps the same file), and per traced process its executable mappings with
//! their objects' ranges, which the kernel programs' stack walk searches.
//!
//! A process's mappings are published before its probes attach and again whenever they change
//! (dlopen, dlclose, exec: the sessions pass every `/proc/PID/maps` they read), or when a walk
//! met an address it could not place (the kernel programs then ask, once until answered; at
//! most one answer a second per process). An object's rows stay while a process maps it and a
//! minute after; the least recently used unused objects make room when the rows map is full,
//! and an object that still does not fit (or whose rows cannot be built) gets one row that
//! stops the walk there, so its stacks are marked truncated rather than wrong.
//!
//! Uses the procfs reader and the row builder; knows nothing of sessions or reports.

use std::collections::{HashMap as StdHashMap, HashSet};
use std::time::{Duration, Instant};

use aya::maps::{Array, HashMap, MapData, MapError};
use aya::sys::SyscallError;
use log::{debug, warn};
use monitor_common::{ExecMapping, MAX_EXEC_MAPPINGS, ProcMappings, UnwindRow};
use object::{Object as _, ObjectSegment as _};

use super::rows::{self, Source};
use crate::watch::procfs::{self, MapEntry, ProcError};

/// How long an object no traced process maps keeps its rows.
const IDLE_LIFETIME: Duration = Duration::from_secs(60);
/// The least time between two publications a walk asked for, per process.
const REQUEST_INTERVAL: Duration = Duration::from_secs(1);
/// Row 0 of the rows map stops a walk: objects without a usable table point at it.
const STOP_ROW: u32 = 0;

/// Why a process's unwind tables could not be published.
#[derive(Debug, thiserror::Error)]
pub enum TablesError {
    /// A kernel map operation failed.
    #[error("{what} failed: {source}")]
    Map {
        /// What was being done.
        what: &'static str,
        /// What aya said.
        source: MapError,
    },
    /// The process's mappings could not be read.
    #[error(transparent)]
    Proc(#[from] ProcError),
}

/// Whether a map operation failed only because the key was not there (aya reports a deletion
/// of a missing key as the system call's ENOENT).
pub fn is_missing(error: &MapError) -> bool {
    match error {
        MapError::KeyNotFound => true,
        MapError::SyscallError(SyscallError { io_error, .. }) => {
            io_error.raw_os_error() == Some(libc::ENOENT)
        }
        _ => false,
    }
}

fn map_error(what: &'static str) -> impl FnOnce(MapError) -> TablesError {
    move |source| TablesError::Map { what, source }
}

/// An object, as `/proc/PID/maps` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct ObjectKey {
    dev: (u32, u32),
    inode: u64,
}

/// One `PT_LOAD` segment of an object.
#[derive(Debug, Clone, Copy)]
struct Segment {
    file_offset: u64,
    address: u64,
    file_size: u64,
}

/// An object's rows in the kernel map.
#[derive(Debug)]
struct LoadedObject {
    /// Its range in the rows map; `None`: it points at the stop row.
    range: Option<(u32, u32)>,
    segments: Vec<Segment>,
    path: String,
    /// Processes that map it now.
    users: usize,
    /// Since when no process maps it.
    idle_since: Option<Instant>,
}

/// What was last published for a process.
#[derive(Debug, Default)]
struct Published {
    /// Its executable file mappings: (start, end, offset, object).
    mappings: Vec<(u64, u64, u64, ObjectKey)>,
    objects: HashSet<ObjectKey>,
    at: Option<Instant>,
}

/// Counts for the status and the metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TablesUsage {
    /// Rows of objects in the rows map.
    pub rows: u64,
    /// The rows map's capacity.
    pub capacity: u64,
    /// Objects with rows loaded.
    pub objects: u64,
    /// Processes with published mappings.
    pub processes: u64,
}

/// The unwind tables, see the module documentation.
pub struct UnwindTables {
    rows: Array<MapData, UnwindRow>,
    mappings: HashMap<MapData, u32, ProcMappings>,
    wanted: HashMap<MapData, u32, u32>,
    capacity: u32,
    /// Free ranges of the rows map.
    free: FreeRanges,
    objects: StdHashMap<ObjectKey, LoadedObject>,
    processes: StdHashMap<u32, Published>,
    /// Processes whose request waits for [`REQUEST_INTERVAL`].
    pending: HashSet<u32>,
    /// The generation of the last publication.
    generation: u32,
}

impl std::fmt::Debug for UnwindTables {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UnwindTables")
            .field("usage", &self.usage())
            .finish_non_exhaustive()
    }
}

impl UnwindTables {
    /// Takes over the three maps (rows, process mappings, walk requests) and writes the stop
    /// row.
    pub fn new(
        mut rows: Array<MapData, UnwindRow>,
        mappings: HashMap<MapData, u32, ProcMappings>,
        wanted: HashMap<MapData, u32, u32>,
    ) -> Result<Self, TablesError> {
        let capacity = rows.len();
        rows.set(STOP_ROW, UnwindRow::default(), 0)
            .map_err(map_error("writing the stop row"))?;
        Ok(Self {
            rows,
            mappings,
            wanted,
            capacity,
            free: FreeRanges(vec![(1, capacity.saturating_sub(1))]),
            objects: StdHashMap::new(),
            processes: StdHashMap::new(),
            pending: HashSet::new(),
            generation: 0,
        })
    }

    /// Publishes the executable mappings of `pid` in `maps` (its `/proc/PID/maps`) unless they
    /// are what was published last, loading the rows of objects not loaded yet.
    pub fn publish(&mut self, pid: u32, maps: &[MapEntry]) -> Result<(), TablesError> {
        let mut current: Vec<(u64, u64, u64, ObjectKey)> = maps
            .iter()
            .filter(|entry| entry.executable && entry.is_file())
            .map(|entry| {
                let key = ObjectKey {
                    dev: (entry.dev_major, entry.dev_minor),
                    inode: entry.inode,
                };
                (entry.start, entry.end, entry.offset, key)
            })
            .collect();
        current.sort_by_key(|mapping| mapping.0);
        if current.len() > MAX_EXEC_MAPPINGS {
            debug!(
                "pid {pid}: {} executable mappings, unwinding through the first {MAX_EXEC_MAPPINGS}",
                current.len()
            );
            current.truncate(MAX_EXEC_MAPPINGS);
        }
        if self
            .processes
            .get(&pid)
            .is_some_and(|published| published.mappings == current)
        {
            return Ok(());
        }
        for &(start, end, _, key) in &current {
            if !self.objects.contains_key(&key) {
                let path = maps
                    .iter()
                    .find(|entry| entry.start == start)
                    .and_then(|entry| entry.path.clone())
                    .unwrap_or_default();
                let object = self.load(pid, start, end, path);
                self.objects.insert(key, object);
            }
        }
        self.generation = self.generation.wrapping_add(1);
        let mut value = ProcMappings {
            len: current.len() as u32,
            generation: self.generation,
            starts: [i64::MAX as u64; MAX_EXEC_MAPPINGS],
            mappings: [ExecMapping::default(); MAX_EXEC_MAPPINGS],
        };
        for (index, &(start, end, offset, key)) in current.iter().enumerate() {
            let Some(object) = self.objects.get(&key) else {
                continue;
            };
            let (rows_first, rows_len) = object.range.unwrap_or((STOP_ROW, 1));
            value.starts[index] = start;
            value.mappings[index] = ExecMapping {
                start,
                end,
                bias: bias(&object.segments, start, offset),
                rows_first,
                rows_len,
            };
        }
        self.mappings
            .insert(pid, value, 0)
            .map_err(map_error("publishing a process's mappings"))?;
        let objects: HashSet<ObjectKey> = current.iter().map(|mapping| mapping.3).collect();
        let previous = self.processes.remove(&pid).unwrap_or_default();
        for key in objects.difference(&previous.objects) {
            if let Some(object) = self.objects.get_mut(key) {
                object.users += 1;
                object.idle_since = None;
            }
        }
        self.release(previous.objects.difference(&objects).copied().collect());
        self.processes.insert(
            pid,
            Published {
                mappings: current,
                objects,
                at: Some(Instant::now()),
            },
        );
        Ok(())
    }

    /// A walk of `pid` asked for its mappings again: publishes them now, or within a second of
    /// the last publication (see [`UnwindTables::maintain`]).
    pub fn request(&mut self, pid: u32) -> Result<(), TablesError> {
        let recent = self
            .processes
            .get(&pid)
            .and_then(|published| published.at)
            .is_some_and(|at| at.elapsed() < REQUEST_INTERVAL);
        if recent {
            self.pending.insert(pid);
            return Ok(());
        }
        self.answer(pid)
    }

    /// Publishes `pid`'s mappings afresh and clears its request.
    fn answer(&mut self, pid: u32) -> Result<(), TablesError> {
        self.pending.remove(&pid);
        if let Some(published) = self.processes.get_mut(&pid) {
            // Republish even if unchanged: an object's rows may have been loaded since.
            published.mappings.clear();
        }
        let result = procfs::read_maps(pid)
            .map_err(TablesError::from)
            .and_then(|maps| self.publish(pid, &maps));
        if let Err(err) = self.wanted.remove(&pid)
            && !is_missing(&err)
        {
            debug!("clearing the unwind request of pid {pid}: {err}");
        }
        result
    }

    /// Answers the requests that waited long enough, and frees the rows of objects no process
    /// mapped for a minute.
    pub fn maintain(&mut self) {
        let due: Vec<u32> = self
            .pending
            .iter()
            .copied()
            .filter(|pid| {
                self.processes
                    .get(pid)
                    .and_then(|published| published.at)
                    .is_none_or(|at| at.elapsed() >= REQUEST_INTERVAL)
            })
            .collect();
        for pid in due {
            if let Err(err) = self.answer(pid) {
                debug!("publishing the mappings of pid {pid}: {err}");
            }
        }
        let idle: Vec<ObjectKey> = self
            .objects
            .iter()
            .filter(|(_, object)| {
                object
                    .idle_since
                    .is_some_and(|since| since.elapsed() >= IDLE_LIFETIME)
            })
            .map(|(key, _)| *key)
            .collect();
        for key in idle {
            self.unload(key);
        }
    }

    /// Stops unwinding `pid`: its mappings leave the kernel map and its objects lose a user.
    pub fn forget(&mut self, pid: u32) {
        if let Err(err) = self.wanted.remove(&pid)
            && !is_missing(&err)
        {
            debug!("clearing the unwind request of pid {pid}: {err}");
        }
        if let Err(err) = self.mappings.remove(&pid)
            && !is_missing(&err)
        {
            debug!("removing the mappings of pid {pid}: {err}");
        }
        self.pending.remove(&pid);
        if let Some(published) = self.processes.remove(&pid) {
            self.release(published.objects.into_iter().collect());
        }
    }

    /// What the tables hold.
    pub fn usage(&self) -> TablesUsage {
        let free = self.free.total();
        TablesUsage {
            // The stop row is not counted: the map is empty when no object has rows.
            rows: u64::from(self.capacity).saturating_sub(free + 1),
            capacity: u64::from(self.capacity),
            objects: self.objects.len() as u64,
            processes: self.processes.len() as u64,
        }
    }

    fn release(&mut self, keys: Vec<ObjectKey>) {
        for key in keys {
            if let Some(object) = self.objects.get_mut(&key) {
                object.users = object.users.saturating_sub(1);
                if object.users == 0 {
                    object.idle_since = Some(Instant::now());
                }
            }
        }
    }

    /// Builds and writes the rows of the object mapped at `start..end` in `pid`.
    fn load(&mut self, pid: u32, start: u64, end: u64, path: String) -> LoadedObject {
        let mut object = LoadedObject {
            range: None,
            segments: Vec::new(),
            path,
            users: 0,
            idle_since: Some(Instant::now()),
        };
        // map_files opens exactly the mapped file, in whatever mount namespace, even deleted.
        let file = format!("/proc/{pid}/map_files/{start:x}-{end:x}");
        let data = match std::fs::File::open(&file).and_then(|file| {
            // SAFETY: a read-only private mapping; a file truncated under it could fault, the
            // same risk every ELF reader that maps its input takes.
            unsafe { memmap2::Mmap::map(&file) }
        }) {
            Ok(data) => data,
            Err(err) => {
                debug!(
                    "{}: cannot read it to unwind through it: {err}",
                    object.path
                );
                return object;
            }
        };
        let started = Instant::now();
        let built = match rows::build(&data) {
            Ok(built) => built,
            Err(err) => {
                debug!("{}: no unwind rows: {err}", object.path);
                return object;
            }
        };
        if let Ok(file) = object::File::parse(&*data) {
            object.segments = file
                .segments()
                .map(|segment| {
                    let (file_offset, file_size) = segment.file_range();
                    Segment {
                        file_offset,
                        address: segment.address(),
                        file_size,
                    }
                })
                .collect();
        }
        if built.source == Source::NoCode || built.rows.is_empty() {
            return object;
        }
        let Some(first) = self.allocate(built.rows.len()) else {
            warn!(
                "the unwind rows map is full ({} rows): stacks through {} are cut short (raise \
                 trace.max_unwind_rows)",
                self.capacity, object.path
            );
            return object;
        };
        for (index, row) in built.rows.iter().enumerate() {
            if let Err(err) = self.rows.set(first + index as u32, row, 0) {
                warn!("writing the unwind rows of {}: {err}", object.path);
                self.free.release(first, built.rows.len() as u32);
                return object;
            }
        }
        debug!(
            "{}: {} unwind rows ({:?}, {} unsupported) in {:.1} ms",
            object.path,
            built.rows.len(),
            built.source,
            built.unsupported,
            started.elapsed().as_secs_f64() * 1e3
        );
        object.range = Some((first, built.rows.len() as u32));
        object
    }

    /// A free range of `len` rows, evicting unused objects (least recently used first) until one
    /// fits.
    fn allocate(&mut self, len: usize) -> Option<u32> {
        let len = u32::try_from(len).ok()?;
        loop {
            if let Some(first) = self.free.take(len) {
                return Some(first);
            }
            let victim = self
                .objects
                .iter()
                .filter(|(_, object)| object.users == 0 && object.range.is_some())
                .min_by_key(|(_, object)| object.idle_since)
                .map(|(key, _)| *key)?;
            self.unload(victim);
        }
    }

    fn unload(&mut self, key: ObjectKey) {
        if let Some(object) = self.objects.remove(&key)
            && let Some((first, len)) = object.range
        {
            debug!("{}: unwind rows released", object.path);
            self.free.release(first, len);
        }
    }
}

/// The free ranges of the rows map, (first, length), sorted and coalesced.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FreeRanges(Vec<(u32, u32)>);

impl FreeRanges {
    /// Rows free in all.
    fn total(&self) -> u64 {
        self.0.iter().map(|&(_, len)| u64::from(len)).sum()
    }

    /// The first of `len` rows taken from the first range that holds them.
    fn take(&mut self, len: u32) -> Option<u32> {
        let index = self.0.iter().position(|&(_, free)| free >= len)?;
        let (first, free) = self.0[index];
        if free == len {
            self.0.remove(index);
        } else {
            self.0[index] = (first + len, free - len);
        }
        Some(first)
    }

    /// Gives `len` rows from `first` back, joining them to their free neighbours.
    fn release(&mut self, first: u32, len: u32) {
        let ranges = &mut self.0;
        let index = ranges.partition_point(|&(start, _)| start < first);
        ranges.insert(index, (first, len));
        if index + 1 < ranges.len() && ranges[index].0 + ranges[index].1 == ranges[index + 1].0 {
            ranges[index].1 += ranges[index + 1].1;
            ranges.remove(index + 1);
        }
        if index > 0 && ranges[index - 1].0 + ranges[index - 1].1 == ranges[index].0 {
            ranges[index - 1].1 += ranges[index].1;
            ranges.remove(index);
        }
    }
}

/// What to subtract from an address of the mapping at `start` (of the file from `offset`) to
/// get the object's own address: the segment holding `offset` says which address that byte
/// has. Without segments (not an ELF file the reader understood), the file offset stands in.
fn bias(segments: &[Segment], start: u64, offset: u64) -> u64 {
    let page = |value: u64| value & !0xfff;
    let address = segments
        .iter()
        .find(|segment| {
            page(segment.file_offset) <= offset
                && offset < segment.file_offset + segment.file_size.max(1)
        })
        .map_or(offset, |segment| {
            segment
                .address
                .wrapping_add(offset)
                .wrapping_sub(segment.file_offset)
        });
    start.wrapping_sub(address)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_ranges_are_taken_first_fit_and_coalesce_when_given_back() {
        let mut free = FreeRanges(vec![(1, 99)]);
        let a = free.take(10).unwrap();
        let b = free.take(20).unwrap();
        let c = free.take(30).unwrap();
        assert_eq!((a, b, c), (1, 11, 31));
        assert_eq!(free.total(), 39);
        assert_eq!(free.take(40), None);
        free.release(b, 20);
        // The hole left by b is reused first.
        assert_eq!(free.take(5), Some(11));
        free.release(11, 5);
        free.release(a, 10);
        free.release(c, 30);
        assert_eq!(
            free,
            FreeRanges(vec![(1, 99)]),
            "every range joins back into one"
        );
    }

    #[test]
    fn bias_follows_the_segment_that_holds_the_offset() {
        // A PIE's text segment: file offset 0x1000 at address 0x1000, mapped at 0x5555_0000_1000.
        let pie = [
            Segment {
                file_offset: 0,
                address: 0,
                file_size: 0x800,
            },
            Segment {
                file_offset: 0x1000,
                address: 0x1000,
                file_size: 0x5000,
            },
        ];
        assert_eq!(bias(&pie, 0x5555_0000_1000, 0x1000), 0x5555_0000_0000);
        // A non-PIE executable: text at 0x401000 from offset 0x1000, mapped where it says.
        let fixed = [Segment {
            file_offset: 0x1000,
            address: 0x40_1000,
            file_size: 0x2000,
        }];
        assert_eq!(bias(&fixed, 0x40_1000, 0x1000), 0);
        // A segment whose offset is not page-aligned: mapped from the page below it.
        let unaligned = [Segment {
            file_offset: 0x1f40,
            address: 0x2f40,
            file_size: 0x100,
        }];
        assert_eq!(
            bias(&unaligned, 0x7000_0000_1000, 0x1000),
            0x7000_0000_1000 - 0x2000
        );
    }
}
