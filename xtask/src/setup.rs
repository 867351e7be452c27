//! Installs what building and testing swarm needs, only what is missing.
//! Quick when everything is present: a few dpkg and rustup queries.

use std::time::Instant;

use anyhow::Context as _;

use crate::process::{self, output, run_with_env};

/// Debian packages: LLVM 22 and the libraries bpf-linker links against, and
/// the tools the tests, demo and benchmarks drive (busybox-static: the
/// tasks' HTTP server and the root directory the chroot test builds;
/// docker.io: the engine the Docker runtime's tests and benchmarks start;
/// dnsutils: `dig` against the tasks' resolver; docker-registry: the real
/// registry the image tests pull from, apache2-utils' htpasswd and openssl
/// for its logins and TLS).
const APT_PACKAGES: &[&str] = &[
    "llvm-22-dev",
    "libpolly-22-dev",
    "libzstd-dev",
    "zlib1g-dev",
    "iproute2",
    "iputils-ping",
    "iperf3",
    "bpftool",
    "ethtool",
    "tshark",
    "nftables",
    "protobuf-compiler",
    "busybox-static",
    "docker.io",
    "dnsutils",
    "docker-registry",
    "apache2-utils",
    "openssl",
];
const LLVM_BIN: &str = "/usr/lib/llvm-22/bin";
const BPF_LINKER_VERSION: &str = "0.13.0";

pub fn run() -> anyhow::Result<()> {
    let started = Instant::now();
    let mut installed = Vec::new();

    let missing: Vec<&str> = APT_PACKAGES
        .iter()
        .copied()
        .filter(|pkg| !dpkg_installed(pkg))
        .collect();
    if !missing.is_empty() {
        println!("setup: installing Debian packages: {}", missing.join(" "));
        let env = [("DEBIAN_FRONTEND", "noninteractive")];
        run_with_env("apt-get", &["update", "-q"], &env)
            .context("apt-get update (are you root?)")?;
        let mut args = vec!["install", "-y", "-q", "--no-install-recommends"];
        args.extend(&missing);
        run_with_env("apt-get", &args, &env)?;
        installed.extend(missing.iter().map(|p| p.to_string()));
    }

    let toolchains = output("rustup", &["toolchain", "list"]).context("rustup is not on PATH")?;
    if !toolchains.lines().any(|l| l.starts_with("nightly")) {
        println!("setup: installing the nightly toolchain with rust-src and clippy");
        process::run(
            "rustup",
            &[
                "toolchain",
                "install",
                "nightly",
                "--profile",
                "minimal",
                "--component",
                "rust-src,clippy",
            ],
        )?;
        installed.push("nightly toolchain".into());
    }
    // Never `rustup update`: the nightly on the machine is the one verified to work.
    let components = output(
        "rustup",
        &["component", "list", "--toolchain", "nightly", "--installed"],
    )
    .unwrap_or_default();
    // rust-src builds `core` for the BPF target; clippy lints the eBPF crate.
    for component in ["rust-src", "clippy"] {
        if !components.lines().any(|l| l.starts_with(component)) {
            println!("setup: adding {component} to the nightly toolchain");
            process::run(
                "rustup",
                &["component", "add", component, "--toolchain", "nightly"],
            )?;
            installed.push(format!("nightly {component}"));
        }
    }
    let stable = output("rustup", &["component", "list", "--installed"]).unwrap_or_default();
    for component in ["clippy", "rustfmt"] {
        if !stable.lines().any(|l| l.starts_with(component)) {
            println!("setup: adding {component}");
            process::run("rustup", &["component", "add", component])?;
            installed.push(component.into());
        }
    }

    if output("bpf-linker", &["--version"]).is_none() {
        println!(
            "setup: building bpf-linker {BPF_LINKER_VERSION} against LLVM 22 (a minute or two)"
        );
        let path = format!("{LLVM_BIN}:{}", std::env::var("PATH").unwrap_or_default());
        run_with_env(
            "cargo",
            &[
                "install",
                "bpf-linker",
                "--version",
                BPF_LINKER_VERSION,
                "--no-default-features",
                "--features",
                "llvm-22",
            ],
            &[("PATH", &path)],
        )?;
        installed.push(format!("bpf-linker {BPF_LINKER_VERSION}"));
    }

    if installed.is_empty() {
        println!(
            "setup: all prerequisites present ({:.1} s)",
            started.elapsed().as_secs_f64()
        );
    } else {
        println!(
            "setup: installed {} ({:.0} s)",
            installed.join(", "),
            started.elapsed().as_secs_f64()
        );
    }
    Ok(())
}

fn dpkg_installed(package: &str) -> bool {
    output("dpkg-query", &["-W", "-f=${db:Status-Abbrev}", package])
        .is_some_and(|status| status.starts_with("ii"))
}
