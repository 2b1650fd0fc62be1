//! rtnetlink operations inside a lab namespace.
//!
//! A netlink socket belongs to the namespace of the thread that creates it, so every
//! operation runs on a thread that has entered the namespace (`Netns::try_run`), which
//! opens the connection and drives it on a current-thread tokio runtime of its own.

use std::fs::File;
use std::future::Future;
use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use futures::TryStreamExt;
use netlink_packet_route::address::{AddressAttribute, AddressFlags, AddressHeaderFlags};
use netlink_packet_route::link::{LinkAttribute, LinkMessage, State};
use rtnetlink::{Handle, LinkBridge, LinkUnspec, LinkVeth, RouteMessageBuilder};

use super::netns::Netns;

/// Bound on one whole netlink operation (they take milliseconds).
const OP_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs `f` with an rtnetlink handle whose socket lives in `ns`.
fn with_handle<T, F, Fut>(ns: &Netns, what: &str, f: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce(Handle) -> Fut + Send + 'static,
    Fut: Future<Output = Result<T>>,
{
    let r = ns.try_run(move || -> Result<T> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("building a tokio runtime")?;
        rt.block_on(async move {
            let (conn, handle, _) =
                rtnetlink::new_connection().context("opening an rtnetlink socket")?;
            let conn = tokio::spawn(conn);
            let r = tokio::time::timeout(OP_TIMEOUT, f(handle))
                .await
                .unwrap_or_else(|_| Err(anyhow!("timed out after {OP_TIMEOUT:?}")));
            conn.abort();
            r
        })
    });
    r.and_then(|r| r)
        .with_context(|| format!("{what} in netns {}", ns.name()))
}

async fn link_by_name(h: &Handle, name: &str) -> Result<LinkMessage> {
    h.link()
        .get()
        .match_name(name.to_owned())
        .execute()
        .try_next()
        .await
        .with_context(|| format!("looking up interface {name}"))?
        .ok_or_else(|| anyhow!("no interface {name}"))
}

async fn index_of(h: &Handle, name: &str) -> Result<u32> {
    Ok(link_by_name(h, name).await?.header.index)
}

async fn add_addr(h: &Handle, index: u32, ip: IpAddr, len: u8) -> Result<()> {
    let mut req = h.address().add(index, ip, len);
    if ip.is_ipv6() {
        // No duplicate address detection: the address is usable at once, and the lab
        // owns the whole segment anyway.
        req.message_mut()
            .attributes
            .push(AddressAttribute::Flags(AddressFlags::Nodad));
    }
    req.execute()
        .await
        .with_context(|| format!("adding {ip}/{len}"))
}

async fn set_up(h: &Handle, index: u32) -> Result<()> {
    h.link()
        .set(LinkUnspec::new_with_index(index).up().build())
        .execute()
        .await
        .context("setting link up")
}

/// Brings `lo` up and puts `addrs` on it.
pub(crate) fn setup_lo(ns: &Netns, addrs: Vec<(IpAddr, u8)>) -> Result<()> {
    with_handle(ns, "setting up lo", move |h| async move {
        let lo = index_of(&h, "lo").await?;
        set_up(&h, lo).await?;
        for (ip, len) in addrs {
            add_addr(&h, lo, ip, len).await?;
        }
        Ok(())
    })
}

/// Creates bridges (STP off, the kernel default) and brings them up.
pub(crate) fn add_bridges(ns: &Netns, names: Vec<String>) -> Result<()> {
    with_handle(ns, "creating bridges", move |h| async move {
        for name in names {
            h.link()
                .add(LinkBridge::new(&name).build())
                .execute()
                .await
                .with_context(|| format!("creating bridge {name}"))?;
            let index = index_of(&h, &name).await?;
            set_up(&h, index).await?;
        }
        Ok(())
    })
}

/// Creates the veth pair `name` -- `peer` in `ns` (with `mac` on `name` if given) and, if
/// `move_peer_to` is given, moves `peer` into that namespace (by fd).
pub(crate) fn create_veth(
    ns: &Netns,
    name: &str,
    mac: Option<[u8; 6]>,
    peer: &str,
    move_peer_to: Option<PathBuf>,
) -> Result<()> {
    let (name, peer) = (name.to_owned(), peer.to_owned());
    let what = format!("creating veth {name} -- {peer}");
    with_handle(ns, &what, move |h| async move {
        let mut msg = LinkVeth::new(&name, &peer);
        if let Some(mac) = mac {
            msg = msg.address(mac.to_vec());
        }
        h.link().add(msg.build()).execute().await?;
        if let Some(target) = move_peer_to {
            let fd =
                File::open(&target).with_context(|| format!("opening {}", target.display()))?;
            let index = index_of(&h, &peer).await?;
            h.link()
                .set(
                    LinkUnspec::new_with_index(index)
                        .setns_by_fd(fd.as_raw_fd())
                        .build(),
                )
                .execute()
                .await
                .with_context(|| format!("moving {peer} into {}", target.display()))?;
        }
        Ok(())
    })
}

/// Renames interface `from` to `to` (it must still be down) and sets its MAC if given.
pub(crate) fn rename(ns: &Netns, from: &str, to: &str, mac: Option<[u8; 6]>) -> Result<()> {
    let (from, to) = (from.to_owned(), to.to_owned());
    let what = format!("renaming {from} to {to}");
    with_handle(ns, &what, move |h| async move {
        let index = index_of(&h, &from).await?;
        let mut msg = LinkUnspec::new_with_index(index);
        if from != to {
            msg = msg.name(to);
        }
        if let Some(mac) = mac {
            msg = msg.address(mac.to_vec());
        }
        h.link().set(msg.build()).execute().await?;
        Ok(())
    })
}

/// What to do to one interface once every link exists.
pub(crate) struct IfaceSetup {
    pub name: String,
    pub addrs: Vec<(IpAddr, u8)>,
    /// Bridge to enslave the interface to.
    pub controller: Option<String>,
}

/// Adds addresses, enslaves to bridges, and brings the interfaces up.
pub(crate) fn setup_ifaces(ns: &Netns, ifaces: Vec<IfaceSetup>) -> Result<()> {
    with_handle(ns, "configuring interfaces", move |h| async move {
        for i in ifaces {
            let index = index_of(&h, &i.name).await?;
            for (ip, len) in &i.addrs {
                add_addr(&h, index, *ip, *len)
                    .await
                    .with_context(|| format!("on {}", i.name))?;
            }
            if let Some(bridge) = &i.controller {
                let br = index_of(&h, bridge).await?;
                h.link()
                    .set(LinkUnspec::new_with_index(index).controller(br).build())
                    .execute()
                    .await
                    .with_context(|| format!("plugging {} into {bridge}", i.name))?;
            }
            set_up(&h, index)
                .await
                .with_context(|| format!("on {}", i.name))?;
        }
        Ok(())
    })
}

/// Adds static routes (main table).
pub(crate) fn add_routes(ns: &Netns, routes: Vec<super::Route>) -> Result<()> {
    with_handle(ns, "adding routes", move |h| async move {
        for r in routes {
            let (dst, len) = r.dst;
            let msg = RouteMessageBuilder::<IpAddr>::new()
                .destination_prefix(dst, len)
                .and_then(|b| b.gateway(r.via))
                .map_err(|e| anyhow!("route {dst}/{len} via {}: {e}", r.via))?
                .build();
            h.route()
                .add(msg)
                .execute()
                .await
                .with_context(|| format!("adding route {dst}/{len} via {}", r.via))?;
        }
        Ok(())
    })
}

/// Waits (bounded) until every named interface reports operstate UP.
pub(crate) fn wait_oper_up(ns: &Netns, names: Vec<String>, timeout: Duration) -> Result<()> {
    with_handle(ns, "waiting for links", move |h| async move {
        let deadline = Instant::now() + timeout;
        for name in names {
            loop {
                let link = link_by_name(&h, &name).await?;
                let up = link
                    .attributes
                    .iter()
                    .any(|a| matches!(a, LinkAttribute::OperState(State::Up)));
                if up {
                    break;
                }
                if Instant::now() >= deadline {
                    bail!("{name} is still not operationally up after {timeout:?}");
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
        Ok(())
    })
}

/// Waits (bounded) until no address of the namespace is tentative. With duplicate
/// address detection off, the kernel still marks an interface's link-local address
/// tentative until its address worker has run once after the link came up.
pub(crate) fn wait_no_tentative(ns: &Netns, timeout: Duration) -> Result<()> {
    with_handle(ns, "waiting for tentative addresses", move |h| async move {
        let deadline = Instant::now() + timeout;
        loop {
            let addrs: Vec<_> = h.address().get().execute().try_collect().await?;
            let tentative: Vec<String> = addrs
                .iter()
                .filter(|a| {
                    a.header.flags.contains(AddressHeaderFlags::Tentative)
                        || a.attributes.iter().any(|at| {
                            matches!(at, AddressAttribute::Flags(f) if f.contains(AddressFlags::Tentative))
                        })
                })
                .map(|a| format!("{:?}", a.attributes.first()))
                .collect();
            if tentative.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!("addresses still tentative after {timeout:?}: {tentative:?}");
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
}

/// Index and MAC address of an interface.
pub(crate) fn link_info(ns: &Netns, name: &str) -> Result<(u32, [u8; 6])> {
    let name = name.to_owned();
    let what = format!("looking up {name}");
    with_handle(ns, &what, move |h| async move {
        let link = link_by_name(&h, &name).await?;
        let mac = link
            .attributes
            .iter()
            .find_map(|a| match a {
                LinkAttribute::Address(m) => <[u8; 6]>::try_from(m.as_slice()).ok(),
                _ => None,
            })
            .ok_or_else(|| anyhow!("{name} has no 6-byte MAC address"))?;
        Ok((link.header.index, mac))
    })
}
