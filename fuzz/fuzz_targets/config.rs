//! Configuration text (any bytes read as UTF-8) through `config::parse`: it never panics, and
//! every error is one line naming the origin.
#![no_main]

use libfuzzer_sys::fuzz_target;
use monitor_daemon::config;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match config::parse(text, "fuzz") {
        Ok(config) => {
            assert!(
                config.validate().is_ok(),
                "parse accepted an invalid config"
            );
            assert!(config.reload_changes(&config).is_empty());
        }
        Err(error) => {
            let message = error.to_string();
            assert!(message.starts_with("fuzz: "), "{message}");
            assert!(!message.contains('\n'), "{message}");
        }
    }
});
