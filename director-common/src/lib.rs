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
pub mod conntrack;
pub mod hash;
pub mod iface;
pub mod maps;
pub mod real;
pub mod service;
pub mod stats;

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all of these are #[repr(C)], contain only integers and byte arrays, and have
    // explicit padding fields, so every bit pattern is valid and there are no holes.
    unsafe impl aya::Pod for crate::service::ServiceKey {}
    unsafe impl aya::Pod for crate::service::Service {}
    unsafe impl aya::Pod for crate::real::Real {}
    unsafe impl aya::Pod for crate::real::HopCache {}
    unsafe impl aya::Pod for crate::conntrack::FlowKey {}
    unsafe impl aya::Pod for crate::conntrack::Conn {}
    unsafe impl aya::Pod for crate::conntrack::ConnBucket {}
    unsafe impl aya::Pod for crate::conntrack::PersistKey {}
    unsafe impl aya::Pod for crate::conntrack::PersistEntry {}
    unsafe impl aya::Pod for crate::stats::Counters {}
    unsafe impl aya::Pod for crate::config::Settings {}
    unsafe impl aya::Pod for crate::iface::IfaceMac {}
    unsafe impl aya::Pod for crate::iface::IcmpBucket {}
}
