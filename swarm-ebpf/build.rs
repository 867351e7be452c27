use which::which;

/// The eBPF build needs bpf-linker, which cargo cannot express as a dependency:
/// rebuild when the binary on PATH changes. Its absence is reported by the
/// linker step itself; the host build of the empty library does not need it.
fn main() {
    if let Ok(path) = which("bpf-linker") {
        println!("cargo:rerun-if-changed={}", path.display());
    }
}
