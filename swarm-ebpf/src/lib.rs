#![no_std]
// Exists so swarm-node can depend on this crate for rebuild tracking; the
// programs are in the `swarm-dataplane` binary (src/main.rs).
