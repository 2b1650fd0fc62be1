//! Persistence templates (`DIR_PERSIST`, ipvsadm -p): a client's real, kept for the
//! service's persistence timeout.

/// Key of the persistence templates: (service, client address & netmask).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PersistKey {
    pub service: u32,
    pub family: u8,
    pub _pad: [u8; 3],
    pub client: [u8; 16],
}

/// Value of the persistence templates.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PersistEntry {
    pub last_seen_ns: u64,
    pub real: u32,
    pub _pad: u32,
}
