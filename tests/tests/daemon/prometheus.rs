//! A real Prometheus server (`/usr/bin/prometheus`), started for the test on a free loopback
//! port with a temporary configuration and database, scraping the daemon every second; and
//! queries through its HTTP API.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use leakmon_tests::{BackgroundProcess, free_local_addr, http_request};
use serde_json::Value;
use tempfile::TempDir;

/// How long Prometheus may take to become ready.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// A Prometheus server scraping one target; killed when dropped.
#[derive(Debug)]
pub struct Prometheus {
    process: BackgroundProcess,
    addr: SocketAddr,
    _dir: TempDir,
}

impl Prometheus {
    /// Starts Prometheus scraping `target` every second and waits until it is ready.
    pub fn start(target: SocketAddr) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("leakmon-prometheus-")
            .tempdir()
            .expect("creating a temporary directory");
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: \
                 1s\nscrape_configs:\n  - job_name: leakmon\n    static_configs:\n      - \
                 targets: ['{target}']\n"
            ),
        )
        .expect("writing the Prometheus configuration");
        let addr = free_local_addr();
        let mut command = Command::new("prometheus");
        command
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .arg("--log.level=warn");
        let mut prometheus = Prometheus {
            process: BackgroundProcess::spawn(command, "prometheus"),
            addr,
            _dir: dir,
        };
        prometheus.wait_ready();
        prometheus
    }

    fn wait_ready(&mut self) {
        let started = Instant::now();
        loop {
            self.process.assert_running();
            let last = match http_request(self.addr, "GET", "/-/ready") {
                Ok(response) if response.status == 200 => return,
                Ok(response) => format!("HTTP {}: {}", response.status, response.text()),
                Err(error) => error,
            };
            assert!(
                started.elapsed() < READY_TIMEOUT,
                "Prometheus was not ready within {} s; last: {last}",
                READY_TIMEOUT.as_secs()
            );
            thread::sleep(Duration::from_millis(250));
        }
    }

    /// Runs an instant query; returns the `data.result` vector, or the reason it failed.
    pub fn query(&mut self, promql: &str) -> Result<Vec<Value>, String> {
        self.process.assert_running();
        let target = format!("/api/v1/query?query={}", percent_encode(promql));
        let response = http_request(self.addr, "GET", &target)?;
        let body: Value = serde_json::from_slice(&response.body).map_err(|error| {
            format!(
                "HTTP {}, not JSON ({error}): {}",
                response.status,
                response.text()
            )
        })?;
        if response.status != 200 || body["status"] != "success" {
            return Err(format!("HTTP {}: {body}", response.status));
        }
        body["data"]["result"]
            .as_array()
            .cloned()
            .ok_or_else(|| format!("no result vector in {body}"))
    }

    /// What Prometheus says about its scrape targets (for failure messages).
    pub fn targets(&self) -> String {
        match http_request(self.addr, "GET", "/api/v1/targets") {
            Ok(response) => response.text(),
            Err(error) => error,
        }
    }
}

/// Percent-encodes everything but the unreserved characters of RFC 3986.
fn percent_encode(text: &str) -> String {
    let mut encoded = String::with_capacity(text.len() * 3);
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            encoded.push(char::from(byte));
        } else {
            let _ = write!(encoded, "%{byte:02X}");
        }
    }
    encoded
}

#[cfg(test)]
mod tests {
    use super::percent_encode;

    #[test]
    fn percent_encoding_keeps_only_unreserved_characters() {
        assert_eq!(
            percent_encode("up{comm=\"rss_leak\"} == 1"),
            "up%7Bcomm%3D%22rss_leak%22%7D%20%3D%3D%201"
        );
        assert_eq!(percent_encode("a-b.c_d~é"), "a-b.c_d~%C3%A9");
    }
}
