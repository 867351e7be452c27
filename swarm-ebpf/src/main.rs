//! swarm's data-plane programs. One module per hook; shared modules per concern.
#![no_std]
#![no_main]

mod arp;
mod conntrack;
mod lb;
mod mesh;
mod nat;
mod overlay;
mod packet;
mod parse;
mod reset;
mod service;
mod stats;
mod tc_task_ingress;
mod tc_underlay_ingress;
mod tc_vxlan_ingress;
mod underlay;
mod underlay_xdp;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier rejects any reachable panic; this is never called.
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
