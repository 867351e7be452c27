//! Builds the eBPF programs (`swarm-ebpf`) with aya-build and leaves the object
//! in OUT_DIR for `include_bytes_aligned!`; generates the gRPC code of
//! `proto/cluster.proto`.
//!
//! `SWARM_SKIP_EBPF=1` is the explicit switch for checking or linting user space
//! on a machine without bpf-linker: an empty object is embedded instead, and the
//! daemon refuses to start with a message that says so.

use std::{env, fs, path::PathBuf};

use anyhow::{Context as _, anyhow};
use aya_build::{Package, Toolchain};

const EBPF_PACKAGE: &str = "swarm-ebpf";
const EBPF_BINARY: &str = "swarm-dataplane";

fn main() -> anyhow::Result<()> {
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
