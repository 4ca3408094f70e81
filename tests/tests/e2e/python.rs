//! Python processes traced from outside, attached after they have run for a while: the top
//! leaking stack must name the Python function that keeps the memory, with its file and line,
//! interleaved with the interpreter's native frames, in every report format; on the
//! distribution's python3 (the interpreter linked into its executable) and on every other
//! CPython of this machine (pyenv's, linked to a shared libpython as an embedding program is).
//! A cache that fills then evicts is not flagged, a thread other than the main one is walked, and
//! an interpreter version leakmon does not know gets native frames and one note, never garbage.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use leakmon_tests::{
    DISTRIBUTION_PYTHON, Report, StackReport, TraceRun, assert_no_leak, describe_report,
    pyenv_pythons, python_script, trace_spawned,
};
use monitor_daemon::report::{self as report_format, Language, OutputFormat};

/// Seconds a script runs: attached after 3 s, traced for 6.
const SCRIPT_SECONDS: &str = "10";
const TRACE: &[&str] = &["--duration", "6", "--interval", "0.5"];

/// Traces `script` run by `python`, attached after it ran 3 seconds.
fn traced(python: &Path, script: &str, args: &[&str]) -> TraceRun {
    let mut command = Command::new(python);
    command.arg(python_script(script)).arg(SCRIPT_SECONDS);
    let name = script.trim_end_matches(".py");
    let args = [TRACE, args].concat();
    trace_spawned(command, name, name, &args, Duration::from_secs(3), |pid| {
        pid
    })
    .0
}

/// The line of `script` that contains `text`.
fn line_of(script: &str, text: &str) -> u32 {
    let source = std::fs::read_to_string(python_script(script)).expect("the script");
    let index = source
        .lines()
        .position(|line| line.contains(text))
        .unwrap_or_else(|| panic!("{script} has no line with {text:?}"));
    u32::try_from(index + 1).expect("a line number")
}

/// The top leaking stack has the Python frame `function` at `script`:`line`; returns it.
fn assert_python_culprit<'r>(
    report: &'r Report,
    script: &str,
    function: &str,
    line: u32,
) -> &'r StackReport {
    let top = report
        .stacks
        .iter()
        .find(|stack| stack.leaking)
        .unwrap_or_else(|| panic!("no leaking stack\n{}", describe_report(report)));
    let frame = top
        .frames
        .iter()
        .find(|frame| {
            frame.language == Language::Python && frame.symbol.as_deref() == Some(function)
        })
        .unwrap_or_else(|| {
            panic!(
                "the top leaking stack has no Python frame {function}\n{}",
                describe_report(report)
            )
        });
    assert!(
        frame
            .file
            .as_deref()
            .is_some_and(|file| file.ends_with(script)),
        "{function} is in {:?}, not {script}\n{}",
        frame.file,
        describe_report(report)
    );
    assert_eq!(
        frame.line,
        Some(line),
        "{function} keeps its memory at {script}:{line}\n{}",
        describe_report(report)
    );
    // The interpreter's own frames are there too, after the Python ones they run.
    let python_at = top.frames.iter().position(|f| std::ptr::eq(f, frame));
    let eval_at = top.frames.iter().position(|frame| {
        frame
            .symbol
            .as_deref()
            .is_some_and(|symbol| symbol.contains("_PyEval_EvalFrameDefault"))
    });
    assert!(
        matches!((python_at, eval_at), (Some(p), Some(e)) if p < e),
        "the Python frames do not come before the interpreter frame that runs them\n{}",
        describe_report(report)
    );
    top
}

#[test]
fn distribution_python_buffer_leak_names_function_and_line_in_every_format() {
    let run = traced(Path::new(DISTRIBUTION_PYTHON), "py_buffer_leak.py", &[]);
    let line = line_of("py_buffer_leak.py", "PROCESSED.append(bytearray(record))");
    assert_python_culprit(&run.report, "py_buffer_leak.py", "remember", line);
    let expected = format!("remember (py_buffer_leak.py:{line})");
    let folded = String::from_utf8(
        report_format::encode(&run.report, OutputFormat::Folded, 10).expect("folded"),
    )
    .expect("text");
    assert!(
        folded
            .lines()
            .next()
            .is_some_and(|top| top.contains(&format!("py:{expected}"))),
        "the folded stacks do not mark the Python frame:\n{folded}"
    );
    let text = String::from_utf8(
        report_format::encode(&run.report, OutputFormat::Text, 10).expect("text"),
    )
    .expect("text");
    assert!(
        text.contains(&format!(
            "remember ({}:{line}) [python]",
            python_script("py_buffer_leak.py").display()
        )),
        "the text report does not show the Python frame:\n{text}"
    );
    let pprof = report_format::encode(&run.report, OutputFormat::Pprof, 10).expect("pprof");
    let profile = report_format::pprof::decode_pprof(&pprof).expect("it decodes");
    let name = profile
        .string_table
        .iter()
        .position(|text| text == "remember")
        .expect("the pprof names remember") as i64;
    let function = profile
        .function
        .iter()
        .find(|function| function.name == name)
        .expect("a function named remember");
    assert!(
        profile.string_table[function.filename as usize].ends_with("py_buffer_leak.py"),
        "the pprof function has no file"
    );
    assert!(
        profile.location.iter().any(|location| location
            .line
            .iter()
            .any(|l| l.function_id == function.id && l.line == i64::from(line))),
        "no pprof location at line {line}"
    );
}

#[test]
fn small_objects_in_a_dict_are_found_through_pymalloc_arenas() {
    let run = traced(Path::new(DISTRIBUTION_PYTHON), "py_small_leak.py", &[]);
    let line = line_of("py_small_leak.py", "SESSIONS[");
    assert_python_culprit(&run.report, "py_small_leak.py", "index_session", line);
}

#[test]
fn small_objects_by_page_faults() {
    let run = traced(
        Path::new(DISTRIBUTION_PYTHON),
        "py_small_leak.py",
        &["--method", "page-faults"],
    );
    let line = line_of("py_small_leak.py", "SESSIONS[");
    assert_python_culprit(&run.report, "py_small_leak.py", "index_session", line);
}

#[test]
fn a_worker_thread_leaking() {
    let run = traced(Path::new(DISTRIBUTION_PYTHON), "py_thread_leak.py", &[]);
    let line = line_of("py_thread_leak.py", "RESULTS.append");
    let top = assert_python_culprit(&run.report, "py_thread_leak.py", "keep_result", line);
    assert!(
        top.frames
            .iter()
            .any(|frame| frame.symbol.as_deref() == Some("worker")),
        "the worker thread's outer function is missing\n{}",
        describe_report(&run.report)
    );
}

#[test]
fn an_lru_cache_that_evicts_is_not_flagged() {
    let run = traced(Path::new(DISTRIBUTION_PYTHON), "py_lru_cache.py", &[]);
    assert_no_leak(&run.report);
}

/// Every other CPython of the machine that leakmon knows (3.11 to 3.13): the same leak named.
#[test]
fn every_known_cpython_of_the_machine() {
    let mut verified = vec!["Debian 3.11 (executable)".to_owned()];
    for (version, python) in pyenv_pythons() {
        let known = ["3.11.", "3.12.", "3.13."]
            .iter()
            .any(|prefix| version.starts_with(prefix));
        if !known {
            continue;
        }
        let run = traced(&python, "py_buffer_leak.py", &[]);
        let line = line_of("py_buffer_leak.py", "PROCESSED.append(bytearray(record))");
        assert_python_culprit(&run.report, "py_buffer_leak.py", "remember", line);
        verified.push(format!("pyenv {version} (shared libpython)"));
    }
    eprintln!("verified: {}", verified.join(", "));
}

/// An interpreter whose version is not in leakmon's table: a copy of the distribution's
/// python3.11 whose `Py_Version` says 3.9 (the interpreter itself never reads it).
#[test]
fn an_unknown_interpreter_version_gets_native_frames_and_a_note() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let python = dir.path().join("python3.9");
    let mut binary = std::fs::read(DISTRIBUTION_PYTHON).expect("the distribution's python3.11");
    let offset = py_version_file_offset(&binary);
    binary[offset..offset + 4].copy_from_slice(&0x0309_00f0_u32.to_le_bytes());
    std::fs::write(&python, binary).expect("writing the copy");
    std::fs::set_permissions(&python, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("making it executable");
    let run = traced(&python, "py_buffer_leak.py", &[]);
    assert!(
        run.report
            .notes
            .iter()
            .any(|note| note.contains("CPython 3.9") && note.contains("native frames only")),
        "no note about the unknown version: {:?}",
        run.report.notes
    );
    assert!(
        run.report
            .stacks
            .iter()
            .flat_map(|stack| &stack.frames)
            .all(|frame| frame.language == Language::Native),
        "Python frames from an interpreter leakmon does not know\n{}",
        describe_report(&run.report)
    );
    assert!(
        run.report.stacks.iter().any(|stack| stack.leaking),
        "the leak is still found by its native frames\n{}",
        describe_report(&run.report)
    );
}

/// Where the value of `Py_Version` is in the executable's file.
fn py_version_file_offset(binary: &[u8]) -> usize {
    use object::{Object as _, ObjectSection as _, ObjectSymbol as _};
    let file = object::File::parse(binary).expect("an ELF file");
    let symbol = file
        .dynamic_symbols()
        .find(|symbol| symbol.name() == Ok("Py_Version"))
        .expect("Py_Version");
    let section = file
        .section_by_index(symbol.section_index().expect("a section"))
        .expect("its section");
    let (start, _) = section.file_range().expect("in the file");
    usize::try_from(start + (symbol.address() - section.address())).expect("an offset")
}
