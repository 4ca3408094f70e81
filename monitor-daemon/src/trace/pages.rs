//! The pages a process traced by its page faults holds, and which stack brought each in: the
//! user-space half of the page-fault method (the kernel half sends every write fault with its
//! page and stack, see `monitor-ebpf/src/page_faults.rs`).
//!
//! A page enters on its first write fault, credited to the faulting stack, unless it lies in a
//! shared file mapping (page cache, not the process's own memory). It leaves when the process
//! gives it back: `munmap`, `madvise` with advice that releases pages, the program break moving
//! down, or `mremap` shrinking or moving it (a moved page keeps its stack). So a stack's figure
//! is the resident memory it brought in that the process still holds, as nearly as the kernel
//! lets one see:
//!
//! - memory freed to the allocator and handed out again brings no fault: a leak that reuses
//!   freed memory (or a cache that churns within memory it already touched) shows no growth;
//! - a page reclaimed by the kernel (swapped out, or freed lazily after `MADV_FREE`, which counts
//!   as given back) is not seen to leave, and one swapped back in faults again without counting;
//! - pages resident before the trace began are not known, so a write fault on one of them that
//!   copies it (copy-on-write after `fork`) counts as new;
//! - a transparent huge page is counted as the 4 KiB page its fault touched.
//!
//! Uses only the procfs types; knows nothing of the kernel maps.

use std::collections::{BTreeMap, HashMap};

use crate::watch::procfs::MapEntry;

/// Bytes of a page.
pub const PAGE_SIZE: u64 = 4096;

/// What is known of one page: the stack that brought it in, and when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Page {
    stack_id: u64,
    timestamp_ns: u64,
}

/// What one stack brought in and the process still holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StackPages {
    /// Resident bytes.
    pub bytes: u64,
    /// Pages.
    pub pages: u64,
    /// When the oldest of them arrived (`bpf_ktime_get_ns`).
    pub oldest_ns: Option<u64>,
}

/// The pages of one process, see the module documentation.
#[derive(Debug, Default)]
pub struct PageLedger {
    pages: BTreeMap<u64, Page>,
    /// The shared file mappings at the last look at `/proc/PID/maps` (start, end), sorted.
    shared: Vec<(u64, u64)>,
    /// The program break as last reported.
    program_break: Option<u64>,
}

impl PageLedger {
    /// Notes the process's mappings (its `/proc/PID/maps`): faults in shared file mappings are
    /// not the process's own memory.
    pub fn set_maps(&mut self, maps: &[MapEntry]) {
        self.shared = maps
            .iter()
            .filter(|entry| entry.shared && entry.inode != 0)
            .map(|entry| (entry.start, entry.end))
            .collect();
        self.shared.sort_unstable();
    }

    /// A write fault on the page at `page` by `stack_id`.
    pub fn fault(&mut self, page: u64, stack_id: u64, timestamp_ns: u64) {
        let page = page & !(PAGE_SIZE - 1);
        let index = self.shared.partition_point(|&(start, _)| start <= page);
        if index > 0 && page < self.shared[index - 1].1 {
            return;
        }
        self.pages.entry(page).or_insert(Page {
            stack_id,
            timestamp_ns,
        });
    }

    /// The process gave back `[start, start + len)`.
    pub fn release(&mut self, start: u64, len: u64) {
        let end = start.saturating_add(len);
        let gone: Vec<u64> = self
            .pages
            .range(start..end)
            .map(|(&page, _)| page)
            .collect();
        for page in gone {
            self.pages.remove(&page);
        }
    }

    /// `mremap(old, old_len, new_len)` returned `new`: the pages that fit move with their
    /// stacks, those past the new length are given back.
    pub fn remap(&mut self, old: u64, old_len: u64, new: u64, new_len: u64) {
        let kept = old_len.min(new_len);
        let moved: Vec<(u64, Page)> = self
            .pages
            .range(old..old.saturating_add(old_len))
            .map(|(&page, &info)| (page, info))
            .collect();
        for (page, _) in &moved {
            self.pages.remove(page);
        }
        for (page, info) in moved {
            let offset = page - old;
            if offset < kept {
                self.pages.insert(new + offset, info);
            }
        }
    }

    /// The program break moved to `new_break`: below where it was, the pages above it are given
    /// back.
    pub fn set_break(&mut self, new_break: u64) {
        if let Some(old) = self.program_break
            && new_break < old
        {
            self.release(new_break, old - new_break);
        }
        self.program_break = Some(new_break);
    }

    /// What each stack holds.
    pub fn per_stack(&self) -> HashMap<u64, StackPages> {
        let mut stacks: HashMap<u64, StackPages> = HashMap::new();
        for page in self.pages.values() {
            let entry = stacks.entry(page.stack_id).or_default();
            entry.bytes += PAGE_SIZE;
            entry.pages += 1;
            entry.oldest_ns = Some(
                entry
                    .oldest_ns
                    .map_or(page.timestamp_ns, |oldest| oldest.min(page.timestamp_ns)),
            );
        }
        stacks
    }

    /// Forgets everything (the process replaced its image).
    pub fn clear(&mut self) {
        self.pages.clear();
        self.program_break = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held(ledger: &PageLedger, stack: u64) -> u64 {
        ledger
            .per_stack()
            .get(&stack)
            .map_or(0, |pages| pages.bytes)
    }

    #[test]
    fn first_fault_counts_and_giving_back_removes() {
        let mut ledger = PageLedger::default();
        for page in 0..10 {
            ledger.fault(0x10_0000 + page * PAGE_SIZE + 8, 1, 100 + page);
        }
        // A second fault on a page held (copy-on-write, a retried fault) changes nothing.
        ledger.fault(0x10_0000, 2, 500);
        assert_eq!(held(&ledger, 1), 10 * PAGE_SIZE);
        assert_eq!(held(&ledger, 2), 0);
        assert_eq!(ledger.per_stack()[&1].oldest_ns, Some(100));
        // munmap of the first four pages, madvise(DONTNEED) of one more.
        ledger.release(0x10_0000, 4 * PAGE_SIZE);
        ledger.release(0x10_0000 + 9 * PAGE_SIZE, PAGE_SIZE);
        assert_eq!(held(&ledger, 1), 5 * PAGE_SIZE);
        assert_eq!(ledger.per_stack()[&1].oldest_ns, Some(104));
        // Faulted again after being given back: brought in again, by whoever faults it.
        ledger.fault(0x10_0000, 2, 600);
        assert_eq!(held(&ledger, 2), PAGE_SIZE);
    }

    #[test]
    fn shared_file_mappings_are_not_the_process_memory() {
        let mut ledger = PageLedger::default();
        let maps = crate::watch::procfs::parse_maps(
            "7f0000000000-7f0000010000 rw-s 00000000 08:01 42 /dev/shm/segment\n\
             7f0000010000-7f0000020000 rw-p 00000000 00:00 0 \n",
        )
        .unwrap();
        ledger.set_maps(&maps);
        ledger.fault(0x7f00_0000_1000, 1, 1);
        ledger.fault(0x7f00_0001_1000, 1, 1);
        assert_eq!(held(&ledger, 1), PAGE_SIZE);
    }

    #[test]
    fn remap_moves_pages_with_their_stacks_and_shrinking_gives_back() {
        let mut ledger = PageLedger::default();
        for page in 0..4 {
            ledger.fault(0x1000 * (16 + page), 7, 1);
        }
        // Grown and moved: every page moves.
        ledger.remap(0x10000, 0x4000, 0x80000, 0x8000);
        assert_eq!(held(&ledger, 7), 4 * PAGE_SIZE);
        ledger.fault(0x80000, 9, 2);
        assert_eq!(held(&ledger, 9), 0, "the moved page is still held");
        // Shrunk in place to one page: three are given back.
        ledger.remap(0x80000, 0x8000, 0x80000, 0x1000);
        assert_eq!(held(&ledger, 7), PAGE_SIZE);
    }

    #[test]
    fn the_break_moving_down_gives_back_the_pages_above_it() {
        let mut ledger = PageLedger::default();
        ledger.set_break(0x60_0000);
        ledger.set_break(0x64_0000);
        for page in 0..64 {
            ledger.fault(0x60_0000 + page * PAGE_SIZE, 3, 1);
        }
        ledger.set_break(0x62_0000);
        assert_eq!(held(&ledger, 3), 32 * PAGE_SIZE);
        ledger.clear();
        assert!(ledger.per_stack().is_empty());
    }
}
