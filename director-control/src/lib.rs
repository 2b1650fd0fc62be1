//! The director's control library: loading the XDP programs, and the only writer of
//! their maps. The `director` binary (the ipvsadm-compatible command line) and the
//! health-check daemon (`director-daemon`) are layers over this crate; so are the tests
//! and the benchmarks. It runs no async runtime and speaks no HTTP.
#![warn(missing_docs)]

pub mod control;
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
