//! Every type and constant that crosses the boundary between the XDP data path
//! (`director-ebpf`) and userspace (`director`), defined once.
//!
//! Layout rules, because the kernel sees raw bytes:
//! - every struct is `#[repr(C)]` with explicit padding fields, so there are no implicit
//!   holes whose contents would make two equal keys hash differently;
//! - addresses are always 16 bytes plus a family ([`addr`]), so IPv6 needs no layout change;
//! - ports are kept in network byte order (`*_be` fields), exactly as read from the packet.
//!
//! Pinned map names carry a layout version ([`maps`]); a layout change bumps it so an old
//! program never misreads a new map.
#![no_std]

pub mod addr;
pub mod config;
pub mod conn_state;
pub mod conntable;
pub mod fragments;
pub mod hash;
pub mod iface;
pub mod maps;
pub mod persist;
pub mod real;
pub mod service;
pub mod stats;
pub mod vipfilter;

/// `aya::Pod` for map keys and values.
#[cfg(feature = "user")]
mod pod {
    macro_rules! pod {
        ($($t:ty),* $(,)?) => {$(
            // SAFETY: every type listed is `#[repr(C)]`, holds only integers and byte
            // arrays, and spells its padding out as fields: every bit pattern is a valid
            // value and there are no holes.
            unsafe impl aya::Pod for $t {}
        )*};
    }

    pod!(
        crate::service::ServiceKey,
        crate::service::Service,
        crate::real::Real,
        crate::real::HopCache,
        crate::real::HopCache6,
        crate::conntable::FlowKey,
        crate::conntable::Conn,
        crate::conntable::ConnBucket,
        crate::conntable::FlowKey6,
        crate::conntable::Conn6,
        crate::conntable::ConnBucket6,
        crate::persist::PersistKey,
        crate::persist::PersistEntry,
        crate::stats::Counters,
        crate::config::Settings,
        crate::iface::IfaceMac,
        crate::iface::IcmpBucket,
        crate::fragments::FragKey,
        crate::fragments::FragEntry,
        crate::fragments::FragKey6,
        crate::fragments::FragEntry6,
    );
}
