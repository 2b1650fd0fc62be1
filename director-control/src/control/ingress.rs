//! Which frames the data path balances: those sent to an attached interface's own MAC,
//! untagged or tagged with a VLAN named here.

use aya::maps::MapError;
use director_common::{
    iface::{IfaceMac, VLAN_WORDS, iface_slot},
    maps as names,
};

use super::{Control, ControlError, map_err};

/// The highest VLAN id (4095 is reserved, 0 means "priority tag only").
pub const MAX_VLAN_ID: u16 = 4094;

impl Control {
    /// Balance only frames sent to `mac` on interface `ifindex` (attach registers each
    /// interface it attaches to). Returns the interface that held the slot before, when
    /// it was another one: the data path then checks the MAC of `ifindex` only, and
    /// trusts the other interface's NIC to filter (see docs/datapath.md).
    pub fn register_interface(
        &mut self,
        ifindex: u32,
        mac: [u8; 6],
    ) -> Result<Option<u32>, ControlError> {
        let slot = iface_slot(ifindex);
        let before = self.interface_slot(slot)?;
        self.maps
            .ifaces
            .set(
                slot,
                IfaceMac {
                    ifindex,
                    mac,
                    _pad: 0,
                },
                0,
            )
            .map_err(map_err(names::IFACES))?;
        Ok((before.ifindex != 0 && before.ifindex != ifindex).then_some(before.ifindex))
    }

    /// Forget an interface's MAC (when the program leaves it).
    pub fn unregister_interface(&mut self, ifindex: u32) -> Result<(), ControlError> {
        let slot = iface_slot(ifindex);
        if self.interface_slot(slot)?.ifindex == ifindex {
            self.maps
                .ifaces
                .set(slot, IfaceMac::default(), 0)
                .map_err(map_err(names::IFACES))?;
        }
        Ok(())
    }

    /// The MAC registered for `ifindex`, if its slot holds it.
    pub fn interface_mac(&self, ifindex: u32) -> Result<Option<[u8; 6]>, ControlError> {
        let iface = self.interface_slot(iface_slot(ifindex))?;
        Ok((iface.ifindex == ifindex).then_some(iface.mac))
    }

    fn interface_slot(&self, slot: u32) -> Result<IfaceMac, ControlError> {
        match self.maps.ifaces.get(&slot, 0) {
            Ok(v) => Ok(v),
            Err(MapError::KeyNotFound) => Ok(IfaceMac::default()),
            Err(source) => Err(ControlError::Map {
                name: names::IFACES,
                source,
            }),
        }
    }

    /// The VLANs whose tagged frames are balanced, in order.
    pub fn vlans(&self) -> Result<Vec<u16>, ControlError> {
        let mut out = Vec::new();
        for w in 0..VLAN_WORDS {
            let word = self.maps.vlans.get(&w, 0).map_err(map_err(names::VLANS))?;
            for bit in 0..64 {
                if word >> bit & 1 != 0 {
                    out.push((w * 64 + bit) as u16);
                }
            }
        }
        Ok(out)
    }

    /// Balance tagged frames of exactly these VLANs (an empty list: none; untagged
    /// frames are always balanced). Ids are checked first: nothing changes on a bad one.
    pub fn set_vlans(&mut self, vlans: &[u16]) -> Result<(), ControlError> {
        if let Some(&bad) = vlans.iter().find(|&&v| v == 0 || v > MAX_VLAN_ID) {
            return Err(ControlError::BadVlan(bad));
        }
        let mut words = [0u64; VLAN_WORDS as usize];
        for &v in vlans {
            words[v as usize / 64] |= 1 << (v % 64);
        }
        for (w, word) in words.iter().enumerate() {
            self.maps
                .vlans
                .set(w as u32, *word, 0)
                .map_err(map_err(names::VLANS))?;
        }
        Ok(())
    }
}
