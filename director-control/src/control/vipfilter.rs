//! Keeping the VIP filter (`DIR_VIP_FILTER`, see `director_common::vipfilter`) in step
//! with the services and the NAT reals. A bit is set before the service or real that
//! needs it is written (a bit without its service only sends packets the long way), and
//! the whole bitmap is computed again after anything is removed or changed.

use director_common::{
    addr::FAMILY_V6,
    real::{Method, REAL_F_PRESENT},
    vipfilter::{Role, VIP_FILTER_WORDS, slot_v4, slot_v6},
};

use super::{Control, ControlError, index::Index};

/// The word and bit of an address (16-byte form and family) in `role`'s half.
fn slot(addr: &[u8; 16], family: u8, role: Role) -> (u32, u64) {
    if family == FAMILY_V6 {
        slot_v6(addr, role)
    } else {
        slot_v4([addr[0], addr[1], addr[2], addr[3]], role)
    }
}

/// The bitmap the index's services and reals call for.
pub(super) fn bitmap(ix: &Index) -> Vec<u64> {
    let mut words = vec![0u64; VIP_FILTER_WORDS as usize];
    let mut set = |(w, bit): (u32, u64)| words[w as usize] |= bit;
    for (key, svc) in ix.services() {
        set(slot(&key.addr, key.family, Role::Vip));
        for (_, r) in ix.reals_of(svc.id) {
            if r.method == Method::Masq as u8 && r.flags & REAL_F_PRESENT != 0 {
                set(slot(&r.addr, r.family, Role::NatReal));
            }
        }
    }
    words
}

impl Control {
    /// Set one address's bit (before the service or real that needs it is written).
    pub(super) fn filter_add(
        &mut self,
        addr: &[u8; 16],
        family: u8,
        role: Role,
    ) -> Result<(), ControlError> {
        let Some(m) = self.vip_filter.as_mut() else {
            return Ok(());
        };
        let (w, bit) = slot(addr, family, role);
        let old: u64 = m.read(w)?;
        if old & bit == 0 {
            m.write(w, &[old | bit])?;
        }
        Ok(())
    }

    /// Write the bitmap the index calls for, each changed word in one store: an address
    /// that stays keeps its bit throughout.
    pub(super) fn filter_sync(&mut self) -> Result<(), ControlError> {
        if self.vip_filter.is_none() {
            return Ok(());
        }
        let want = bitmap(self.fresh_index()?);
        let Some(m) = self.vip_filter.as_mut() else {
            return Ok(());
        };
        for (w, &word) in want.iter().enumerate() {
            if m.read::<u64>(w as u32)? != word {
                m.write(w as u32, &[word])?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use director_common::{
        addr::{FAMILY_V4, v4_to_16},
        real::Real,
        service::{Service, ServiceKey},
    };

    use super::*;

    fn marked(words: &[u64], (w, bit): (u32, u64)) -> bool {
        words[w as usize] & bit != 0
    }

    #[test]
    fn services_mark_their_address_and_only_nat_reals_their_own() {
        let key = |a: [u8; 4], port: u16| ServiceKey {
            addr: v4_to_16(a),
            port_be: port.to_be(),
            proto: 6,
            family: FAMILY_V4,
        };
        let real = |a: [u8; 4], method: Method, service: u32| Real {
            addr: v4_to_16(a),
            family: FAMILY_V4,
            method: method as u8,
            service,
            flags: REAL_F_PRESENT,
            ..Real::default()
        };
        let svc = |id| Service {
            id,
            ..Service::default()
        };
        let ix = Index::new(
            1,
            4,
            [
                (key([10, 0, 0, 100], 80), svc(0)),
                (key([10, 0, 0, 101], 0), svc(1)),
            ],
            [
                (1, real([10, 1, 0, 11], Method::Masq, 0)),
                (2, real([10, 1, 0, 12], Method::Route, 1)),
            ],
        );
        let words = bitmap(&ix);
        assert!(marked(&words, slot_v4([10, 0, 0, 100], Role::Vip)));
        assert!(marked(&words, slot_v4([10, 0, 0, 101], Role::Vip)));
        assert!(marked(&words, slot_v4([10, 1, 0, 11], Role::NatReal)));
        // A DR real's packets are never un-NATed; a VIP is no source of replies.
        assert!(!marked(&words, slot_v4([10, 1, 0, 12], Role::NatReal)));
        assert!(!marked(&words, slot_v4([10, 0, 0, 100], Role::NatReal)));
        assert!(!marked(&words, slot_v4([10, 0, 0, 102], Role::Vip)));
        assert_eq!(words.iter().map(|w| w.count_ones()).sum::<u32>(), 3);
    }
}
