//! Packet and drop counters: what the data plane saw, and why it dropped what it dropped.

/// One counter slot: packets and bytes. Kept per CPU by the kernel, summed by user space.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counter {
    pub packets: u64,
    pub bytes: u64,
}

const _: () = assert!(core::mem::size_of::<Counter>() == 16);

#[cfg(feature = "user")]
// SAFETY: plain old data, two u64s, no padding.
unsafe impl aya::Pod for Counter {}

/// Declares a `#[repr(u32)]` enum used as a counter-map index, with its
/// user-facing name for every variant and the list of all variants.
macro_rules! counter_index {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $value:literal => $label:literal,)+ }) => {
        $(#[$meta])*
        #[repr(u32)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum $name {
            $($(#[$vmeta])* $variant = $value,)+
        }

        impl From<$name> for u32 {
            fn from(value: $name) -> u32 {
                value as u32
            }
        }

        impl $name {
            /// Every variant, in index order.
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];
            /// Number of map slots needed to index every variant.
            pub const COUNT: u32 = $name::ALL.len() as u32;

            /// The stable name shown by `swarm dataplane stats`.
            pub const fn label(self) -> &'static str {
                match self {
                    $($name::$variant => $label,)+
                }
            }
        }
    };
}

counter_index! {
    /// What kind of packet the underlay program saw. A packet counts once per
    /// layer it has: an IPv4 TCP frame counts under `Ipv4` and `Tcp`.
    PacketKind {
        /// Every frame the program saw, well-formed or not.
        Received = 0 => "received",
        Arp = 1 => "arp",
        Ipv4 = 2 => "ipv4",
        Ipv6 = 3 => "ipv6",
        /// An EtherType this data plane does not parse (LLDP, MPLS, ...).
        OtherL3 = 4 => "other-l3",
        Tcp = 5 => "tcp",
        Udp = 6 => "udp",
        Icmp = 7 => "icmp",
        Icmpv6 = 8 => "icmpv6",
        /// An IP protocol other than TCP, UDP and ICMP.
        OtherL4 = 9 => "other-l4",
        /// IPv4 fragments after the first (no L4 header to parse).
        Ipv4Fragment = 10 => "ipv4-fragment",
        /// UDP to the data-path port: VXLAN-encapsulated overlay traffic.
        Vxlan = 11 => "vxlan",
        /// Frames passed to the kernel stack.
        Passed = 12 => "passed",
        /// Frames dropped, for any reason (the reasons are in the drop counters).
        Dropped = 13 => "dropped",
        /// Overlay: frames a task sent, seen on its host-side veth.
        OverlayFromTask = 14 => "overlay-from-task",
        /// Overlay: delivered to a task on this node straight from another task's veth.
        OverlayLocal = 15 => "overlay-local",
        /// Overlay: handed to the VXLAN device for another node.
        OverlayEncap = 16 => "overlay-encap",
        /// Overlay: arrived from another node and delivered to a local task.
        OverlayDecap = 17 => "overlay-decap",
        /// Overlay: ARP requests answered by the data plane.
        OverlayArpReplied = 18 => "overlay-arp-replied",
        /// Overlay: frames dropped by the overlay programs (reasons in the drop counters).
        OverlayDropped = 19 => "overlay-dropped",
        /// Services: a new connection to a VIP given a backend.
        ServiceNewFlow = 20 => "service-new-flow",
        /// Services: packets to a VIP rewritten to their flow's backend.
        ServiceDnat = 21 => "service-dnat",
        /// Services: backend replies rewritten back to the VIP or published port.
        ServiceReverseNat = 22 => "service-reverse-nat",
        /// Routing mesh: a new connection to a published port given a backend.
        MeshNewFlow = 23 => "mesh-new-flow",
        /// Routing mesh: packets to a published port sent on to their backend.
        MeshIn = 24 => "mesh-in",
        /// Routing mesh: backend replies sent back out to the client.
        MeshOut = 25 => "mesh-out",
        /// Routing mesh: backend replies tunnelled back to the node the client dialled.
        MeshReturn = 26 => "mesh-return",
        /// Services and mesh: TCP resets sent for flows that cannot be served.
        ResetSent = 27 => "reset-sent",
    }
}

counter_index! {
    /// Why a packet was dropped. Every drop in every program counts under one of these.
    DropReason {
        /// Shorter than an Ethernet header.
        EthTruncated = 0 => "eth-truncated",
        /// 802.1Q/802.1ad tag cut short.
        VlanTruncated = 1 => "vlan-truncated",
        /// ARP header cut short.
        ArpTruncated = 2 => "arp-truncated",
        /// Shorter than the fixed 20-byte IPv4 header.
        Ipv4Truncated = 3 => "ipv4-truncated",
        /// IPv4 version field is not 4.
        Ipv4BadVersion = 4 => "ipv4-bad-version",
        /// IHL below 5 words, or the header runs past the end of the frame.
        Ipv4BadHeaderLength = 5 => "ipv4-bad-header-length",
        /// Total length shorter than the header, or longer than the frame.
        Ipv4BadTotalLength = 6 => "ipv4-bad-total-length",
        /// Shorter than the fixed 40-byte IPv6 header.
        Ipv6Truncated = 7 => "ipv6-truncated",
        /// IPv6 version field is not 6.
        Ipv6BadVersion = 8 => "ipv6-bad-version",
        /// TCP header cut short.
        TcpTruncated = 9 => "tcp-truncated",
        /// TCP data offset below 5 words, or past the end of the packet.
        TcpBadHeaderLength = 10 => "tcp-bad-header-length",
        /// UDP header cut short.
        UdpTruncated = 11 => "udp-truncated",
        /// UDP length field shorter than the header or longer than the packet.
        UdpBadLength = 12 => "udp-bad-length",
        /// ICMP/ICMPv6 header cut short.
        IcmpTruncated = 13 => "icmp-truncated",
        /// Overlay: a frame on a veth the data plane has no port for.
        UnknownPort = 14 => "unknown-port",
        /// Overlay: no endpoint with that address on the network.
        UnknownDestination = 15 => "unknown-destination",
        /// Overlay: VXLAN for a VNI this node does not serve.
        UnknownVni = 16 => "unknown-vni",
        /// Overlay: a decapsulated frame without tunnel metadata.
        NoTunnelKey = 17 => "no-tunnel-key",
        /// Overlay: remote destination but no VXLAN device configured.
        NoTunnelDevice = 18 => "no-tunnel-device",
        /// Overlay: ARP that is not an Ethernet/IPv4 request.
        ArpNotRequest = 19 => "arp-not-request",
        /// Overlay: ARP for an address that is neither the gateway nor an endpoint.
        ArpUnknownTarget = 20 => "arp-unknown-target",
        /// Overlay: a network protocol the overlay does not carry (IPv6 for now).
        UnsupportedL3 = 21 => "unsupported-l3",
        /// Overlay: a kernel helper refused (tunnel key, redirect, packet write).
        HelperFailed = 22 => "helper-failed",
        /// Overlay: a decapsulated frame whose destination is not on this node.
        NotLocal = 23 => "not-local",
        /// Services: a UDP datagram to a VIP or published port with no backend.
        NoBackend = 24 => "no-backend",
        /// Services: a protocol a VIP does not balance (only TCP, UDP and SCTP are).
        ServiceProtocol = 25 => "service-protocol",
        /// Services: an IPv4 header with options, which the NAT does not rewrite.
        ServiceIpOptions = 26 => "service-ip-options",
        /// Services: a flow whose state was lost (its backend removed, its entry
        /// evicted); TCP gets a reset, this counts the packet that triggered it.
        FlowLost = 27 => "flow-lost",
        /// Services: the connection table refused a new entry.
        ConntrackFull = 28 => "conntrack-full",
        /// Routing mesh: a backend slot pointing at an address no node has.
        BackendUnknown = 29 => "backend-unknown",
        /// Services: an SCTP common header cut short, or a length the
        /// checksum update cannot cover.
        SctpTruncated = 30 => "sctp-truncated",
    }
}
