//! Sending hand-made Ethernet frames, for malformed-packet tests.

use std::{ffi::CString, io, mem};

/// Sends each frame as-is out of `iface` with an AF_PACKET socket. Call it on
/// a thread inside the sender's namespace ([`crate::in_netns`]).
pub fn send_raw_frames(iface: &str, frames: &[Vec<u8>]) -> io::Result<()> {
    let name = CString::new(iface)?;
    // SAFETY: plain libc calls with checked results; sockaddr_ll is zeroed and filled.
    unsafe {
        let ifindex = libc::if_nametoindex(name.as_ptr());
        if ifindex == 0 {
            return Err(io::Error::last_os_error());
        }
        let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0);
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut addr: libc::sockaddr_ll = mem::zeroed();
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_ifindex = ifindex as i32;
        let mut result = Ok(());
        for frame in frames {
            let sent = libc::sendto(
                fd,
                frame.as_ptr().cast(),
                frame.len(),
                0,
                (&addr as *const libc::sockaddr_ll).cast(),
                mem::size_of::<libc::sockaddr_ll>() as u32,
            );
            if sent < 0 {
                result = Err(io::Error::last_os_error());
                break;
            }
        }
        libc::close(fd);
        result
    }
}
