//! swarm's data-plane programs. A program's entry point counts its drops:
//! everything below it returns the reason.
#![no_std]
#![no_main]

// Programs, one file each, named after the program.
mod from_task;
mod from_tunnel;
mod mesh_tc;
mod underlay_tc;
mod underlay_xdp;

// Shared, one module per concern; none uses a program file.
mod arp;
mod conntrack;
mod lb;
mod mesh;
mod nat;
mod overlay;
mod packet;
mod parse;
mod redirect;
mod reset;
mod service;
mod stats;
mod underlay;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier rejects any reachable panic; this is never called.
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
