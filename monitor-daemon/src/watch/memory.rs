//! What a process's memory is made of: each mapping of `/proc/PID/smaps` given to one class
//! ([`Memory`]: heap, other anonymous mappings, thread stacks, files, shared memory, swap), a
//! history of such samples and the growth of each class over it.
//!
//! # The classes
//!
//! A mapping's resident bytes go to one class (the written pages of a private file mapping,
//! `Anonymous` in smaps, go to `anon_mappings`, the rest of it to `file`), and its swapped-out
//! bytes to `swap`. In order:
//!
//! 1. `[heap]` (the program break) is `heap`; `[stack]` is `thread_stacks`.
//! 2. Shared memory (`shmem`): shared anonymous mappings (`/dev/zero`), `memfd`s, files in
//!    `/dev/shm` and System V segments (`/SYSV...`).
//! 3. Other mappings of files, and `[vdso]`-like pseudo mappings, are `file`.
//! 4. An anonymous mapping (`[anon:NAME]` included) that holds a thread's stack pointer (read
//!    from `/proc/PID/task/TID/syscall` for threads blocked at the time, at most
//!    [`MAX_STACK_READS`] of them) is `thread_stacks`.
//! 5. glibc's allocator is `heap`: the heaps of its other arenas (64 MiB-aligned mappings that
//!    start with glibc's `heap_info`, whose first word points at its arena, a few dozen bytes
//!    into the first heap of that arena) and the blocks it mapped on its own (mappings that start with the
//!    chunk header of a mapped chunk that fits them). The first 16 bytes of each anonymous
//!    mapping are read with `process_vm_readv`.
//! 6. A writable anonymous mapping right above an inaccessible one is a thread stack above its
//!    guard page (how glibc lays out the stacks of threads, running ones and the stacks it keeps
//!    for reuse included): `thread_stacks`.
//! 7. Every other anonymous mapping is `anon_mappings`: memory the program mapped itself, or an
//!    allocator other than glibc's (jemalloc, tcmalloc, mimalloc, Go, a JIT).
//!
//! Adjacent anonymous mappings with the same permissions are merged by the kernel into one:
//! blocks glibc mapped one after the other are one mapping, judged by its first header, and a
//! program's own mapping merged after one of them counts as heap too.

use std::collections::VecDeque;

use crate::model::{Memory, MemoryClass};
use crate::watch::procfs::{self, Pid, ProcError, SmapsEntry};
use crate::watch::trend;

/// glibc's arenas other than the main one are `HEAP_MAX_SIZE` (64 MiB on 64-bit) mappings
/// aligned to their size.
const GLIBC_ARENA_ALIGN: u64 = 64 << 20;
/// Most bytes of glibc's `heap_info` at the start of an arena's heap (32 before glibc 2.35, 48
/// since), after which the first heap of an arena holds the arena itself.
const GLIBC_HEAP_INFO_MAX: u64 = 128;
/// glibc's flag of a chunk mapped on its own.
const GLIBC_IS_MMAPPED: u64 = 0x2;
/// The three flag bits of a glibc chunk size.
const GLIBC_SIZE_FLAGS: u64 = 0x7;
/// Samples a class's growth is fitted over at most (evenly spaced).
pub const SLOPE_POINTS: usize = 64;
/// Most threads whose stack pointers are read per sample; the stacks of the others are found
/// by their guard page.
pub const MAX_STACK_READS: usize = 512;

/// Bytes per class at one sample.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClassBytes {
    /// See [`Memory::heap`].
    pub heap: u64,
    /// See [`Memory::anon_mappings`].
    pub anon_mappings: u64,
    /// See [`Memory::thread_stacks`].
    pub thread_stacks: u64,
    /// See [`Memory::file`].
    pub file: u64,
    /// See [`Memory::shmem`].
    pub shmem: u64,
    /// See [`Memory::swap`].
    pub swap: u64,
}

impl ClassBytes {
    fn values(&self) -> [u64; 6] {
        [
            self.heap,
            self.anon_mappings,
            self.thread_stacks,
            self.file,
            self.shmem,
            self.swap,
        ]
    }
}

/// The class of a mapping (see the module documentation), before its written private file
/// pages are split off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    Heap,
    AnonMappings,
    ThreadStacks,
    File,
    Shmem,
}

/// Whether the mapping is shared memory rather than a file.
fn is_shmem(entry: &SmapsEntry) -> bool {
    let path = entry.map.path.as_deref().unwrap_or("");
    ["/memfd:", "/dev/shm/", "/SYSV"]
        .iter()
        .any(|prefix| path.starts_with(prefix))
        || (entry.map.shared && (path.is_empty() || path.starts_with("/dev/zero")))
}

/// Whether the mapping is anonymous memory (named or not).
fn is_anonymous(entry: &SmapsEntry) -> bool {
    match entry.map.path.as_deref() {
        None => true,
        Some(path) => path.starts_with("[anon:"),
    }
}

/// Whether the 16 bytes at the start of a mapping of `len` bytes are the header of a chunk glibc
/// mapped on its own: `prev_size` (the alignment correction) and the size with `IS_MMAPPED`.
pub fn is_glibc_mapped_chunk(header: [u64; 2], len: u64) -> bool {
    let [correction, size] = header;
    let chunk = size & !GLIBC_SIZE_FLAGS;
    size & GLIBC_IS_MMAPPED != 0
        && chunk >= 4096
        && correction < 4096
        && (chunk + correction).is_multiple_of(4096)
        && chunk + correction <= len
}

/// Whether anonymous mapping `i` of `entries` is the heap of a glibc arena, given the first
/// two words of each mapping.
fn is_glibc_arena_heap(
    entries: &[SmapsEntry],
    i: usize,
    header: &impl Fn(usize) -> Option<[u64; 2]>,
) -> bool {
    let aligned = |entry: &SmapsEntry| entry.map.start.is_multiple_of(GLIBC_ARENA_ALIGN);
    let Some([arena, _]) = header(i).filter(|_| aligned(&entries[i])) else {
        return false;
    };
    let first_heap = arena & !(GLIBC_ARENA_ALIGN - 1);
    arena - first_heap < GLIBC_HEAP_INFO_MAX
        && entries
            .iter()
            .any(|entry| entry.map.start == first_heap && is_anonymous(entry))
}

/// The class of mapping `i` of `entries` (in address order), given the stack pointers of the
/// process's threads and `header(i)`, the first two words of mapping `i` where they were read.
fn class_of(
    entries: &[SmapsEntry],
    i: usize,
    stack_pointers: &[u64],
    header: &impl Fn(usize) -> Option<[u64; 2]>,
) -> Class {
    let entry = &entries[i];
    let map = &entry.map;
    let path = map.path.as_deref().unwrap_or("");
    if path == "[heap]" {
        Class::Heap
    } else if path == "[stack]" {
        Class::ThreadStacks
    } else if is_shmem(entry) {
        Class::Shmem
    } else if !is_anonymous(entry) {
        Class::File
    } else if stack_pointers
        .iter()
        .any(|&sp| map.start <= sp && sp < map.end)
    {
        Class::ThreadStacks
    } else if map.writable
        && (is_glibc_arena_heap(entries, i, header)
            || header(i).is_some_and(|words| is_glibc_mapped_chunk(words, map.end - map.start)))
    {
        Class::Heap
    } else if map.writable
        && i > 0
        && entries[i - 1].map.end == map.start
        && is_anonymous(&entries[i - 1])
        && !entries[i - 1].map.readable
        && !entries[i - 1].map.writable
    {
        Class::ThreadStacks
    } else {
        Class::AnonMappings
    }
}

/// Classifies the mappings of `entries` (in address order), given the stack pointers of the
/// process's threads and `header(i)`, the first two words of mapping `i` where they were read.
pub fn classify(
    entries: &[SmapsEntry],
    stack_pointers: &[u64],
    header: impl Fn(usize) -> Option<[u64; 2]>,
) -> ClassBytes {
    let mut bytes = ClassBytes::default();
    for (i, entry) in entries.iter().enumerate() {
        bytes.swap += entry.swap;
        let slot = match class_of(entries, i, stack_pointers, &header) {
            Class::Heap => &mut bytes.heap,
            Class::AnonMappings => &mut bytes.anon_mappings,
            Class::ThreadStacks => &mut bytes.thread_stacks,
            Class::Shmem => &mut bytes.shmem,
            Class::File => {
                let written = entry.anonymous.min(entry.rss);
                bytes.anon_mappings += written;
                bytes.file += entry.rss - written;
                continue;
            }
        };
        *slot += entry.rss;
    }
    bytes
}

/// The first two words of the private writable anonymous mappings of `entries` that hold
/// resident memory, read from process `pid`'s memory.
struct Headers {
    /// Indices of the mappings read, in order.
    read: Vec<usize>,
    words: Vec<Option<[u64; 2]>>,
}

impl Headers {
    fn read(pid: Pid, entries: &[SmapsEntry]) -> Self {
        let read: Vec<usize> = (0..entries.len())
            .filter(|&i| {
                let entry = &entries[i];
                is_anonymous(entry) && entry.map.writable && !entry.map.shared && entry.rss > 0
            })
            .collect();
        let starts: Vec<u64> = read.iter().map(|&i| entries[i].map.start).collect();
        let words = procfs::read_remote_pairs(pid, &starts);
        Headers { read, words }
    }

    fn get(&self, i: usize) -> Option<[u64; 2]> {
        self.read
            .binary_search(&i)
            .ok()
            .and_then(|position| self.words[position])
    }
}

/// Reads and classifies the memory of process `pid` now.
pub fn sample(pid: Pid) -> Result<ClassBytes, ProcError> {
    let entries = procfs::read_smaps(pid)?;
    let stack_pointers = procfs::read_thread_stack_pointers(pid, MAX_STACK_READS)?;
    let headers = Headers::read(pid, &entries);
    Ok(classify(&entries, &stack_pointers, |i| headers.get(i)))
}

/// Samples of a process's classes over time, and the growth of each.
#[derive(Debug, Clone, Default)]
pub struct MemoryHistory {
    samples: VecDeque<(f64, ClassBytes)>,
}

impl MemoryHistory {
    /// Adds the sample taken at `time` (seconds, any clock), keeping at most `capacity` samples.
    pub fn push(&mut self, time: f64, bytes: ClassBytes, capacity: usize) {
        while self.samples.len() >= capacity.max(2) {
            self.samples.pop_front();
        }
        self.samples.push_back((time, bytes));
    }

    /// The latest sample's bytes.
    pub fn latest(&self) -> Option<ClassBytes> {
        self.samples.back().map(|(_, bytes)| *bytes)
    }

    /// Each class at the latest sample, with its Theil-Sen growth over the samples (at most
    /// [`SLOPE_POINTS`] of them, evenly spaced); `None` without a sample.
    pub fn memory(&self) -> Option<Memory> {
        let (last_time, latest) = *self.samples.back()?;
        let first_time = self.samples.front().map_or(last_time, |(time, _)| *time);
        let class = |index: usize| {
            let points: Vec<(f64, f64)> = self
                .samples
                .iter()
                .map(|(time, bytes)| (*time, bytes.values()[index] as f64))
                .collect();
            MemoryClass {
                resident_bytes: latest.values()[index],
                growth_bytes_per_second: trend::theil_sen_thinned(&points, SLOPE_POINTS)
                    .unwrap_or(0.0),
            }
        };
        Some(Memory {
            heap: class(0),
            anon_mappings: class(1),
            thread_stacks: class(2),
            file: class(3),
            shmem: class(4),
            swap: class(5),
            window_seconds: last_time - first_time,
            heap_live: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An smaps entry from a `maps` line and its resident, anonymous and swapped KiB.
    fn entry(line: &str, rss: u64, anonymous: u64, swap: u64) -> SmapsEntry {
        SmapsEntry {
            map: procfs::parse_maps(line).unwrap().remove(0),
            rss: rss << 10,
            anonymous: anonymous << 10,
            swap: swap << 10,
        }
    }

    fn mappings() -> Vec<SmapsEntry> {
        vec![
            entry(
                "55d5c8a4d000-55d5c8a4f000 r--p 00000000 fd:01 1835 /usr/bin/app",
                8,
                0,
                0,
            ),
            entry(
                "55d5c8a60000-55d5c8a61000 rw-p 00002000 fd:01 1835 /usr/bin/app",
                4,
                4,
                0,
            ),
            entry(
                "55d5c9f3e000-55d5c9f5f000 rw-p 00000000 00:00 0 [heap]",
                100,
                100,
                12,
            ),
            // A glibc arena: 64 MiB-aligned, its reserved tail inaccessible.
            entry(
                "7f1e24000000-7f1e24400000 rw-p 00000000 00:00 0",
                1000,
                1000,
                0,
            ),
            entry("7f1e24400000-7f1e28000000 ---p 00000000 00:00 0", 0, 0, 0),
            // A thread stack above its guard page, and one whose thread is blocked.
            entry("7f1e29000000-7f1e29001000 ---p 00000000 00:00 0", 0, 0, 0),
            entry("7f1e29001000-7f1e29801000 rw-p 00000000 00:00 0", 16, 16, 0),
            entry("7f1e2a000000-7f1e2a800000 rw-p 00000000 00:00 0", 20, 20, 0),
            // A block glibc mapped on its own, and the program's own mappings (the first one
            // 64 MiB-aligned by chance).
            entry(
                "7f1e2b000000-7f1e2b041000 rw-p 00000000 00:00 0",
                260,
                260,
                0,
            ),
            entry("7f1e2c000000-7f1e2c100000 rw-p 00000000 00:00 0", 40, 40, 0),
            entry(
                "7f1e2d000000-7f1e2d010000 rw-p 00000000 00:00 0 [anon:cache]",
                64,
                64,
                0,
            ),
            entry(
                "7f1e2e000000-7f1e2e021000 rw-s 00000000 00:05 4242 /memfd:shm (deleted)",
                132,
                0,
                0,
            ),
            entry(
                "7f1e2f000000-7f1e2f100000 rw-s 00000000 00:01 37 /dev/zero (deleted)",
                8,
                0,
                0,
            ),
            entry(
                "7ffd1b9d0000-7ffd1b9f1000 rw-p 00000000 00:00 0 [stack]",
                132,
                132,
                4,
            ),
            entry(
                "7ffd1b9f0000-7ffd1b9f2000 r-xp 00000000 00:00 0 [vdso]",
                8,
                0,
                0,
            ),
        ]
    }

    /// The first words of the mappings of [`mappings`]: the arena's `heap_info`, a mapped
    /// chunk, and a 64 MiB-aligned mapping of the program's.
    fn header(i: usize) -> Option<[u64; 2]> {
        match i {
            3 => Some([0x7f1e_2400_0030, 0]),
            8 => Some([0, 266_240 | 2]),
            9 => Some([0, 0]),
            _ => None,
        }
    }

    #[test]
    fn classifies_each_mapping_once() {
        let entries = mappings();
        let bytes = classify(&entries, &[0x7f1e2a7ffe80], header);
        assert_eq!(
            bytes,
            ClassBytes {
                heap: (100 + 1000 + 260) << 10,
                anon_mappings: (4 + 40 + 64) << 10,
                thread_stacks: (16 + 20 + 132) << 10,
                file: (8 + 8) << 10,
                shmem: (132 + 8) << 10,
                swap: 16 << 10,
            }
        );
        let rss: u64 = entries.iter().map(|entry| entry.rss).sum();
        let values = bytes.values();
        assert_eq!(values[..5].iter().sum::<u64>(), rss);
        // Without the stack pointer, the stack without a guard is the program's mapping; without
        // the headers, the arena and the mapped block are too.
        let bytes = classify(&entries, &[], |_| None);
        assert_eq!(bytes.thread_stacks, (16 + 132) << 10);
        assert_eq!(bytes.heap, 100 << 10);
        assert_eq!(bytes.anon_mappings, (4 + 1000 + 20 + 260 + 40 + 64) << 10);
    }

    #[test]
    fn recognizes_glibc_mapped_chunks() {
        // malloc(256 KiB): 65 pages mapped, the chunk's size with IS_MMAPPED.
        assert!(is_glibc_mapped_chunk([0, 266_240 | 2], 266_240));
        // Merged with the next block mapped below it.
        assert!(is_glibc_mapped_chunk([0, 266_240 | 2], 2 * 266_240));
        // memalign's correction.
        assert!(is_glibc_mapped_chunk([64, (266_240 - 64) | 2], 266_240));
        // Not mapped on its own, larger than the mapping, zeros, a program's data.
        assert!(!is_glibc_mapped_chunk([0, 266_240 | 1], 266_240));
        assert!(!is_glibc_mapped_chunk([0, 532_480 | 2], 266_240));
        assert!(!is_glibc_mapped_chunk([0, 0], 1 << 20));
        assert!(!is_glibc_mapped_chunk([7, 0x6f6c6c6568], 1 << 20));
    }

    #[test]
    fn history_fits_each_class() {
        let mut history = MemoryHistory::default();
        assert_eq!(history.memory(), None);
        for i in 0..10u64 {
            let bytes = ClassBytes {
                heap: (10 << 20) + i * 4096,
                thread_stacks: 1 << 20,
                swap: 100 - i,
                ..ClassBytes::default()
            };
            history.push(2.0 * i as f64, bytes, 8);
        }
        let memory = history.memory().unwrap();
        assert_eq!(memory.window_seconds, 14.0);
        assert_eq!(memory.heap.resident_bytes, (10 << 20) + 9 * 4096);
        assert_eq!(memory.heap.growth_bytes_per_second, 2048.0);
        assert_eq!(memory.thread_stacks.growth_bytes_per_second, 0.0);
        assert_eq!(memory.swap.growth_bytes_per_second, -0.5);
        assert_eq!(memory.fastest_growing().map(|(name, _)| name), Some("heap"));
        assert_eq!(history.latest().map(|bytes| bytes.swap), Some(91));
    }

    #[test]
    fn a_threads_arena_is_heap() {
        // A thread's first allocation comes from an arena of its own (glibc hands each new
        // thread one while there are fewer than eight per core).
        let block = std::thread::spawn(|| {
            let block = vec![7u8; 4096];
            let address = block.as_ptr() as u64;
            std::mem::forget(block);
            address
        })
        .join()
        .unwrap();
        let pid = std::process::id();
        let entries = procfs::read_smaps(pid).unwrap();
        let i = entries
            .iter()
            .position(|entry| entry.map.start <= block && block < entry.map.end)
            .unwrap();
        let headers = Headers::read(pid, &entries);
        if entries[i].map.path.as_deref() == Some("[heap]") {
            eprintln!("the thread was given the main arena: nothing to check");
            return;
        }
        assert!(
            entries[i].map.start.is_multiple_of(GLIBC_ARENA_ALIGN),
            "{:?}",
            entries[i]
        );
        assert_eq!(
            class_of(&entries, i, &[], &|i| headers.get(i)),
            Class::Heap,
            "{:?} starts with {:x?}",
            entries[i],
            headers.get(i)
        );
    }

    #[test]
    fn samples_this_process() {
        let bytes = sample(std::process::id()).unwrap();
        let status = procfs::read_status(std::process::id()).unwrap();
        let resident: u64 = bytes.values()[..5].iter().sum();
        // The two reads are moments apart: within a few MiB of each other.
        assert!(
            resident.abs_diff(status.vm_rss) < 8 << 20,
            "{bytes:?} against {status:?}"
        );
        assert!(
            bytes.heap > 0 && bytes.file > 0 && bytes.thread_stacks > 0,
            "{bytes:?}"
        );
        assert!(matches!(sample(u32::MAX), Err(ProcError::Gone { .. })));
    }
}
