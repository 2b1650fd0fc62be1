//! XDP links by file descriptor: what `attach` needs beyond aya's program-centred API.
//!
//! Undoing a half-done attach means putting back a program this process did not load
//! (the one the links ran before), and choosing what to do per interface means knowing
//! in which mode a link was made. aya 0.14 offers neither (its link updates take only
//! programs it loaded, and XDP link info has no mode), so these are the few bpf(2) and
//! rtnetlink calls involved, on plain file descriptors.

use std::{
    ffi::CString,
    io,
    os::fd::{AsRawFd as _, BorrowedFd, FromRawFd as _, OwnedFd},
    os::unix::ffi::OsStrExt as _,
    path::Path,
};

use aya::programs::XdpMode;
use netlink_packet_core::{NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload};
use netlink_packet_route::{
    RouteNetlinkMessage,
    link::{LinkAttribute, LinkMessage, LinkXdp, XdpAttached},
};

// bpf(2) commands and constants (include/uapi/linux/bpf.h).
const BPF_OBJ_PIN: libc::c_int = 6;
const BPF_OBJ_GET: libc::c_int = 7;
const BPF_PROG_GET_FD_BY_ID: libc::c_int = 13;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_int = 15;
const BPF_LINK_CREATE: libc::c_int = 28;
const BPF_LINK_UPDATE: libc::c_int = 29;
const BPF_LINK_DETACH: libc::c_int = 34;
const BPF_XDP: u32 = 37;
const XDP_FLAGS_SKB_MODE: u32 = 1 << 1;
const XDP_FLAGS_DRV_MODE: u32 = 1 << 2;

/// The bpf(2) syscall with one command's attribute struct (the kernel zero-fills what
/// lies beyond it).
fn sys_bpf<T>(cmd: libc::c_int, attr: &mut T) -> io::Result<libc::c_long> {
    // SAFETY: `attr` is a live #[repr(C)] value of the size passed; the kernel reads it
    // and, for the commands used here, writes only within it or into buffers it points
    // to that outlive the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut T,
            std::mem::size_of::<T>() as libc::c_uint,
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

fn new_fd(rc: libc::c_long) -> OwnedFd {
    // SAFETY: the commands that return a file descriptor return a fresh one we own.
    unsafe { OwnedFd::from_raw_fd(rc as i32) }
}

fn c_path(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a NUL byte in the path"))
}

#[repr(C)]
struct ObjAttr {
    pathname: u64,
    bpf_fd: u32,
    file_flags: u32,
}

/// Open the object pinned at `path` (a link, here).
pub fn open_pinned(path: &Path) -> io::Result<OwnedFd> {
    let c = c_path(path)?;
    let mut attr = ObjAttr {
        pathname: c.as_ptr() as u64,
        bpf_fd: 0,
        file_flags: 0,
    };
    sys_bpf(BPF_OBJ_GET, &mut attr).map(new_fd)
}

/// Pin `fd` at `path`.
pub fn pin(fd: BorrowedFd<'_>, path: &Path) -> io::Result<()> {
    let c = c_path(path)?;
    let mut attr = ObjAttr {
        pathname: c.as_ptr() as u64,
        bpf_fd: fd.as_raw_fd() as u32,
        file_flags: 0,
    };
    sys_bpf(BPF_OBJ_PIN, &mut attr).map(drop)
}

/// A file descriptor of the loaded program with this id (keeps it loaded while held).
pub fn program_by_id(id: u32) -> io::Result<OwnedFd> {
    #[repr(C)]
    struct Attr {
        prog_id: u32,
        next_id: u32,
        open_flags: u32,
    }
    let mut attr = Attr {
        prog_id: id,
        next_id: 0,
        open_flags: 0,
    };
    sys_bpf(BPF_PROG_GET_FD_BY_ID, &mut attr).map(new_fd)
}

/// What the kernel says of an XDP link.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinkState {
    /// The id of the program the link runs; it changes when the link is updated in place.
    pub program_id: u32,
    /// 0 once the interface it was made for is gone.
    pub ifindex: u32,
}

/// The program an XDP link runs and the interface it is on, as the kernel reports them.
pub fn link_state(link: BorrowedFd<'_>) -> io::Result<LinkState> {
    // struct bpf_link_info: type, id, prog_id, then (8-byte aligned) the per-type union,
    // whose XDP member starts with the ifindex.
    let mut info = [0u32; 32];
    #[repr(C)]
    struct Attr {
        bpf_fd: u32,
        info_len: u32,
        info: u64,
    }
    let mut attr = Attr {
        bpf_fd: link.as_raw_fd() as u32,
        info_len: std::mem::size_of_val(&info) as u32,
        info: info.as_mut_ptr() as u64,
    };
    sys_bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr)?;
    Ok(LinkState {
        program_id: info[2],
        ifindex: info[4],
    })
}

fn mode_flags(mode: XdpMode) -> u32 {
    match mode {
        XdpMode::Skb => XDP_FLAGS_SKB_MODE,
        XdpMode::Driver => XDP_FLAGS_DRV_MODE,
        _ => 0,
    }
}

/// Attach `program` to an interface with a new XDP link (detached when its last file
/// descriptor and pin are gone).
pub fn create(program: BorrowedFd<'_>, ifindex: u32, mode: XdpMode) -> io::Result<OwnedFd> {
    #[repr(C)]
    struct Attr {
        prog_fd: u32,
        target_ifindex: u32,
        attach_type: u32,
        flags: u32,
    }
    let mut attr = Attr {
        prog_fd: program.as_raw_fd() as u32,
        target_ifindex: ifindex,
        attach_type: BPF_XDP,
        flags: mode_flags(mode),
    };
    sys_bpf(BPF_LINK_CREATE, &mut attr).map(new_fd)
}

/// Make the link run `program` instead, atomically (the interface never runs without).
pub fn update(link: BorrowedFd<'_>, program: BorrowedFd<'_>) -> io::Result<()> {
    #[repr(C)]
    struct Attr {
        link_fd: u32,
        new_prog_fd: u32,
        flags: u32,
        old_prog_fd: u32,
    }
    let mut attr = Attr {
        link_fd: link.as_raw_fd() as u32,
        new_prog_fd: program.as_raw_fd() as u32,
        flags: 0,
        old_prog_fd: 0,
    };
    sys_bpf(BPF_LINK_UPDATE, &mut attr).map(drop)
}

/// Detach a link now, even while other descriptors or a pin still refer to it (it stays
/// an object, attached to nothing).
pub fn detach(link: BorrowedFd<'_>) -> io::Result<()> {
    #[repr(C)]
    struct Attr {
        link_fd: u32,
    }
    let mut attr = Attr {
        link_fd: link.as_raw_fd() as u32,
    };
    sys_bpf(BPF_LINK_DETACH, &mut attr).map(drop)
}

/// The mode of the XDP program attached to an interface of this network namespace, if
/// any (rtnetlink's IFLA_XDP, as `ip link` shows it).
pub fn attached_mode(ifindex: u32) -> io::Result<Option<XdpMode>> {
    use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};
    let mut socket = Socket::new(NETLINK_ROUTE)?;
    socket.bind_auto()?;
    socket.connect(&SocketAddr::new(0, 0))?;
    let mut msg = LinkMessage::default();
    msg.header.index = ifindex;
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST;
    let mut req = NetlinkMessage::new(
        header,
        NetlinkPayload::from(RouteNetlinkMessage::GetLink(msg)),
    );
    req.finalize();
    let mut buf = vec![0; req.buffer_len()];
    req.serialize(&mut buf);
    socket.send(&buf, 0)?;
    let (reply, _) = socket.recv_from_full()?;
    let reply = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&reply)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
    let link = match reply.payload {
        NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(link)) => link,
        NetlinkPayload::Error(e) => {
            return Err(e
                .code
                .map(|c| io::Error::from_raw_os_error(-c.get()))
                .unwrap_or_else(|| io::Error::other("netlink error")));
        }
        other => {
            return Err(io::Error::other(format!(
                "unexpected netlink reply {other:?}"
            )));
        }
    };
    let xdp = link.attributes.iter().find_map(|a| match a {
        LinkAttribute::Xdp(x) => Some(x),
        _ => None,
    });
    Ok(xdp.and_then(|x| {
        x.iter().find_map(|a| match a {
            LinkXdp::Attached(XdpAttached::Driver) => Some(XdpMode::Driver),
            LinkXdp::Attached(XdpAttached::SocketBuffer) => Some(XdpMode::Skb),
            _ => None,
        })
    }))
}
