//! The few rtnetlink operations the data plane needs, as blocking calls on a
//! connection opened in the calling thread's network namespace.

use std::{fs::File, net::Ipv4Addr, path::Path};

use futures::TryStreamExt as _;
use nix::sched::{CloneFlags, setns};
use rtnetlink::{Handle, LinkUnspec, LinkVeth, LinkVxlan, RouteMessageBuilder};

#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    #[error("opening a netlink socket: {0}")]
    Connect(std::io::Error),
    #[error("starting the netlink runtime: {0}")]
    Runtime(std::io::Error),
    #[error("{what}: {source}")]
    Request {
        what: String,
        #[source]
        source: rtnetlink::Error,
    },
    #[error("no interface named {0:?}")]
    NoSuchLink(String),
    #[error("entering network namespace {path}: {source}")]
    Netns {
        path: String,
        source: std::io::Error,
    },
    #[error("the thread working in {0} panicked")]
    Panicked(String),
}

/// A netlink connection bound to the namespace of the thread that opened it.
pub struct Netlink {
    runtime: tokio::runtime::Runtime,
    handle: Handle,
}

impl Netlink {
    pub fn open() -> Result<Self, NetlinkError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .map_err(NetlinkError::Runtime)?;
        let (connection, handle, _) = runtime
            .block_on(async { rtnetlink::new_connection() })
            .map_err(NetlinkError::Connect)?;
        runtime.spawn(connection);
        Ok(Self { runtime, handle })
    }

    fn run<T>(
        &self,
        what: impl FnOnce() -> String,
        request: impl Future<Output = Result<T, rtnetlink::Error>>,
    ) -> Result<T, NetlinkError> {
        self.runtime
            .block_on(request)
            .map_err(|source| NetlinkError::Request {
                what: what(),
                source,
            })
    }

    /// The index of `name`, or `None` if there is no such link.
    pub fn link_index(&self, name: &str) -> Result<Option<u32>, NetlinkError> {
        let handle = self.handle.clone();
        let name_owned = name.to_owned();
        let found = self.runtime.block_on(async move {
            let mut links = handle.link().get().match_name(name_owned).execute();
            links.try_next().await
        });
        match found {
            Ok(Some(link)) => Ok(Some(link.header.index)),
            Ok(None) => Ok(None),
            // The kernel answers ENODEV for an unknown name.
            Err(rtnetlink::Error::NetlinkError(err)) if err.raw_code() == -libc::ENODEV => Ok(None),
            Err(source) => Err(NetlinkError::Request {
                what: format!("looking up link {name}"),
                source,
            }),
        }
    }

    pub fn require_link(&self, name: &str) -> Result<u32, NetlinkError> {
        self.link_index(name)?
            .ok_or_else(|| NetlinkError::NoSuchLink(name.to_owned()))
    }

    pub fn add_veth(&self, name: &str, peer: &str, mtu: u32) -> Result<(), NetlinkError> {
        let message = LinkVeth::new(name, peer).mtu(mtu).build();
        self.run(
            || format!("creating veth {name}/{peer}"),
            self.handle.link().add(message).execute(),
        )?;
        // The peer gets the MTU set separately: creation sets it on `name` only.
        let peer_index = self.require_link(peer)?;
        self.set(peer_index, |m| m.mtu(mtu), "setting the peer's MTU")
    }

    /// A collect-metadata ("external") VXLAN device on UDP `port`: the
    /// programs choose VNI and remote per packet.
    pub fn add_external_vxlan(&self, name: &str, port: u16) -> Result<u32, NetlinkError> {
        let message = LinkVxlan::new(name, 0)
            .collect_metadata(true)
            .learning(false)
            .port(port)
            .up()
            .build();
        self.run(
            || format!("creating VXLAN device {name} on UDP {port}"),
            self.handle.link().add(message).execute(),
        )?;
        self.require_link(name)
    }

    fn set(
        &self,
        index: u32,
        edit: impl FnOnce(
            rtnetlink::LinkMessageBuilder<LinkUnspec>,
        ) -> rtnetlink::LinkMessageBuilder<LinkUnspec>,
        what: &str,
    ) -> Result<(), NetlinkError> {
        let message = edit(LinkUnspec::new_with_index(index)).build();
        self.run(
            || format!("{what} (link {index})"),
            self.handle.link().set(message).execute(),
        )
    }

    pub fn set_up(&self, index: u32) -> Result<(), NetlinkError> {
        self.set(index, |m| m.up(), "bringing the link up")
    }

    /// Moves the link into the namespace open as `netns`.
    pub fn move_to_netns(&self, index: u32, netns: &File) -> Result<(), NetlinkError> {
        use std::os::fd::AsRawFd as _;
        let fd = netns.as_raw_fd();
        self.set(
            index,
            |m| m.setns_by_fd(fd),
            "moving the link to the task's namespace",
        )
    }

    /// Renames the link and gives it `mac`, then brings it up.
    pub fn rename_and_up(&self, index: u32, name: &str, mac: [u8; 6]) -> Result<(), NetlinkError> {
        self.set(
            index,
            |m| m.name(name).address(mac.to_vec()),
            "naming the task's interface",
        )?;
        self.set_up(index)
    }

    pub fn add_address(&self, index: u32, ip: Ipv4Addr, prefix: u8) -> Result<(), NetlinkError> {
        self.run(
            || format!("adding {ip}/{prefix}"),
            self.handle
                .address()
                .add(index, ip.into(), prefix)
                .execute(),
        )
    }

    pub fn add_default_route(&self, gateway: Ipv4Addr) -> Result<(), NetlinkError> {
        let route = RouteMessageBuilder::<Ipv4Addr>::new()
            .gateway(gateway)
            .build();
        self.run(
            || format!("adding the default route via {gateway}"),
            self.handle.route().add(route).execute(),
        )
    }

    pub fn delete_link(&self, index: u32) -> Result<(), NetlinkError> {
        self.run(
            || format!("deleting link {index}"),
            self.handle.link().del(index).execute(),
        )
    }
}

/// Runs `work` with a [`Netlink`] opened inside the namespace at `netns`, on
/// a thread of its own (setns changes only the calling thread).
pub fn in_netns<T: Send + 'static>(
    netns: &Path,
    work: impl FnOnce(&Netlink) -> Result<T, NetlinkError> + Send + 'static,
) -> Result<T, NetlinkError> {
    let path = netns.to_owned();
    let label = path.display().to_string();
    std::thread::spawn(move || {
        let netns_err = |source| NetlinkError::Netns {
            path: path.display().to_string(),
            source,
        };
        let file = File::open(&path).map_err(netns_err)?;
        setns(&file, CloneFlags::CLONE_NEWNET).map_err(|e| netns_err(e.into()))?;
        let netlink = Netlink::open()?;
        work(&netlink)
    })
    .join()
    .map_err(|_| NetlinkError::Panicked(label))?
}
