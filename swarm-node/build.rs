//! Builds the eBPF programs (`swarm-ebpf`) with aya-build and leaves the object
//! in OUT_DIR for `include_bytes_aligned!`; generates the gRPC code of
//! `proto/cluster.proto`.
//!
//! aya-build passes every line of the eBPF build's cargo output on as a
//! `cargo:warning`, so a first build would show dozens of "Compiling ..."
//! warnings. This script runs that build in a second run of itself and
//! passes its output on only when the build fails.
//!
//! `SWARM_SKIP_EBPF=1` is the explicit switch for checking or linting user space
//! on a machine without bpf-linker: an empty object is embedded instead, and the
//! daemon refuses to start with a message that says so.

use std::{
    env, fs,
    io::Write as _,
    path::PathBuf,
    process::{Command, Stdio},
};

use anyhow::{Context as _, anyhow};
use aya_build::{Package, Toolchain};

const EBPF_PACKAGE: &str = "swarm-ebpf";
const EBPF_BINARY: &str = "swarm-dataplane";
/// Set in the second run of this script: the one that builds the eBPF crate.
const EBPF_CHILD: &str = "SWARM_BUILD_SCRIPT_EBPF_CHILD";

fn main() -> anyhow::Result<()> {
    if env::var_os(EBPF_CHILD).is_some() {
        return build_ebpf();
    }
    // The managers' gRPC API (needs protoc: `cargo xtask setup` installs it).
    tonic_build::compile_protos("proto/cluster.proto")
        .context("compiling proto/cluster.proto (is protoc installed? `cargo xtask setup`)")?;
    println!("cargo:rerun-if-env-changed=SWARM_SKIP_EBPF");
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").ok_or(anyhow!("OUT_DIR not set"))?);

    if env::var("SWARM_SKIP_EBPF").is_ok_and(|v| v == "1") {
        println!(
            "cargo:warning=SWARM_SKIP_EBPF=1: embedding no eBPF programs; this `swarm` cannot run a daemon"
        );
        fs::write(out_dir.join(EBPF_BINARY), []).context("writing the empty eBPF object")?;
        return Ok(());
    }

    quietly_build_ebpf()
}

/// Runs [`build_ebpf`] in a child run of this script; passes on what cargo
/// must know (what to rerun on), and its warnings only when it failed.
fn quietly_build_ebpf() -> anyhow::Result<()> {
    let me = env::current_exe().context("finding the build script's own path")?;
    let output = Command::new(&me)
        .env(EBPF_CHILD, "1")
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {} to build the eBPF programs", me.display()))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let mut out = std::io::stdout().lock();
    for line in stdout.lines() {
        if output.status.success() && line.starts_with("cargo:warning=") {
            continue;
        }
        writeln!(out, "{line}")?;
    }
    if !output.status.success() {
        std::io::stderr().write_all(&output.stderr)?;
        anyhow::bail!(
            "building the eBPF programs failed (its output is above; run `cargo xtask setup` if bpf-linker or the nightly toolchain is missing)"
        );
    }
    Ok(())
}

/// The eBPF crate built with aya-build, its object left in OUT_DIR.
fn build_ebpf() -> anyhow::Result<()> {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?);
    let ebpf_dir = manifest_dir
        .parent()
        .ok_or(anyhow!("swarm-node has no parent directory"))?
        .join(EBPF_PACKAGE);
    let ebpf_dir = ebpf_dir
        .to_str()
        .ok_or(anyhow!("non-UTF-8 path {}", ebpf_dir.display()))?;
    aya_build::build_ebpf(
        [Package {
            name: EBPF_PACKAGE,
            root_dir: ebpf_dir,
            ..Default::default()
        }],
        Toolchain::default(),
    )
    .context("building the eBPF programs (run `cargo xtask setup` if bpf-linker or the nightly toolchain is missing)")
}
