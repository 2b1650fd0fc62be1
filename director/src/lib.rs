//! The director's userspace: loading the XDP programs, and the control library that is
//! the only writer of their maps. The `director` binary (ipvsadm-compatible CLI and the
//! health-check daemon) is a thin layer over this crate.

pub mod control;
pub mod daemon;
pub mod datapath;
pub mod fingerprint;
pub mod links;
pub mod model;
pub mod neighbours;
pub mod state;
pub mod tables;
pub mod text;

pub use control::{Control, ControlError};
pub use datapath::{Datapath, LoadOptions};
pub use model::{Protocol, RealSpec, ServiceAddr, ServiceSpec};
