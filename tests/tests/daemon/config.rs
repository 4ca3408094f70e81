//! Configuration errors: `leakmon run` refuses a config file with an unknown key in one line
//! that names the file and the key, before it starts anything.

use std::time::Duration;

use leakmon_tests::{assert_one_line_error, free_local_addr, serial, start_leakmon};

#[test]
fn unknown_config_key_is_a_one_line_error() {
    let _serial = serial();
    let dir = tempfile::Builder::new()
        .prefix("leakmon-config-")
        .tempdir()
        .expect("creating a temporary directory");
    let config = dir.path().join("leakmon.toml");
    std::fs::write(
        &config,
        "[watch]\ninterval_seconds = 2\nsurprise_threshold = 1\n",
    )
    .expect("writing the config file");
    let leakmon = start_leakmon([
        "run".as_ref(),
        "--config".as_ref(),
        config.as_os_str(),
        "--listen".as_ref(),
        free_local_addr().to_string().as_ref(),
        "--state-dir".as_ref(),
        dir.path().join("state").as_os_str(),
    ]);
    let run = leakmon.finish_within(Duration::from_secs(20));
    assert_one_line_error(&run, &config.display().to_string());
    assert_one_line_error(&run, "surprise_threshold");
}
