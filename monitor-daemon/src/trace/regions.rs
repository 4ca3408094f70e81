//! Bookkeeping of the memory one traced process maps with `mmap` (anonymous), `mremap` and
//! `brk`: the live intervals, each attributed to the stack that mapped it.
//!
//! The kernel programs report each call as an event; [`Regions`] replays them, splitting and
//! moving intervals as the kernel does with the mappings, so that what is still mapped can be
//! summed per stack at any time.

use std::collections::{BTreeMap, HashMap};

/// Size of a page: lengths are rounded up to a multiple of it, as the kernel does.
pub const PAGE_SIZE: u64 = 4096;

/// Memory still mapped by one stack.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StackUsage {
    /// Bytes mapped.
    pub bytes: u64,
    /// Number of separate intervals.
    pub regions: u64,
    /// Timestamp of the oldest mapping still (partly) live, in nanoseconds.
    pub oldest_timestamp_ns: u64,
}

/// One live mapped interval, as handed out by [`Regions::iter`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LiveRegion {
    /// First address.
    pub start: u64,
    /// Length in bytes (whole pages).
    pub len: u64,
    /// The stack that mapped it.
    pub stack_id: u64,
    /// When it was mapped, in nanoseconds of CLOCK_MONOTONIC.
    pub timestamp_ns: u64,
}

/// One live interval; its start is the key it is stored under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Region {
    end: u64,
    stack_id: u64,
    timestamp_ns: u64,
}

/// The live mapped intervals of one process, keyed by start address; they never overlap.
#[derive(Debug, Default)]
pub struct Regions {
    by_start: BTreeMap<u64, Region>,
    total: u64,
    /// The current program break, once one was seen.
    program_break: Option<u64>,
}

fn round_up(len: u64) -> u64 {
    len.div_ceil(PAGE_SIZE).saturating_mul(PAGE_SIZE)
}

impl Regions {
    /// An empty bookkeeping.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records a mapping of `len` bytes (rounded up to whole pages) at `addr` by the stack
    /// `stack_id`. Tracked ranges it overlaps are unmapped first, as `MAP_FIXED` does.
    pub fn map(&mut self, addr: u64, len: u64, stack_id: u64, timestamp_ns: u64) {
        let end = addr.saturating_add(round_up(len));
        self.remove_range(addr, end);
        self.insert(addr, end, stack_id, timestamp_ns);
    }

    /// Records an unmapping of `len` bytes (rounded up to whole pages) at `addr`: the tracked
    /// parts of the range are forgotten, splitting regions it cuts; untracked parts are ignored.
    pub fn unmap(&mut self, addr: u64, len: u64) {
        let end = addr.saturating_add(round_up(len));
        self.remove_range(addr, end);
    }

    /// Records an `mremap` of `old_len` bytes at `old_addr` to `new_len` bytes at `new_addr`
    /// (the same address when resized in place). The tracked parts of the old range move to the
    /// same offsets in the new range, keeping their stack and timestamp, and are cut at the new
    /// length. Growth beyond the old length belongs to whatever mapped the old range's last page;
    /// if that page was not tracked, the growth is not tracked either. A zero `old_len` (a second
    /// mapping of shared memory) is ignored.
    pub fn remap(&mut self, old_addr: u64, old_len: u64, new_addr: u64, new_len: u64) {
        if old_len == 0 {
            return;
        }
        let old_len = round_up(old_len);
        let new_len = round_up(new_len);
        let old_end = old_addr.saturating_add(old_len);
        let moved = self.remove_range(old_addr, old_end);
        self.remove_range(new_addr, new_addr.saturating_add(new_len));

        let last_index = moved.len().checked_sub(1);
        for (i, (start, region)) in moved.into_iter().enumerate() {
            let offset = start - old_addr;
            if offset >= new_len {
                continue;
            }
            let mut end_offset = (region.end - old_addr).min(new_len);
            if Some(i) == last_index && region.end == old_end {
                end_offset = new_len;
            }
            self.insert(
                new_addr.saturating_add(offset),
                new_addr.saturating_add(end_offset),
                region.stack_id,
                region.timestamp_ns,
            );
        }
    }

    /// Records the program break moving to `new_break` (the value `brk` returned). The first
    /// call only records the break. Growth is a region attributed to `stack_id`; shrinking
    /// unmaps the released part.
    pub fn brk(&mut self, new_break: u64, stack_id: u64, timestamp_ns: u64) {
        let Some(old_break) = self.program_break.replace(new_break) else {
            return;
        };
        if new_break > old_break {
            self.map(old_break, new_break - old_break, stack_id, timestamp_ns);
        } else if new_break < old_break {
            self.unmap(new_break, old_break - new_break);
        }
    }

    /// Records that the program break moved to `new_break` without attributing the growth to
    /// anyone (the allocator grew its own heap, and its allocations account for it); a shrink
    /// still unmaps.
    pub fn set_break(&mut self, new_break: u64) {
        if let Some(old_break) = self.program_break.replace(new_break)
            && new_break < old_break
        {
            self.unmap(new_break, old_break - new_break);
        }
    }

    /// The live intervals, by address.
    pub fn iter(&self) -> impl Iterator<Item = LiveRegion> + '_ {
        self.by_start.iter().map(|(&start, region)| LiveRegion {
            start,
            len: region.end - start,
            stack_id: region.stack_id,
            timestamp_ns: region.timestamp_ns,
        })
    }

    /// The memory mapped by each stack.
    pub fn per_stack(&self) -> HashMap<u64, StackUsage> {
        let mut usage: HashMap<u64, StackUsage> = HashMap::new();
        for region in self.iter() {
            let entry = usage.entry(region.stack_id).or_insert(StackUsage {
                bytes: 0,
                regions: 0,
                oldest_timestamp_ns: region.timestamp_ns,
            });
            entry.bytes += region.len;
            entry.regions += 1;
            entry.oldest_timestamp_ns = entry.oldest_timestamp_ns.min(region.timestamp_ns);
        }
        usage
    }

    /// Bytes mapped over all stacks.
    pub fn total_bytes(&self) -> u64 {
        self.total
    }

    /// Forgets everything, including the program break (for an `exec`, which replaces the
    /// address space).
    pub fn clear(&mut self) {
        self.by_start.clear();
        self.total = 0;
        self.program_break = None;
    }

    fn insert(&mut self, start: u64, end: u64, stack_id: u64, timestamp_ns: u64) {
        if start < end {
            self.by_start.insert(
                start,
                Region {
                    end,
                    stack_id,
                    timestamp_ns,
                },
            );
            self.total += end - start;
        }
    }

    /// Forgets the tracked parts of `[start, end)`, keeping the pieces of the regions that
    /// stick out on either side, and returns the forgotten parts in address order.
    fn remove_range(&mut self, start: u64, end: u64) -> Vec<(u64, Region)> {
        if start >= end {
            return Vec::new();
        }
        // Regions are disjoint and sorted, so their ends increase with their starts: walking
        // back from the last region starting before `end`, overlaps stop at the first region
        // ending at or before `start`.
        let overlapping: Vec<u64> = self
            .by_start
            .range(..end)
            .rev()
            .take_while(|(_, r)| r.end > start)
            .map(|(&s, _)| s)
            .collect();
        let mut removed = Vec::with_capacity(overlapping.len());
        for region_start in overlapping.into_iter().rev() {
            let Some(region) = self.by_start.remove(&region_start) else {
                continue;
            };
            self.total -= region.end - region_start;
            self.insert(region_start, start, region.stack_id, region.timestamp_ns);
            self.insert(end, region.end, region.stack_id, region.timestamp_ns);
            let cut_start = region_start.max(start);
            removed.push((
                cut_start,
                Region {
                    end: region.end.min(end),
                    ..region
                },
            ));
        }
        removed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: u64 = PAGE_SIZE;

    /// The regions as (start, end, stack) triples, in address order.
    fn layout(r: &Regions) -> Vec<(u64, u64, u64)> {
        r.by_start
            .iter()
            .map(|(&s, reg)| (s, reg.end, reg.stack_id))
            .collect()
    }

    fn usage(r: &Regions, stack: u64) -> StackUsage {
        r.per_stack().get(&stack).copied().unwrap_or_default()
    }

    #[test]
    fn map_rounds_up_and_attributes() {
        let mut r = Regions::new();
        r.map(10 * P, 1, 7, 100);
        r.map(20 * P, 2 * P + 1, 8, 200);
        r.map(30 * P, 0, 9, 300);
        assert_eq!(layout(&r), vec![(10 * P, 11 * P, 7), (20 * P, 23 * P, 8)]);
        assert_eq!(r.total_bytes(), 4 * P);
        assert_eq!(
            usage(&r, 8),
            StackUsage {
                bytes: 3 * P,
                regions: 1,
                oldest_timestamp_ns: 200
            }
        );
        assert!(!r.per_stack().contains_key(&9));
    }

    #[test]
    fn map_over_existing_ranges_replaces_the_overlap() {
        let mut r = Regions::new();
        r.map(10 * P, 4 * P, 1, 1);
        r.map(16 * P, 4 * P, 2, 2);
        r.map(12 * P, 6 * P, 3, 3);
        assert_eq!(
            layout(&r),
            vec![
                (10 * P, 12 * P, 1),
                (12 * P, 18 * P, 3),
                (18 * P, 20 * P, 2)
            ]
        );
        assert_eq!(r.total_bytes(), 10 * P);
        r.map(10 * P, 10 * P, 4, 4);
        assert_eq!(layout(&r), vec![(10 * P, 20 * P, 4)]);
        assert_eq!(r.per_stack().len(), 1);
    }

    #[test]
    fn unmap_head_tail_middle_and_whole() {
        let mut r = Regions::new();
        r.map(10 * P, 10 * P, 1, 5);
        r.unmap(10 * P, 2 * P);
        assert_eq!(layout(&r), vec![(12 * P, 20 * P, 1)]);
        r.unmap(18 * P, 5 * P);
        assert_eq!(layout(&r), vec![(12 * P, 18 * P, 1)]);
        r.unmap(14 * P, P + 1);
        assert_eq!(layout(&r), vec![(12 * P, 14 * P, 1), (16 * P, 18 * P, 1)]);
        assert_eq!(
            usage(&r, 1),
            StackUsage {
                bytes: 4 * P,
                regions: 2,
                oldest_timestamp_ns: 5
            }
        );
        r.unmap(12 * P, 2 * P);
        assert_eq!(layout(&r), vec![(16 * P, 18 * P, 1)]);
        assert_eq!(r.total_bytes(), 2 * P);
    }

    #[test]
    fn unmap_spanning_several_regions_and_gaps() {
        let mut r = Regions::new();
        r.map(10 * P, 2 * P, 1, 1);
        r.map(14 * P, 2 * P, 2, 2);
        r.map(18 * P, 2 * P, 3, 3);
        r.map(22 * P, 2 * P, 4, 4);
        r.unmap(11 * P, 8 * P);
        assert_eq!(
            layout(&r),
            vec![
                (10 * P, 11 * P, 1),
                (19 * P, 20 * P, 3),
                (22 * P, 24 * P, 4)
            ]
        );
        assert_eq!(r.total_bytes(), 4 * P);
        assert!(!r.per_stack().contains_key(&2));
    }

    #[test]
    fn unmap_of_untracked_ranges_is_ignored() {
        let mut r = Regions::new();
        r.map(10 * P, 2 * P, 1, 1);
        r.unmap(0, 10 * P);
        r.unmap(12 * P, 100 * P);
        r.unmap(11 * P, 0);
        assert_eq!(layout(&r), vec![(10 * P, 12 * P, 1)]);
        r.unmap(u64::MAX - P, 10 * P);
        assert_eq!(r.total_bytes(), 2 * P);
    }

    #[test]
    fn remap_shrinks_in_place() {
        let mut r = Regions::new();
        r.map(10 * P, 8 * P, 1, 1);
        r.remap(10 * P, 8 * P, 10 * P, 3 * P);
        assert_eq!(layout(&r), vec![(10 * P, 13 * P, 1)]);
        assert_eq!(r.total_bytes(), 3 * P);
    }

    #[test]
    fn remap_grows_in_place_with_the_last_pages_stack() {
        let mut r = Regions::new();
        r.map(10 * P, 2 * P, 1, 1);
        r.map(12 * P, 2 * P, 2, 2);
        r.remap(10 * P, 4 * P, 10 * P, 7 * P);
        assert_eq!(layout(&r), vec![(10 * P, 12 * P, 1), (12 * P, 17 * P, 2)]);
        assert_eq!(usage(&r, 2).oldest_timestamp_ns, 2);
        assert_eq!(r.total_bytes(), 7 * P);
    }

    #[test]
    fn remap_moves_the_tracked_parts_only() {
        let mut r = Regions::new();
        // Old range [10, 20): tracked [10, 12) by 1 and [15, 17) by 2, the rest untracked.
        r.map(10 * P, 2 * P, 1, 1);
        r.map(15 * P, 2 * P, 2, 2);
        r.map(40 * P, 2 * P, 3, 3);
        r.remap(10 * P, 10 * P, 100 * P, 12 * P);
        assert_eq!(
            layout(&r),
            vec![
                (40 * P, 42 * P, 3),
                (100 * P, 102 * P, 1),
                (105 * P, 107 * P, 2)
            ]
        );
        assert_eq!(r.total_bytes(), 6 * P);
    }

    #[test]
    fn remap_moving_and_shrinking_cuts_the_moved_parts() {
        let mut r = Regions::new();
        r.map(10 * P, 4 * P, 1, 1);
        r.map(14 * P, 4 * P, 2, 2);
        r.map(52 * P, 4 * P, 9, 9);
        // Shrink to 5 pages and move over part of stack 9's region (MREMAP_FIXED).
        r.remap(10 * P, 8 * P, 50 * P, 5 * P);
        assert_eq!(
            layout(&r),
            vec![
                (50 * P, 54 * P, 1),
                (54 * P, 55 * P, 2),
                (55 * P, 56 * P, 9)
            ]
        );
        assert_eq!(r.total_bytes(), 6 * P);
    }

    #[test]
    fn remap_of_untracked_or_empty_ranges_is_ignored() {
        let mut r = Regions::new();
        r.map(10 * P, 2 * P, 1, 1);
        r.remap(30 * P, 2 * P, 40 * P, 8 * P);
        r.remap(10 * P, 0, 60 * P, 2 * P);
        assert_eq!(layout(&r), vec![(10 * P, 12 * P, 1)]);
        // Growth of a range whose last page is untracked stays untracked.
        r.remap(10 * P, 4 * P, 70 * P, 8 * P);
        assert_eq!(layout(&r), vec![(70 * P, 72 * P, 1)]);
    }

    #[test]
    fn brk_records_then_grows_and_shrinks() {
        let mut r = Regions::new();
        r.brk(100 * P, 1, 1);
        assert_eq!(r.total_bytes(), 0);
        r.brk(103 * P, 2, 2);
        r.brk(104 * P, 3, 3);
        assert_eq!(
            layout(&r),
            vec![(100 * P, 103 * P, 2), (103 * P, 104 * P, 3)]
        );
        r.brk(102 * P, 4, 4);
        assert_eq!(layout(&r), vec![(100 * P, 102 * P, 2)]);
        r.brk(102 * P, 5, 5);
        assert_eq!(r.total_bytes(), 2 * P);
        r.brk(105 * P, 6, 6);
        assert_eq!(
            layout(&r),
            vec![(100 * P, 102 * P, 2), (102 * P, 105 * P, 6)]
        );
        r.brk(99 * P, 7, 7);
        assert!(layout(&r).is_empty());
    }

    #[test]
    fn clear_forgets_everything() {
        let mut r = Regions::new();
        r.brk(100 * P, 1, 1);
        r.map(10 * P, P, 1, 1);
        r.clear();
        assert_eq!(r.total_bytes(), 0);
        assert!(r.per_stack().is_empty());
        // The break is forgotten too: the next call only records it.
        r.brk(200 * P, 2, 2);
        assert_eq!(r.total_bytes(), 0);
    }

    /// The reference model: the owner (stack, timestamp) of each page of a small address space.
    struct Model {
        pages: Vec<Option<(u64, u64)>>,
        program_break: Option<usize>,
    }

    impl Model {
        fn pages_of(len: u64) -> usize {
            len.div_ceil(P) as usize
        }

        fn set(&mut self, first: usize, count: usize, owner: Option<(u64, u64)>) {
            let end = (first + count).min(self.pages.len());
            for page in first.min(end)..end {
                self.pages[page] = owner;
            }
        }

        fn remap(&mut self, old: usize, old_count: usize, new: usize, new_count: usize) {
            if old_count == 0 {
                return;
            }
            let content: Vec<_> = (old..old + old_count)
                .map(|p| self.pages.get(p).copied().flatten())
                .collect();
            self.set(old, old_count, None);
            self.set(new, new_count, None);
            let last = content.last().copied().flatten();
            for i in 0..new_count {
                let owner = content.get(i).copied().unwrap_or(last);
                if let Some(page) = self.pages.get_mut(new + i) {
                    *page = owner;
                }
            }
        }
    }

    /// xorshift64*: deterministic pseudo-random numbers without a dependency.
    struct Rng(u64);

    impl Rng {
        fn below(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
        }
    }

    fn check_against(r: &Regions, model: &Model) {
        let regions = layout(r);
        for pair in regions.windows(2) {
            assert!(pair[0].1 <= pair[1].0, "overlap: {pair:?}");
        }
        for (start, end, _) in &regions {
            assert!(start < end && start % P == 0 && end % P == 0);
        }
        let per_stack = r.per_stack();
        assert_eq!(
            r.total_bytes(),
            per_stack.values().map(|u| u.bytes).sum::<u64>()
        );
        assert_eq!(
            per_stack.values().map(|u| u.regions).sum::<u64>(),
            regions.len() as u64
        );

        let mut expected: HashMap<u64, (u64, u64)> = HashMap::new();
        for (page, owner) in model.pages.iter().enumerate() {
            let addr = page as u64 * P;
            let found = r
                .by_start
                .range(..=addr)
                .next_back()
                .filter(|(_, reg)| reg.end > addr)
                .map(|(_, reg)| (reg.stack_id, reg.timestamp_ns));
            assert_eq!(found, *owner, "page {page}");
            if let Some((stack, ts)) = owner {
                let e = expected.entry(*stack).or_insert((0, *ts));
                e.0 += P;
                e.1 = e.1.min(*ts);
            }
        }
        assert_eq!(per_stack.len(), expected.len());
        for (stack, (bytes, oldest)) in expected {
            let got = per_stack[&stack];
            assert_eq!((got.bytes, got.oldest_timestamp_ns), (bytes, oldest));
        }
    }

    #[test]
    fn random_operations_match_a_page_model() {
        const PAGES: u64 = 256;
        for seed in 1..=20u64 {
            let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
            let mut r = Regions::new();
            let mut model = Model {
                pages: vec![None; PAGES as usize],
                program_break: None,
            };
            for step in 0..400u64 {
                // Addresses stay inside the model; lengths are often not whole pages.
                let page = rng.below(PAGES - 32);
                let len = rng.below(24 * P) + 1;
                let stack = rng.below(6);
                let ts = step + 1;
                match rng.below(10) {
                    0..=3 => {
                        r.map(page * P, len, stack, ts);
                        model.set(page as usize, Model::pages_of(len), Some((stack, ts)));
                    }
                    4..=5 => {
                        r.unmap(page * P, len);
                        model.set(page as usize, Model::pages_of(len), None);
                    }
                    6..=7 => {
                        let new_page = if rng.below(2) == 0 {
                            page
                        } else {
                            rng.below(PAGES - 32)
                        };
                        let new_len = rng.below(24 * P) + 1;
                        r.remap(page * P, len, new_page * P, new_len);
                        model.remap(
                            page as usize,
                            Model::pages_of(len),
                            new_page as usize,
                            Model::pages_of(new_len),
                        );
                    }
                    _ => {
                        let new_break = 200 + rng.below(PAGES - 200 - 24);
                        r.brk(new_break * P, stack, ts);
                        let new_break = new_break as usize;
                        if let Some(old) = model.program_break.replace(new_break) {
                            if new_break > old {
                                model.set(old, new_break - old, Some((stack, ts)));
                            } else {
                                model.set(new_break, old - new_break, None);
                            }
                        }
                    }
                }
                check_against(&r, &model);
            }
        }
    }

    #[test]
    fn nested_break_moves_are_not_attributed() {
        let mut regions = Regions::new();
        regions.brk(0x10_0000, 1, 10);
        regions.set_break(0x20_0000);
        assert_eq!(regions.total_bytes(), 0);
        regions.brk(0x18_0000, 1, 20);
        assert_eq!(
            regions.total_bytes(),
            0,
            "a shrink after unattributed growth is not growth"
        );
        regions.brk(0x19_0000, 2, 30);
        assert_eq!(regions.total_bytes(), 0x1_0000);
        regions.set_break(0x18_8000);
        assert_eq!(regions.total_bytes(), 0x8000);
    }
}
