//! A program nobody on the team wrote, from the distribution's archive: Debian's redis-server,
//! built -O2 without frame pointers and linked with jemalloc, made to grow by a client. Its top
//! leaking stack must name redis's own functions on the data path, not only its allocation
//! wrapper (`zmalloc`), and every frame must be code.

use std::time::Duration;

use leakmon_tests::{RedisServer, describe_report, has_frame, serial, trace_running};

/// redis's allocation wrappers and the allocator: a stack of only these names no culprit.
const WRAPPERS: [&str; 7] = [
    "zmalloc",
    "ztrymalloc",
    "zcalloc",
    "zrealloc",
    "malloc",
    "calloc",
    "je_",
];

/// redis's functions on the path of a `SET` that adds a key.
const DATA_PATH: [&str; 6] = [
    "setCommand",
    "setGenericCommand",
    "dbAdd",
    "createStringObject",
    "processCommand",
    "processInputBuffer",
];

/// Traces a redis-server that a client makes grow (2,000 keys of 256 bytes a second) with
/// `method_args`, and checks its top leaking stack names redis's data path.
fn redis_growth_names_its_data_path(method_args: &[&str]) {
    let _serial = serial();
    let redis = RedisServer::start();
    let client = redis.grow(2_000, 256, Duration::from_secs(14));
    let args = [&["--duration", "8", "--interval", "0.5"], method_args].concat();
    let report = trace_running(redis.pid(), &args, Duration::from_secs(2));
    let stored = client.join().expect("the redis client");
    eprintln!("stored {stored} keys\n{}", describe_report(&report));
    let top = report
        .stacks
        .iter()
        .find(|stack| stack.leaking)
        .unwrap_or_else(|| panic!("no leaking stack\n{}", describe_report(&report)));
    assert!(
        DATA_PATH.iter().any(|function| has_frame(top, function)),
        "the top leaking stack names none of redis's data path {DATA_PATH:?}\n{}",
        describe_report(&report)
    );
    assert!(
        top.frames.iter().any(|frame| frame
            .symbol
            .as_deref()
            .is_some_and(|symbol| !WRAPPERS.iter().any(|wrapper| symbol.starts_with(wrapper)))),
        "the top leaking stack is only allocation wrappers\n{}",
        describe_report(&report)
    );
    for stack in &report.stacks {
        for frame in &stack.frames {
            assert!(
                frame.module.is_some(),
                "frame {:#x} is in no mapped object\n{}",
                frame.address,
                describe_report(&report)
            );
        }
    }
}

#[test]
fn redis_server_growing_names_its_data_path() {
    redis_growth_names_its_data_path(&[]);
}

/// The same by its page faults: jemalloc's own code writes the new pages first, but the stacks
/// go on to redis's functions.
#[test]
fn redis_server_growing_by_page_faults_names_its_data_path() {
    redis_growth_names_its_data_path(&["--method", "page-faults"]);
}
