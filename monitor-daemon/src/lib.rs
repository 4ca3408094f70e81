//! leakmon: an eBPF-based memory-leak monitor for Linux hosts.
//!
//! The library holds everything the `leakmon` binary does; `main.rs` only parses the command
//! line and reports errors.
//!
//! # Layers
//!
//! The modules are grouped by layer, listed here from the bottom up. A layer uses only the
//! layers listed before it, never one after it, and each folder's doc says what it owns and may
//! use:
//!
//! 1. [`config`] and [`model`]: the configuration file and the daemon's view of the host, shared
//!    by every layer; they use nothing else of the crate.
//! 2. [`report`]: the leak report and its encoders (text, folded stacks, pprof).
//! 3. [`watch`]: `/proc`, the growth statistics and the always-on process watcher (no eBPF).
//! 4. [`symbolize`]: a stack's addresses turned into frames.
//! 5. [`trace`]: the kernel programs seen from user space, and the tracing session that turns
//!    what they record into a report.
//! 6. [`serve`]: what the daemon serves: the HTTP API, the Prometheus metrics, the report store.
//! 7. [`cli`]: the commands run from a terminal: `leakmon trace`, the on-call commands, `top`,
//!    and the API client they share.
//! 8. [`daemon`]: `leakmon run`, which drives the watcher, the tracer and the server.
//!
//! `report` and `watch` do not use each other, nor do `trace` and `serve`, nor `cli` and
//! `daemon`; the order between them is only a convention. The unit tests' fixtures (`testing`)
//! build reports and watched processes for the tests of every layer.
pub mod cli;
pub mod config;
pub mod daemon;
pub mod model;
pub mod report;
pub mod serve;
pub mod symbolize;
#[cfg(test)]
mod testing;
pub mod trace;
pub mod watch;

#[cfg(test)]
mod layers {
    //! The layer rule of the crate documentation, checked on the sources: outside its unit
    //! tests, each module imports only the modules of lower layers (and itself).

    use std::path::Path;

    /// The modules by layer, bottom up (as the crate documentation lists them).
    const LAYERS: [&[&str]; 8] = [
        &["config", "model"],
        &["report"],
        &["watch"],
        &["symbolize"],
        &["trace"],
        &["serve"],
        &["cli"],
        &["daemon"],
    ];

    fn layer(module: &str) -> Option<usize> {
        LAYERS.iter().position(|layer| layer.contains(&module))
    }

    /// The top-level modules `text` names after `crate::`, in `crate::a::b` and in
    /// `crate::{a::b, c}` alike.
    fn imported(text: &str) -> Vec<String> {
        let mut modules = Vec::new();
        for (at, _) in text.match_indices("crate::") {
            let rest = &text[at + "crate::".len()..];
            if let Some(group) = rest.strip_prefix('{') {
                let mut depth = 0;
                let mut start = true;
                for (i, c) in group.char_indices() {
                    match c {
                        '{' => depth += 1,
                        '}' if depth == 0 => break,
                        '}' => depth -= 1,
                        ',' if depth == 0 => start = true,
                        c if start && depth == 0 && (c.is_alphanumeric() || c == '_') => {
                            let name: String = group[i..]
                                .chars()
                                .take_while(|c| c.is_alphanumeric() || *c == '_')
                                .collect();
                            modules.push(name);
                            start = false;
                        }
                        _ => {}
                    }
                }
            } else {
                modules.push(
                    rest.chars()
                        .take_while(|c| c.is_alphanumeric() || *c == '_')
                        .collect(),
                );
            }
        }
        modules
    }

    /// The Rust files under `dir`, recursively.
    fn sources(dir: &Path, files: &mut Vec<std::path::PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                sources(&path, files);
            } else if path.extension().is_some_and(|ext| ext == "rs") {
                files.push(path);
            }
        }
    }

    #[test]
    fn imports_follow_the_layers() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files = Vec::new();
        sources(&root, &mut files);
        let mut checked = 0;
        for file in files {
            let relative = file.strip_prefix(&root).unwrap();
            let first = relative.components().next().unwrap().as_os_str();
            let module = first.to_str().unwrap().trim_end_matches(".rs");
            let Some(own) = layer(module) else {
                continue;
            };
            let text = std::fs::read_to_string(&file).unwrap();
            let code = text.split("#[cfg(test)]").next().unwrap();
            // The unit tests' fixtures serve every layer's tests (and test-only modules).
            for name in imported(code).into_iter().filter(|name| name != "testing") {
                let Some(theirs) = layer(&name) else {
                    panic!("{}: crate::{name} is in no layer", relative.display());
                };
                assert!(
                    theirs < own || name == module,
                    "{}: {module} (layer {}) imports crate::{name} (layer {})",
                    relative.display(),
                    own + 1,
                    theirs + 1
                );
            }
            checked += 1;
        }
        assert!(checked > 40, "{checked} files checked");
    }

    #[test]
    fn reads_both_import_forms() {
        assert_eq!(
            imported(
                "use crate::watch::procfs;\nuse crate::{\n    config::{self, A},\n    model::B,\n};"
            ),
            ["watch", "config", "model"]
        );
    }
}
