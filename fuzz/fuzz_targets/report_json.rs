//! Report JSON (the contract of `--format json` and the store's files): decoding never panics,
//! a decoded report encodes in every format, and its JSON decodes back to the same report.
#![no_main]

use libfuzzer_sys::fuzz_target;
use monitor_daemon::report::{self, OutputFormat, Report};

fuzz_target!(|data: &[u8]| {
    let Ok(decoded) = serde_json::from_slice::<Report>(data) else {
        return;
    };
    for format in OutputFormat::ALL {
        let _ = report::encode(&decoded, format, 10);
    }
    if let Ok(json) = report::encode(&decoded, OutputFormat::Json, usize::MAX) {
        let again = serde_json::from_slice::<Report>(&json).ok();
        assert_eq!(again.as_ref(), Some(&decoded));
    }
});
