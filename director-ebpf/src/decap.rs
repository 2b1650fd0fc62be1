//! Real-server side of IPIP: strip the outer header of IPIP packets and hand the inner
//! packet (addressed to the VIP on our lo) to the kernel. For hosts whose kernel has no
//! ipip module.

use aya_ebpf::{bindings::xdp_action, helpers::bpf_xdp_adjust_head, programs::XdpContext};
use director_common::{addr::PROTO_IPIP, stats::Stat};
use network_types::{eth::EthHdr, ip::Ipv4Hdr};

use crate::parse::{ETH_P_8021AD, ETH_P_8021Q, ETH_P_IP, VLAN_HLEN, ptr_at};

#[inline(always)]
pub fn process(ctx: &XdpContext) -> (u32, Stat) {
    let Ok(eth) = ptr_at::<EthHdr>(ctx, 0) else {
        return (xdp_action::XDP_PASS, Stat::PassTruncated);
    };
    let ether_type = u16::from_be(unsafe { (*eth).ether_type });
    let tagged = ether_type == ETH_P_8021Q || ether_type == ETH_P_8021AD;
    let res = if tagged {
        strip::<{ EthHdr::LEN + VLAN_HLEN }>(ctx)
    } else if ether_type == ETH_P_IP {
        strip::<{ EthHdr::LEN }>(ctx)
    } else {
        Err(Stat::PassOtherProto)
    };
    match res {
        Ok(()) => (xdp_action::XDP_PASS, Stat::Decap),
        Err(stat) => (xdp_action::XDP_PASS, stat),
    }
}

#[inline(always)]
fn strip<const L2: usize>(ctx: &XdpContext) -> Result<(), Stat> {
    let outer: *const Ipv4Hdr = ptr_at(ctx, L2).map_err(|_| Stat::PassTruncated)?;
    let (vihl, proto) = unsafe { ((*outer).vihl, (*outer).proto) };
    if proto != PROTO_IPIP {
        return Err(Stat::PassNotVip);
    }
    // The director never adds options; anything else is not ours to unwrap.
    if vihl != 0x45 {
        return Err(Stat::PassOtherProto);
    }
    // The inner header must be there before the outer one goes.
    ptr_at::<Ipv4Hdr>(ctx, L2 + Ipv4Hdr::LEN).map_err(|_| Stat::PassTruncated)?;
    let l2: [u8; L2] = unsafe { *ptr_at::<[u8; L2]>(ctx, 0).map_err(|_| Stat::PassTruncated)? };
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, Ipv4Hdr::LEN as i32) } != 0 {
        return Err(Stat::DropEncap);
    }
    let new_l2: *mut [u8; L2] = ptr_at(ctx, 0).map_err(|_| Stat::PassTruncated)?;
    // The L2 header already says IPv4, as the inner packet is.
    unsafe { *new_l2 = l2 };
    Ok(())
}
