//! The API token end to end: a daemon configured with `daemon.token_file` answers 401 without
//! it (but still serves `/metrics` and `/healthz`), and the on-call commands send it when given
//! `--token-file` or the daemon's configuration, and say what is missing when not.

use std::os::unix::fs::PermissionsExt as _;
use std::process::{Command, Output};

use leakmon_tests::{Daemon, leakmon_bin, serial};

const TOKEN: &str = "c2VjcmV0LXRva2VuLWZvci10aGUtdGVzdA";

/// `leakmon ARGS...` to the end.
fn leakmon(args: &[&str]) -> Output {
    Command::new(leakmon_bin())
        .args(args)
        .output()
        .expect("running leakmon")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn on_call_commands_send_the_api_token() {
    let _serial = serial();
    let dir = tempfile::Builder::new()
        .prefix("leakmon-token-")
        .tempdir()
        .expect("creating a temporary directory");
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).expect("writing the token file");
    std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o600))
        .expect("chmod 600 the token file");
    let token_path = token_file.to_str().expect("a UTF-8 temporary path");
    let daemon = Daemon::start(&format!("[daemon]\ntoken_file = \"{token_path}\"\n"));
    let addr = daemon.addr().to_string();

    assert_eq!(daemon.request("GET", "/api/v1/status").status, 401);
    daemon.get_ok("/metrics");
    daemon.get_ok("/healthz");

    let without = leakmon(&["status", "--daemon", &addr]);
    assert!(!without.status.success(), "status worked without the token");
    let message = stderr(&without);
    assert_eq!(
        message.trim(),
        format!(
            "leakmon: the leakmon daemon at {addr} requires its API token: pass --token-file \
             FILE, or --config with the daemon's configuration (daemon.token_file)"
        )
    );

    let with_file = leakmon(&["status", "--daemon", &addr, "--token-file", token_path]);
    assert!(with_file.status.success(), "{}", stderr(&with_file));
    let printed = String::from_utf8_lossy(&with_file.stdout);
    assert!(
        printed.starts_with(&format!("leakmon daemon at {addr}")),
        "{printed}"
    );

    let client_config = dir.path().join("client.toml");
    std::fs::write(
        &client_config,
        format!("[daemon]\nlisten = \"{addr}\"\ntoken_file = \"{token_path}\"\n"),
    )
    .expect("writing the client's config");
    let config_path = client_config.to_str().expect("a UTF-8 temporary path");
    let with_config = leakmon(&["status", "--config", config_path]);
    assert!(with_config.status.success(), "{}", stderr(&with_config));
    let report = leakmon(&["report", "--config", config_path, "1"]);
    assert!(!report.status.success(), "pid 1 has no report");
    assert_eq!(stderr(&report).trim(), "leakmon: no report for process 1");

    std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o644))
        .expect("chmod 644 the token file");
    let open_file = leakmon(&["status", "--daemon", &addr, "--token-file", token_path]);
    assert!(!open_file.status.success());
    assert!(
        stderr(&open_file).contains("must be readable by root only"),
        "{}",
        stderr(&open_file)
    );
}
