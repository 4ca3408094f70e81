//! Builds the kernel programs of `monitor-ebpf` for the BPF target with the stable toolchain and
//! leaves the object in `OUT_DIR`, where `src/tracer.rs` embeds it into the `leakmon` binary.
use anyhow::{Context as _, anyhow};

fn main() -> anyhow::Result<()> {
    let metadata = cargo_metadata::MetadataCommand::new()
        .no_deps()
        .exec()
        .context("reading the workspace metadata")?;
    let ebpf = metadata
        .packages
        .iter()
        .find(|package| package.name.as_str() == "monitor-ebpf")
        .ok_or_else(|| anyhow!("monitor-ebpf is not in the workspace"))?;
    let root_dir = ebpf
        .manifest_path
        .parent()
        .ok_or_else(|| anyhow!("{} has no parent directory", ebpf.manifest_path))?;
    let common_dir = root_dir
        .parent()
        .ok_or_else(|| anyhow!("{root_dir} has no parent directory"))?
        .join("monitor-common");
    println!("cargo:rerun-if-changed={common_dir}");
    // The kernel programs need `-Z build-std=core`, which stable rustc accepts with
    // RUSTC_BOOTSTRAP; aya-build reads it from this process's environment.
    // SAFETY: build scripts are single-threaded at this point.
    unsafe { std::env::set_var("RUSTC_BOOTSTRAP", "1") };
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "monitor-ebpf",
            root_dir: root_dir.as_str(),
            ..Default::default()
        }],
        aya_build::Toolchain::Custom("stable"),
    )
}
