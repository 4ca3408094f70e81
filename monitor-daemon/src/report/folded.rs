//! The folded-stack rendering of a [`Report`] (Brendan Gregg's format, read by `flamegraph.pl`,
//! inferno and speedscope): one line per stack, frames outermost first joined by `;`, a space,
//! and the stack's outstanding bytes.

use super::text::{TRUNCATED, basename};
use super::{Frame, Language, Report};

/// Renders every stack of `report` holding outstanding bytes as one folded line, in the order of
/// the report.
pub fn render_folded(report: &Report) -> String {
    let mut out = String::new();
    for stack in report.stacks.iter().filter(|s| s.bytes > 0) {
        let mut names = Vec::with_capacity(stack.frames.len() + 1);
        if stack.truncated {
            names.push(TRUNCATED.to_owned());
        }
        names.extend(
            stack
                .frames
                .iter()
                .rev()
                .map(|frame| sanitize(&frame_name(frame))),
        );
        if names.is_empty() {
            names.push("[unknown]".to_owned());
        }
        out.push_str(&names.join(";"));
        out.push(' ');
        out.push_str(&stack.bytes.to_string());
        out.push('\n');
    }
    out
}

/// The symbol, else `0x{address} (module)`, else `[unknown]`; a Python function as
/// `py:qualname (file:line)`, so that flame graphs tell it from native code.
fn frame_name(frame: &Frame) -> String {
    if frame.language == Language::Python {
        let symbol = frame.symbol.as_deref().unwrap_or("[unknown]");
        return match (&frame.file, frame.line) {
            (Some(file), Some(line)) => format!("py:{symbol} ({}:{line})", basename(file)),
            _ => format!("py:{symbol}"),
        };
    }
    match (&frame.symbol, &frame.module) {
        (Some(symbol), _) => symbol.clone(),
        (None, Some(module)) => format!("{:#x} ({})", frame.address, basename(module)),
        (None, None) => "[unknown]".to_owned(),
    }
}

/// Replaces what would break the format: `;` (the frame separator) by `:`, line breaks by
/// spaces.
fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| match c {
            ';' => ':',
            '\n' | '\r' => ' ',
            other => other,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::StackReport;
    use crate::testing::frame;

    fn report(stacks: Vec<(u64, Vec<Frame>)>) -> Report {
        let stacks = stacks
            .into_iter()
            .map(|(bytes, frames)| StackReport {
                bytes,
                allocations: 1,
                growth_bytes_per_second: 0.0,
                oldest_age_seconds: 0.0,
                leaking: false,
                frames,
                ..StackReport::default()
            })
            .collect();
        crate::testing::report(1, "app", stacks)
    }

    #[test]
    fn outermost_first_with_bytes() {
        let r = report(vec![
            (
                4096,
                vec![
                    frame(0x10, Some("leaf"), Some("/usr/bin/app")),
                    frame(0x20, Some("middle"), Some("/usr/bin/app")),
                    frame(0x30, Some("main"), Some("/usr/bin/app")),
                ],
            ),
            (100, vec![frame(0x40, Some("other"), None)]),
        ]);
        assert_eq!(render_folded(&r), "main;middle;leaf 4096\nother 100\n");
    }

    #[test]
    fn unknown_frames() {
        let r = report(vec![(
            8,
            vec![
                frame(0xdead_beef, None, Some("/lib/x86_64-linux-gnu/libc.so.6")),
                frame(0x1234, None, None),
            ],
        )]);
        assert_eq!(render_folded(&r), "[unknown];0xdeadbeef (libc.so.6) 8\n");
    }

    #[test]
    fn a_truncated_stack_starts_at_a_marked_frame() {
        let mut r = report(vec![(
            8,
            vec![
                frame(0x10, Some("leaf"), None),
                frame(0x20, Some("caller"), None),
            ],
        )]);
        r.stacks[0].truncated = true;
        assert_eq!(render_folded(&r), "[truncated];caller;leaf 8\n");
    }

    #[test]
    fn names_are_sanitized() {
        let r = report(vec![(
            1,
            vec![
                frame(1, Some("a;b\nc\r"), None),
                frame(2, Some("outer fn"), None),
            ],
        )]);
        assert_eq!(render_folded(&r), "outer fn;a:b c  1\n");
    }

    #[test]
    fn empty_stacks_are_skipped_and_frameless_ones_unknown() {
        let r = report(vec![
            (0, vec![frame(1, Some("freed"), None)]),
            (5, Vec::new()),
        ]);
        assert_eq!(render_folded(&r), "[unknown] 5\n");
        assert_eq!(render_folded(&report(Vec::new())), "");
    }
}
