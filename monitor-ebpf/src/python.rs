//! CPython frames in the stack walk: for a process user space registered in [`PYTHON_PROCS`],
//! the walk finds the allocating thread's `PyThreadState` and, at each native frame in the
//! interpreter loop (`_PyEval_EvalFrameDefault`), inserts the Python frames that activation
//! runs, innermost first, each as a code object address and an instruction index that user
//! space decodes into a function, file and line (see `PythonProcess` for the layout).
//!
//! The thread state is found in the interpreter's thread list by the thread's native id, and
//! remembered per thread in [`PY_THREADS`] (checked against the id on every use, since a thread
//! state is freed with its thread).
//!
//! Uses only the checked user-memory reads; the walk in `unwind` calls it.

use aya_ebpf::{
    helpers::bpf_probe_read_user,
    macros::map,
    maps::{HashMap, LruHashMap},
};
use monitor_common::{NO_CFRAME, PythonProcess, python_frame};

/// The Python processes being traced, by tgid.
#[map]
pub static PYTHON_PROCS: HashMap<u32, PythonProcess> = HashMap::with_max_entries(1024, 0);

/// The `PyThreadState` of each thread seen allocating, by thread id.
#[map]
static PY_THREADS: LruHashMap<u32, u64> = LruHashMap::with_max_entries(8192, 0);

/// Threads searched in an interpreter's list before giving up.
const MAX_THREADS: usize = 64;

fn read_u64(address: u64) -> Option<u64> {
    // SAFETY: reads user memory through the checked helper.
    unsafe { bpf_probe_read_user(address as *const u64) }.ok()
}

/// The innermost Python frame the thread `tid` executes, or `None` (no Python state, or not
/// running Python code).
#[inline(always)]
pub fn current_frame(python: &PythonProcess, tid: u32) -> Option<u64> {
    let thread = thread_state(python, tid)?;
    let pointer = read_u64(thread.wrapping_add(u64::from(python.thread_frame)))?;
    let frame = if python.cframe_frame == NO_CFRAME {
        pointer
    } else {
        if pointer == 0 {
            return None;
        }
        read_u64(pointer.wrapping_add(u64::from(python.cframe_frame)))?
    };
    (frame != 0).then_some(frame)
}

/// The thread's `PyThreadState`: remembered, or searched for in the first interpreter's list.
#[inline(always)]
fn thread_state(python: &PythonProcess, tid: u32) -> Option<u64> {
    let native_id = u64::from(python.thread_native_id);
    if let Some(&thread) = unsafe { PY_THREADS.get(&tid) }
        && read_u64(thread.wrapping_add(native_id)).is_some_and(|id| id as u32 == tid)
    {
        return Some(thread);
    }
    let interpreter = read_u64(python.interpreters_head)?;
    let mut thread = read_u64(interpreter.wrapping_add(u64::from(python.threads_head)))?;
    for _ in 0..MAX_THREADS {
        if thread == 0 {
            return None;
        }
        if read_u64(thread.wrapping_add(native_id)).is_some_and(|id| id as u32 == tid) {
            let _ = PY_THREADS.insert(&tid, &thread, 0);
            return Some(thread);
        }
        thread = read_u64(thread.wrapping_add(u64::from(python.thread_next)))?;
    }
    None
}

/// One Python frame read: what to record (if anything), the next frame, and whether the run
/// ends with it.
pub struct PythonStep {
    /// The frame to record, `None` for a shim.
    pub frame: Option<u64>,
    /// The next (calling) frame.
    pub previous: u64,
    /// The activation's run of frames ends here.
    pub run_ends: bool,
}

/// Reads the interpreter frame at `address`.
#[inline(always)]
pub fn step(python: &PythonProcess, address: u64) -> Option<PythonStep> {
    // SAFETY: reads user memory through the checked helper (the first 80 bytes hold every field
    // the table names, in every supported version).
    let words = unsafe { bpf_probe_read_user(address as *const [u64; 10]) }.ok()?;
    let word = |offset: u32| words.get((offset / 8) as usize).copied();
    let code = word(python.frame_code)?;
    let previous = word(python.frame_previous)?;
    let instr = word(python.frame_instr)?;
    let marker = (word(python.frame_marker)? >> ((python.frame_marker % 8) * 8)) & 0xff;
    let marked = marker == u64::from(python.marker_value);
    if marked && python.marker_is_shim != 0 {
        return Some(PythonStep {
            frame: None,
            previous,
            run_ends: true,
        });
    }
    let start = code.wrapping_add(u64::from(python.code_adaptive));
    let lasti = if instr >= start {
        (instr - start) / 2
    } else {
        0
    };
    Some(PythonStep {
        frame: Some(python_frame(code, lasti)),
        previous,
        run_ends: marked,
    })
}
