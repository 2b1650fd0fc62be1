//! A writer's session: the one way the CLI and the daemon change the maps.
//!
//! Writers (an ipvsadm command or `-R` batch, a daemon batch) exclude each other with the
//! writers' lock, and leave a marker while they change the maps: a writer killed in the
//! middle of a change leaves its marker behind, and the next writer completes the change
//! before making its own ([`Control::repair_interrupted`]).

use std::{
    ops::{Deref, DerefMut},
    path::PathBuf,
};

use super::{Lock, StateError, StateOptions};
use crate::control::{Control, ControlError};

/// What a writer completed of an interrupted previous one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Repaired {
    /// Real slots of removed services that were cleared.
    pub slots_cleared: usize,
    /// Service tables rebuilt from their reals.
    pub tables_rebuilt: usize,
}

/// Why a writer could not begin ([`StateOptions::begin_write`]).
#[derive(Debug, thiserror::Error)]
pub enum BeginWriteError {
    /// The state cannot be locked or opened (nothing attached, no bpffs...).
    #[error(transparent)]
    State(#[from] StateError),
    /// The previous writer was interrupted and completing its change failed: its marker
    /// stays, nothing of this session was written, and the lock is released.
    #[error("completing the interrupted previous change")]
    Repair(#[source] ControlError),
    /// Writing this writer's marker (the path) failed; the lock is released and nothing
    /// of this session was written.
    #[error("writing {0}")]
    Marker(PathBuf, #[source] std::io::Error),
}

/// The maps open for writing, the writers' lock held and the marker set. Derefs to the
/// [`Control`]. [`WriteSession::finish`] clears the marker and releases the lock; a
/// session dropped without it (an early return, a panic), or one that was told a write
/// may have stopped midway ([`WriteSession::left_undone`]), leaves the marker for the
/// next writer.
pub struct WriteSession {
    // Field order is drop order: the maps close before the lock goes.
    control: Control,
    marker: PathBuf,
    repaired: Option<Repaired>,
    undone: bool,
    _lock: Lock,
}

impl StateOptions {
    /// Begin a writer's session: take the writers' lock, open the maps, complete an
    /// interrupted previous writer's change if its marker is there, set this writer's
    /// marker.
    pub fn begin_write(&self) -> Result<WriteSession, BeginWriteError> {
        let lock = self.lock()?;
        let mut control = self.open_control()?;
        let marker = self.writer_marker()?;
        let mut repaired = None;
        if marker.exists() {
            let r = control
                .repair_interrupted()
                .map_err(BeginWriteError::Repair)?;
            if r.slots_cleared + r.tables_rebuilt > 0 {
                repaired = Some(r);
            }
        }
        std::fs::write(&marker, format!("{}\n", std::process::id()))
            .map_err(|e| BeginWriteError::Marker(marker.clone(), e))?;
        Ok(WriteSession {
            control,
            marker,
            repaired,
            undone: false,
            _lock: lock,
        })
    }
}

impl WriteSession {
    /// What this session completed of an interrupted previous writer, if anything.
    pub fn repaired(&self) -> Option<Repaired> {
        self.repaired
    }

    /// A write failed in a way that may have left work undone (a map error midway, not
    /// a refusal before any write): the marker stays, and the next writer repairs.
    pub fn left_undone(&mut self) {
        self.undone = true;
    }

    /// The end of the session: writes a table still deferred, then clears the marker
    /// unless [`Self::left_undone`] was called or that write failed (the next writer
    /// then repairs), and releases the lock.
    pub fn finish(mut self) -> Result<(), ControlError> {
        let flushed = self.control.flush();
        if !self.undone && flushed.is_ok() {
            let _ = std::fs::remove_file(&self.marker);
        }
        flushed
    }
}

impl Deref for WriteSession {
    type Target = Control;

    fn deref(&self) -> &Control {
        &self.control
    }
}

impl DerefMut for WriteSession {
    fn deref_mut(&mut self) -> &mut Control {
        &mut self.control
    }
}
