//! `cargo xtask deb`: builds the Debian package `leakmon_<version>_<arch>.deb` with cargo-deb from
//! `[package.metadata.deb]` in `monitor-daemon/Cargo.toml`. It installs cargo-deb (and dpkg-dev,
//! whose dpkg-shlibdeps computes the `Depends`) when missing, builds the release binary, has it
//! write its man pages and shell completions into `target/xtask/deb-assets/`, runs
//! `cargo deb --no-build`, then checks that the package holds what it should.
use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::{Context as _, Result, bail};

use crate::daemon;
use crate::process::{self, command, output, run, workspace_root};

/// Where `leakmon generate` writes the man pages (`man/`) and completions (`completions/`),
/// relative to the workspace root. The asset list in `monitor-daemon/Cargo.toml` names this
/// directory (as `../target/xtask/deb-assets`), so it does not follow `CARGO_TARGET_DIR`.
const ASSETS_DIR: &str = "target/xtask/deb-assets";

/// The completion files `leakmon generate completions` writes (clap_complete's names for bash,
/// zsh and fish), which the asset list installs under each shell's own name.
const COMPLETIONS: [&str; 3] = ["leakmon.bash", "_leakmon", "leakmon.fish"];

/// The systemd unit the package installs (cargo-deb finds it through `systemd-units`; without
/// it cargo-deb only warns and leaves the unit out).
const UNIT: &str = "deploy/leakmon.service";

/// Files the package must hold besides the man pages, as `dpkg-deb -c` names them (without the
/// leading `./`).
const PACKAGE_FILES: &[&str] = &[
    "usr/bin/leakmon",
    "etc/leakmon/config.toml",
    "usr/lib/systemd/system/leakmon.service",
    "usr/share/bash-completion/completions/leakmon",
    "usr/share/zsh/vendor-completions/_leakmon",
    "usr/share/fish/vendor_completions.d/leakmon.fish",
    "usr/share/doc/leakmon/README.md",
    "usr/share/doc/leakmon/copyright",
];

/// The configuration file dpkg must keep as a conffile.
const CONFFILE: &str = "/etc/leakmon/config.toml";

/// Builds the package and prints its path.
pub fn deb() -> Result<()> {
    if !workspace_root().join(UNIT).is_file() {
        bail!("{UNIT} is missing: the package would have no systemd unit");
    }
    crate::setup::ensure_cargo_tool("deb", "deb", "cargo-deb")?;
    dpkg_dev()?;
    let leakmon = daemon::build_release()?;
    let assets = workspace_root().join(ASSETS_DIR);
    let man_pages = generate_assets(&leakmon, &assets)?;
    let mut cargo_deb = process::cargo()?;
    cargo_deb.args(["deb", "-p", "monitor-daemon", "--no-build"]);
    // cargo-deb warns that the `../target/xtask/deb-assets/` sources "will not be built": they
    // are not meant to be.
    println!("$ {}", process::display(&cargo_deb));
    let stdout = output(&mut cargo_deb)?;
    let deb =
        deb_path(&stdout).with_context(|| format!("cargo deb printed no .deb path:\n{stdout}"))?;
    let deb = workspace_root().join(deb);
    check_package(&deb, &man_pages)?;
    println!("built {}", deb.display());
    Ok(())
}

/// cargo-deb computes `Depends` (`$auto`) with dpkg-shlibdeps, from dpkg-dev; without it the
/// package would depend on nothing.
fn dpkg_dev() -> Result<()> {
    let status = command("dpkg-query")?
        .args(["-W", "-f=${Status}", "dpkg-dev"])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .context("cannot start dpkg-query")?;
    if status.status.success() && status.stdout == b"install ok installed" {
        println!("deb: Debian package dpkg-dev: installed");
        return Ok(());
    }
    println!("deb: Debian package dpkg-dev: missing, installing");
    run(command("apt-get")?.arg("update"))?;
    run(command("apt-get")?
        .env("DEBIAN_FRONTEND", "noninteractive")
        .args(["install", "-y", "--no-install-recommends", "dpkg-dev"]))
}

/// Writes the man pages and completions into `dir` afresh (a man page of a removed subcommand
/// must not linger) with `leakmon generate`, and returns the man pages' file names.
fn generate_assets(leakmon: &Path, dir: &Path) -> Result<Vec<String>> {
    match fs::remove_dir_all(dir) {
        Err(error) if error.kind() != ErrorKind::NotFound => {
            return Err(error).with_context(|| format!("removing {}", dir.display()));
        }
        _ => {}
    }
    let man = dir.join("man");
    let completions = dir.join("completions");
    run(command(leakmon)?.args(["generate", "man"]).arg(&man))?;
    run(command(leakmon)?
        .args(["generate", "completions"])
        .arg(&completions))?;
    for name in COMPLETIONS {
        let path = completions.join(name);
        if !path.is_file() {
            bail!("`leakmon generate completions` wrote no {}", path.display());
        }
    }
    let mut man_pages = Vec::new();
    for entry in fs::read_dir(&man).with_context(|| format!("listing {}", man.display()))? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if name.ends_with(".1") {
            man_pages.push(name);
        }
    }
    man_pages.sort();
    if !man_pages.iter().any(|name| name == "leakmon.1") {
        bail!(
            "`leakmon generate man` wrote no leakmon.1 in {}",
            man.display()
        );
    }
    Ok(man_pages)
}

/// The `.deb` path cargo-deb prints as its last line of standard output.
fn deb_path(stdout: &str) -> Option<PathBuf> {
    stdout
        .lines()
        .map(str::trim)
        .rfind(|line| !line.is_empty())
        .filter(|line| line.ends_with(".deb"))
        .map(PathBuf::from)
}

/// Every file the package must hold: [`PACKAGE_FILES`] and the man pages, which cargo-deb
/// gzips.
fn expected_files(man_pages: &[String]) -> Vec<String> {
    PACKAGE_FILES
        .iter()
        .map(|&file| file.to_owned())
        .chain(
            man_pages
                .iter()
                .map(|page| format!("usr/share/man/man1/{page}.gz")),
        )
        .collect()
}

/// The files of `expected` missing from a `dpkg-deb -c` listing (`-rw-r--r-- root/root 123
/// 2024-01-01 00:00 ./usr/bin/leakmon`; links end in `-> target`).
fn missing_files(listing: &str, expected: &[String]) -> Vec<String> {
    let listed: Vec<&str> = listing
        .lines()
        .filter_map(|line| line.split_once(" ./"))
        .map(|(_, path)| path.split_once(" -> ").map_or(path, |(path, _)| path))
        .collect();
    expected
        .iter()
        .filter(|file| !listed.contains(&file.as_str()))
        .cloned()
        .collect()
}

/// Fails unless the package holds every expected file, depends on libc6 and keeps the
/// configuration as a conffile.
fn check_package(deb: &Path, man_pages: &[String]) -> Result<()> {
    let listing = output(command("dpkg-deb")?.arg("--contents").arg(deb))?;
    let missing = missing_files(&listing, &expected_files(man_pages));
    if !missing.is_empty() {
        bail!("{} lacks {}", deb.display(), missing.join(", "));
    }
    let depends = output(command("dpkg-deb")?.arg("--field").arg(deb).arg("Depends"))?;
    if !depends
        .split(',')
        .any(|dep| dep.trim().starts_with("libc6"))
    {
        bail!(
            "{} does not depend on libc6 (Depends: {})",
            deb.display(),
            depends.trim()
        );
    }
    let conffiles = output(command("dpkg-deb")?.arg("--info").arg(deb).arg("conffiles"))?;
    if !conffiles.lines().any(|line| line.trim() == CONFFILE) {
        bail!("{} does not keep {CONFFILE} as a conffile", deb.display());
    }
    println!("deb: {} holds every expected file", deb.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `[package.metadata.deb]` of monitor-daemon's manifest.
    fn metadata() -> toml::Table {
        let path = workspace_root().join("monitor-daemon/Cargo.toml");
        let text = fs::read_to_string(&path).unwrap();
        let mut manifest: toml::Table = text.parse().unwrap();
        let package = manifest.remove("package").unwrap();
        let mut metadata = package.as_table().unwrap()["metadata"].clone();
        metadata
            .as_table_mut()
            .unwrap()
            .remove("deb")
            .unwrap()
            .try_into()
            .unwrap()
    }

    /// The `[source, destination, mode]` triples of the asset list.
    fn assets() -> Vec<[String; 3]> {
        metadata()["assets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|asset| asset.clone().try_into().unwrap())
            .collect()
    }

    /// Where an asset lands: its destination, or under it when it ends in `/`.
    fn installed_path(source: &str, dest: &str) -> String {
        match dest.strip_suffix('/') {
            Some(dir) => format!("{dir}/{}", source.rsplit('/').next().unwrap()),
            None => dest.to_owned(),
        }
    }

    #[test]
    fn package_fields() {
        let deb = metadata();
        assert_eq!(deb["name"].as_str(), Some("leakmon"));
        assert_eq!(deb["section"].as_str(), Some("admin"));
        assert_eq!(deb["priority"].as_str(), Some("optional"));
        assert!(deb["depends"].as_str().unwrap().contains("$auto"));
        assert!(!deb["extended-description"].as_str().unwrap().is_empty());
        // No maintainer scripts of our own: cargo-deb generates the systemd ones (only when
        // `maintainer-scripts` is set) from scratch.
        let dir = workspace_root()
            .join("monitor-daemon")
            .join(deb["maintainer-scripts"].as_str().unwrap());
        assert!(dir.is_dir());
        for name in [
            "preinst",
            "postinst",
            "prerm",
            "postrm",
            "config",
            "templates",
        ] {
            let script = dir.join(name);
            assert!(!script.exists(), "{} exists", script.display());
        }
    }

    #[test]
    fn the_unit_is_neither_enabled_nor_started() {
        let units = metadata()["systemd-units"].as_table().unwrap().clone();
        assert_eq!(units["enable"].as_bool(), Some(false));
        assert_eq!(units["start"].as_bool(), Some(false));
        assert_eq!(units["unit-name"].as_str(), Some("leakmon"));
        // cargo-deb looks for `<unit-name>.service` in `unit-scripts`.
        let dir = units["unit-scripts"].as_str().unwrap();
        assert_eq!(
            format!("{}/leakmon.service", dir.strip_prefix("../").unwrap()),
            UNIT
        );
    }

    #[test]
    fn assets_install_the_package_files() {
        let mut installed: Vec<String> = assets()
            .iter()
            .map(|[source, dest, _]| installed_path(source, dest))
            .collect();
        // Added by cargo-deb itself.
        installed.push("usr/lib/systemd/system/leakmon.service".to_owned());
        installed.push("usr/share/doc/leakmon/copyright".to_owned());
        for file in PACKAGE_FILES {
            assert!(
                installed.contains(&file.to_string()),
                "no asset installs {file}"
            );
        }
        assert!(installed.contains(&"usr/share/man/man1/*.1".to_owned()));
        assert!(installed.contains(&CONFFILE[1..].to_owned()));
    }

    #[test]
    fn asset_sources_exist_or_are_generated() {
        let generated = format!("../{ASSETS_DIR}/");
        for [source, _, mode] in assets() {
            assert!(mode == "644" || mode == "755", "{source}: mode {mode}");
            if source.starts_with("target/release/") {
                continue;
            }
            match source.strip_prefix(&generated) {
                Some("man/*.1") => {}
                Some(file) => {
                    let name = file.strip_prefix("completions/").unwrap();
                    assert!(COMPLETIONS.contains(&name), "{source} is not generated");
                }
                None => assert!(
                    workspace_root()
                        .join("monitor-daemon")
                        .join(&source)
                        .is_file(),
                    "{source} does not exist"
                ),
            }
        }
    }

    #[test]
    fn reads_the_deb_path() {
        let stdout = "warning: ignored\n/w/target/debian/leakmon_0.1.0-1_amd64.deb\n\n";
        assert_eq!(
            deb_path(stdout),
            Some(PathBuf::from("/w/target/debian/leakmon_0.1.0-1_amd64.deb"))
        );
        assert_eq!(deb_path("something else\n"), None);
        assert_eq!(deb_path(""), None);
    }

    #[test]
    fn finds_missing_files() {
        let listing = "\
drwxr-xr-x 0/0               0 2024-01-01 00:00 ./
drwxr-xr-x 0/0               0 2024-01-01 00:00 ./usr/bin/
-rwxr-xr-x 0/0         1000000 2024-01-01 00:00 ./usr/bin/leakmon
-rw-r--r-- 0/0             123 2024-01-01 00:00 ./usr/share/man/man1/leakmon.1.gz
lrwxrwxrwx 0/0               0 2024-01-01 00:00 ./usr/share/doc/leakmon/copyright -> x
";
        let expected = expected_files(&["leakmon.1".to_owned(), "leakmon-run.1".to_owned()]);
        let missing = missing_files(listing, &expected);
        assert!(!missing.contains(&"usr/bin/leakmon".to_owned()));
        assert!(!missing.contains(&"usr/share/man/man1/leakmon.1.gz".to_owned()));
        assert!(!missing.contains(&"usr/share/doc/leakmon/copyright".to_owned()));
        assert!(missing.contains(&"usr/share/man/man1/leakmon-run.1.gz".to_owned()));
        assert!(missing.contains(&"etc/leakmon/config.toml".to_owned()));
        assert_eq!(missing.len(), PACKAGE_FILES.len() - 2 + 1);
    }
}
