//! The terminal rendering of a [`Report`]: a header (with one line on what the process's memory
//! is made of, and one on the release of memory allocated before the window), then the
//! fastest-growing stacks with their frames, and the human units (KiB, MiB, ...) it is written
//! in.

use std::fmt::Write as _;
use std::path::Path;

use super::{EndReason, Frame, Language, Method, ProcessEnd, ReleaseSite, Report, StackReport};
use crate::model::Memory;

/// Renders `report` for a terminal: the header, then at most `top` stacks, leaking ones first,
/// each group by growth rate, fastest first.
pub fn render_text(report: &Report, top: usize) -> String {
    let mut out = String::new();
    write_header(&mut out, report);

    let mut stacks: Vec<&StackReport> = report.stacks.iter().collect();
    stacks.sort_by(|a, b| {
        b.leaking
            .cmp(&a.leaking)
            .then(
                b.growth_bytes_per_second
                    .total_cmp(&a.growth_bytes_per_second),
            )
            .then(b.bytes.cmp(&a.bytes))
    });
    let leaking = stacks.iter().filter(|s| s.leaking).count();
    let turnover = stacks.iter().filter(|s| s.turnover).count();
    let shown = stacks.len().min(top);
    let turnover = if turnover > 0 {
        format!(", {turnover} turnover")
    } else {
        String::new()
    };
    let _ = writeln!(
        out,
        "stacks: {} holding memory, {leaking} leaking{turnover}; showing {shown}",
        stacks.len()
    );
    let unit = unit(report.method);
    for (rank, stack) in stacks.iter().take(top).enumerate() {
        out.push('\n');
        write_stack(&mut out, rank + 1, stack, unit, &report.releases);
    }
    out
}

/// Growth below this (bytes a second) is not worth naming in the memory line.
const NOTABLE_GROWTH: f64 = 1024.0;

/// What a process's memory is made of, in one line: the RSS and its growth, the class that
/// grows fastest, and, for the heap of a traced process, how much of it is live allocations and
/// how much the allocator retains.
pub fn memory_line(memory: &Memory) -> String {
    let classes = memory.classes();
    let resident = &classes[..classes.len() - 1];
    let rss: u64 = resident.iter().map(|(_, class)| class.resident_bytes).sum();
    let growth: f64 = resident
        .iter()
        .map(|(_, class)| class.growth_bytes_per_second)
        .sum();
    let mut line = format!(
        "memory: RSS {}, {}",
        human_bytes(rss),
        human_rate_per_minute(growth)
    );
    let live = memory.heap_live;
    let mut retained_said = false;
    match memory
        .fastest_growing()
        .filter(|(_, class)| class.growth_bytes_per_second >= NOTABLE_GROWTH)
    {
        Some(("heap", heap)) if live.is_some() => {
            let live_growth = live.map_or(0.0, |live| live.live_growth_bytes_per_second);
            let _ = write!(
                line,
                ": heap {}, of which live allocations {}",
                human_rate_per_minute(heap.growth_bytes_per_second),
                human_rate_per_minute(live_growth)
            );
            if live_growth < 0.5 * heap.growth_bytes_per_second {
                line.push_str(": retained by the allocator, not leaked");
                retained_said = true;
            } else {
                line.push_str(": live allocations, see the stacks");
            }
        }
        Some((name, class)) => {
            let _ = write!(
                line,
                ": {name} {}",
                human_rate_per_minute(class.growth_bytes_per_second)
            );
        }
        None => {}
    }
    if let Some(live) = live
        && let Some(retained) = live.retained_bytes
        && !retained_said
        && retained >= 1 << 20
    {
        let _ = write!(
            line,
            "; heap {}, of which live allocations {}: {} retained by the allocator, not leaked",
            human_bytes(memory.heap.resident_bytes),
            human_bytes(live.live_bytes),
            human_bytes(retained)
        );
    }
    line
}

/// A growth rate per minute in binary units with its sign: `+11.8 MiB/min`.
pub fn human_rate_per_minute(bytes_per_second: f64) -> String {
    let per_minute = human_rate(bytes_per_second * 60.0);
    match per_minute.strip_suffix("/s") {
        Some(amount) => format!("{amount}/min"),
        None => per_minute,
    }
}

/// A release site in a few words: its function, or its address.
fn site_name(site: &ReleaseSite) -> String {
    match site.frames.last() {
        Some(frame) => frame
            .symbol
            .clone()
            .unwrap_or_else(|| format!("{:#x}", frame.address)),
        None => "an unknown caller".to_owned(),
    }
}

/// What a stack's count counts: allocations, or pages by the page-fault method.
fn unit(method: Method) -> &'static str {
    match method {
        Method::Allocations => "allocations",
        Method::PageFaults => "pages",
    }
}

fn write_header(out: &mut String, report: &Report) {
    let _ = writeln!(
        out,
        "leakmon report for pid {} ({})",
        report.pid, report.comm
    );
    let sampling = if report.method == Method::PageFaults {
        "by page faults: resident memory each stack brought in and the process still holds"
            .to_owned()
    } else if report.sample_rate == 0 {
        "every allocation recorded".to_owned()
    } else {
        format!(
            "one sample per {} allocated",
            human_bytes(report.sample_rate)
        )
    };
    let _ = writeln!(
        out,
        "window {}, sampled every {}, {sampling}, minimum age {}",
        human_seconds(report.duration_seconds),
        human_seconds(report.interval_seconds),
        human_seconds(report.min_age_seconds),
    );
    let _ = writeln!(
        out,
        "outstanding: {} in {} {}",
        human_bytes(report.totals.outstanding_bytes),
        report.totals.outstanding_allocations,
        unit(report.method)
    );
    if let Some(end) = &report.end {
        write_end(out, end);
    }
    if report.interim {
        let _ = writeln!(
            out,
            "INTERIM: written while the trace was running; the final report replaces it"
        );
    }
    if let Some(memory) = &report.memory {
        let _ = writeln!(out, "{}", memory_line(memory));
    }
    if !report.releases.is_empty() {
        let frees: u64 = report.releases.iter().map(|site| site.frees).sum();
        let bytes: u64 = report.releases.iter().filter_map(|site| site.bytes).sum();
        let _ = writeln!(
            out,
            "released memory allocated before the window: {frees} frees, {} at {} site(s)",
            human_bytes(bytes),
            report.releases.len()
        );
    }
    if report.partial {
        let _ = writeln!(
            out,
            "PARTIAL: data was lost or the window was cut short; figures are lower bounds"
        );
    }
    for note in &report.notes {
        let _ = writeln!(out, "note: {note}");
    }
    let dropped: Vec<String> = report
        .dropped
        .iter()
        .filter(|(_, count)| **count > 0)
        .map(|(name, count)| format!("{name}={count}"))
        .collect();
    if !dropped.is_empty() {
        let _ = writeln!(out, "dropped: {}", dropped.join(", "));
    }
}

fn write_end(out: &mut String, end: &ProcessEnd) {
    let how = match (end.reason, end.signal, end.exit_code) {
        (EndReason::OomKill, _, _) => "KILLED BY THE OOM KILLER".to_owned(),
        (EndReason::Signal, Some(signal), _) => format!("killed by signal {signal}"),
        (EndReason::Signal, None, _) => "killed by a signal".to_owned(),
        (EndReason::Exit, _, Some(code)) => format!("exited with status {code}"),
        (EndReason::Exit, _, None) => "exited".to_owned(),
    };
    let limit = match (end.limit_bytes, &end.limit) {
        (Some(bytes), Some(name)) => format!(" of a limit of {} ({name})", human_bytes(bytes)),
        (Some(bytes), None) => format!(" of a limit of {}", human_bytes(bytes)),
        (None, _) => String::new(),
    };
    let _ = writeln!(
        out,
        "ended: {how} at {} (Unix time), RSS {}{limit}",
        end.unix_seconds.round(),
        human_bytes(end.rss_bytes)
    );
}

fn write_stack(
    out: &mut String,
    rank: usize,
    stack: &StackReport,
    unit: &str,
    releases: &[ReleaseSite],
) {
    let marker = if stack.leaking {
        "LEAKING"
    } else if stack.turnover {
        "turnover (not a leak)"
    } else {
        "not leaking"
    };
    let _ = writeln!(
        out,
        "#{rank} {marker}: growth {}, outstanding {} in {} {unit}, oldest {}",
        human_rate(stack.growth_bytes_per_second),
        human_bytes(stack.bytes),
        stack.allocations,
        human_seconds(stack.oldest_age_seconds),
    );
    if stack.released_bytes > 0 {
        let sites: Vec<String> = stack
            .release_sites
            .iter()
            .filter_map(|&index| releases.get(index))
            .map(site_name)
            .collect();
        let _ = writeln!(
            out,
            "    offset by {} released of memory allocated before the window, at {}",
            human_bytes(stack.released_bytes),
            sites.join(", ")
        );
    }
    if stack.frames.is_empty() {
        let _ = writeln!(out, "    [no frames]");
    }
    for frame in &stack.frames {
        let _ = writeln!(out, "    {}", frame_line(frame));
    }
    if stack.truncated {
        let _ = writeln!(out, "    {TRUNCATED} (the stack walk stopped here)");
    }
}

/// How a stack whose walk stopped before its outermost frame is marked (the outermost frame of
/// the folded, SVG and pprof renderings).
pub const TRUNCATED: &str = "[truncated]";

/// One frame as `symbol (file:line) [module]`, or `0x... [module]` without a symbol; inlined
/// frames start with `(inlined)`.
fn frame_line(frame: &Frame) -> String {
    let mut line = String::new();
    if frame.inlined {
        line.push_str("(inlined) ");
    }
    match &frame.symbol {
        Some(symbol) => {
            line.push_str(symbol);
            match (&frame.file, frame.line) {
                (Some(file), Some(number)) => {
                    let _ = write!(line, " ({file}:{number})");
                }
                (Some(file), None) => {
                    let _ = write!(line, " ({file})");
                }
                (None, _) => {}
            }
        }
        None => {
            let _ = write!(line, "{:#x}", frame.address);
        }
    }
    if let Some(module) = &frame.module {
        let _ = write!(line, " [{}]", basename(module));
    }
    if frame.language == Language::Python {
        line.push_str(" [python]");
    }
    line
}

/// The last component of `path`, or `path` itself when it has none.
pub(crate) fn basename(path: &str) -> &str {
    Path::new(path)
        .file_name()
        .and_then(|name| name.to_str())
        .unwrap_or(path)
}

const UNITS: [&str; 7] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];

/// `bytes` in binary units: `512 B`, `1.5 KiB`, `3.0 MiB`, ...
pub fn human_bytes(bytes: u64) -> String {
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    scaled(bytes as f64)
}

/// A growth rate in binary units per second with its sign: `+1.5 KiB/s`, `-200.0 B/s`, `0 B/s`.
pub fn human_rate(bytes_per_second: f64) -> String {
    if !bytes_per_second.is_finite() {
        return "unknown".to_owned();
    }
    if bytes_per_second == 0.0 {
        return "0 B/s".to_owned();
    }
    let sign = if bytes_per_second > 0.0 { '+' } else { '-' };
    let magnitude = bytes_per_second.abs();
    let amount = if magnitude < 1024.0 {
        format!("{magnitude:.1} B")
    } else {
        scaled(magnitude)
    };
    format!("{sign}{amount}/s")
}

/// `bytes` (at least 1024) with one decimal in the largest unit it reaches.
fn scaled(bytes: f64) -> String {
    let mut value = bytes;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// Seconds with one decimal.
fn human_seconds(seconds: f64) -> String {
    format!("{seconds:.1} s")
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::model::{HeapLive, MemoryClass};
    use crate::report::Totals;
    use crate::testing::frame;

    fn stack(bytes: u64, growth: f64, leaking: bool, frames: Vec<Frame>) -> StackReport {
        StackReport {
            bytes,
            allocations: bytes / 64,
            growth_bytes_per_second: growth,
            oldest_age_seconds: 42.3,
            leaking,
            frames,
            ..StackReport::default()
        }
    }

    fn report() -> Report {
        let mut dropped = BTreeMap::new();
        dropped.insert("map_full".to_owned(), 3);
        dropped.insert("stack_failed".to_owned(), 0);
        let mut inlined = frame(0x1010, Some("grow_buffer"), Some("/usr/bin/app"));
        inlined.inlined = true;
        inlined.file = Some("src/buffer.c".to_owned());
        inlined.line = Some(88);
        let mut caller = frame(0x1010, Some("handle_request"), Some("/usr/bin/app"));
        caller.file = Some("src/server.c".to_owned());
        caller.line = Some(120);
        Report {
            duration_seconds: 60.0,
            interval_seconds: 5.0,
            sample_rate: 4096,
            min_age_seconds: 10.0,
            partial: true,
            notes: vec!["the process exited".to_owned()],
            totals: Totals {
                outstanding_bytes: 3 * 1024 * 1024,
                outstanding_allocations: 7000,
            },
            dropped,
            ..crate::testing::report(
                4242,
                "app",
                vec![
                    stack(2 * 1024 * 1024, 10.0, false, vec![frame(0x5, None, None)]),
                    stack(
                        512 * 1024,
                        1536.0,
                        true,
                        vec![
                            inlined,
                            caller,
                            frame(
                                0x7f00_0000_2000,
                                None,
                                Some("/lib/x86_64-linux-gnu/libc.so.6"),
                            ),
                        ],
                    ),
                    stack(4096, 200_000.0, false, Vec::new()),
                ],
            )
        }
    }

    #[test]
    fn human_bytes_units() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1024), "1.0 KiB");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(5 * 1024 * 1024), "5.0 MiB");
        assert_eq!(human_bytes(3 * 1024 * 1024 * 1024 / 2), "1.5 GiB");
        assert_eq!(human_bytes(u64::MAX), "16.0 EiB");
    }

    #[test]
    fn human_rate_units_and_sign() {
        assert_eq!(human_rate(0.0), "0 B/s");
        assert_eq!(human_rate(12.34), "+12.3 B/s");
        assert_eq!(human_rate(-200.0), "-200.0 B/s");
        assert_eq!(human_rate(1536.0), "+1.5 KiB/s");
        assert_eq!(human_rate(2.5 * 1024.0 * 1024.0), "+2.5 MiB/s");
        assert_eq!(human_rate(f64::NAN), "unknown");
    }

    #[test]
    fn header_has_the_figures() {
        let text = render_text(&report(), 10);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "leakmon report for pid 4242 (app)");
        assert_eq!(
            lines[1],
            "window 60.0 s, sampled every 5.0 s, one sample per 4.0 KiB allocated, minimum age 10.0 s"
        );
        assert_eq!(lines[2], "outstanding: 3.0 MiB in 7000 allocations");
        assert!(lines[3].starts_with("PARTIAL"));
        assert_eq!(lines[4], "note: the process exited");
        assert_eq!(lines[5], "dropped: map_full=3");
        assert_eq!(lines[6], "stacks: 3 holding memory, 1 leaking; showing 3");
    }

    #[test]
    fn complete_report_has_no_partial_or_dropped_lines() {
        let mut report = report();
        report.partial = false;
        report.dropped.clear();
        report.notes.clear();
        report.sample_rate = 0;
        let text = render_text(&report, 1);
        assert!(!text.contains("PARTIAL"));
        assert!(!text.contains("dropped"));
        assert!(text.contains("every allocation recorded"));
    }

    #[test]
    fn stacks_leaking_first_then_by_growth() {
        let text = render_text(&report(), 10);
        let headings: Vec<&str> = text.lines().filter(|l| l.starts_with('#')).collect();
        assert_eq!(
            headings,
            [
                "#1 LEAKING: growth +1.5 KiB/s, outstanding 512.0 KiB in 8192 allocations, oldest 42.3 s",
                "#2 not leaking: growth +195.3 KiB/s, outstanding 4.0 KiB in 64 allocations, oldest 42.3 s",
                "#3 not leaking: growth +10.0 B/s, outstanding 2.0 MiB in 32768 allocations, oldest 42.3 s",
            ]
        );
    }

    #[test]
    fn frames_one_per_line() {
        let text = render_text(&report(), 1);
        let frames: Vec<&str> = text.lines().filter(|l| l.starts_with("    ")).collect();
        assert_eq!(
            frames,
            [
                "    (inlined) grow_buffer (src/buffer.c:88) [app]",
                "    handle_request (src/server.c:120) [app]",
                "    0x7f0000002000 [libc.so.6]",
            ]
        );
        assert!(!text.contains("#2"));
    }

    #[test]
    fn unknown_frames_and_empty_stacks() {
        let text = render_text(&report(), 3);
        assert!(text.contains("\n    0x5\n"));
        assert!(text.contains("\n    [no frames]\n"));
        let mut with_file = frame(0x10, Some("f"), None);
        with_file.file = Some("a.c".to_owned());
        assert_eq!(frame_line(&with_file), "f (a.c)");
    }

    #[test]
    fn a_truncated_stack_says_so_after_its_frames() {
        let mut truncated = stack(8, 0.0, false, vec![frame(0x10, Some("leaf"), None)]);
        truncated.truncated = true;
        let mut out = String::new();
        write_stack(&mut out, 1, &truncated, "allocations", &[]);
        assert!(
            out.ends_with("    leaf\n    [truncated] (the stack walk stopped here)\n"),
            "{out}"
        );
    }

    #[test]
    fn a_turnover_stack_names_what_offsets_it() {
        let mut report = report();
        let mut cache = stack(
            1 << 20,
            4096.0,
            false,
            vec![frame(0x20, Some("cache_insert"), None)],
        );
        cache.turnover = true;
        cache.released_bytes = 2 << 20;
        cache.release_sites = vec![1];
        report.stacks = vec![cache];
        report.releases = vec![
            ReleaseSite {
                frames: vec![frame(0x30, Some("shutdown"), None)],
                frees: 2,
                bytes: None,
            },
            ReleaseSite {
                frames: vec![frame(0x40, Some("cache_insert"), None)],
                frees: 512,
                bytes: Some(2 << 20),
            },
        ];
        let text = render_text(&report, 5);
        assert!(
            text.contains(
                "\nreleased memory allocated before the window: 514 frees, 2.0 MiB at 2 site(s)\n"
            ),
            "{text}"
        );
        assert!(text.contains("\nstacks: 1 holding memory, 0 leaking, 1 turnover; showing 1\n"));
        assert!(text.contains(
            "\n#1 turnover (not a leak): growth +4.0 KiB/s, outstanding 1.0 MiB in 16384 \
             allocations, oldest 42.3 s\n    offset by 2.0 MiB released of memory allocated \
             before the window, at cache_insert\n"
        ));
    }

    fn class(resident_mib: u64, growth_kib_per_second: f64) -> MemoryClass {
        MemoryClass {
            resident_bytes: resident_mib << 20,
            growth_bytes_per_second: growth_kib_per_second * 1024.0,
        }
    }

    #[test]
    fn the_memory_line_says_what_grows() {
        // The example: the heap grows, its live allocations hardly.
        let mut memory = Memory {
            heap: class(40, 201.4),
            anon_mappings: class(3, 3.4),
            file: class(2, 0.0),
            heap_live: Some(HeapLive {
                live_bytes: 1 << 20,
                live_growth_bytes_per_second: 6.8 * 1024.0,
                retained_growth_bytes_per_second: 194.6 * 1024.0,
                retained_bytes: None,
            }),
            ..Memory::default()
        };
        assert_eq!(
            memory_line(&memory),
            "memory: RSS 45.0 MiB, +12.0 MiB/min: heap +11.8 MiB/min, of which live allocations \
             +408.0 KiB/min: retained by the allocator, not leaked"
        );
        // Live allocations growing with the heap: the stacks say where.
        memory.heap_live = memory.heap_live.map(|live| HeapLive {
            live_growth_bytes_per_second: 190.0 * 1024.0,
            ..live
        });
        assert!(memory_line(&memory).ends_with(": live allocations, see the stacks"));
        // Untraced: the class alone.
        memory.heap_live = None;
        memory.thread_stacks = class(9, 300.0);
        assert_eq!(
            memory_line(&memory),
            "memory: RSS 54.0 MiB, +29.6 MiB/min: thread_stacks +17.6 MiB/min"
        );
        // Flat, traced from its start: what the allocator keeps.
        let flat = Memory {
            heap: class(33, 0.0),
            file: class(7, 0.0),
            heap_live: Some(HeapLive {
                live_bytes: 512 << 10,
                retained_bytes: Some((33 << 20) - (512 << 10)),
                ..HeapLive::default()
            }),
            ..Memory::default()
        };
        assert_eq!(
            memory_line(&flat),
            "memory: RSS 40.0 MiB, 0 B/min; heap 33.0 MiB, of which live allocations 512.0 KiB: \
             32.5 MiB retained by the allocator, not leaked"
        );
        assert_eq!(human_rate_per_minute(f64::NAN), "unknown");
    }

    #[test]
    fn top_zero_shows_only_the_header() {
        let text = render_text(&report(), 0);
        assert!(text.ends_with("stacks: 3 holding memory, 1 leaking; showing 0\n"));
        assert!(!text.contains('#'));
    }
}
