//! The daemon's configuration: a TOML file (docs/daemon.md, examples/director.toml),
//! read into a faithful record of what was written (`raw`: every value with its span),
//! then validated in full (`validate`, with the value parsers of `values`) into
//! [`Config`] (`model`). Every problem is reported with the file, line, column and
//! field, and what was expected (`diagnostics`); nothing is applied unless all is well.
//! Whether a valid configuration fits the attached data path is `fit`'s question
//! ([`Config::applicable`]); [`tls`] makes an HTTPS check's client configuration.

mod diagnostics;
mod fit;
mod model;
mod raw;
#[cfg(test)]
pub(crate) mod tests;
pub mod tls;
mod validate;
mod values;

use std::path::Path;

pub(crate) use diagnostics::Problems;
pub use diagnostics::{ConfigError, Diagnostic, line_col};
pub use fit::{Capacity, NotApplicable, Target};
pub use model::{
    BytesPattern, CheckConfig, CheckKind, Command, Config, DEFAULT_FALL, DEFAULT_INTERVAL,
    DEFAULT_JITTER, DEFAULT_NOTIFY_TIMEOUT, DEFAULT_RISE, DEFAULT_SYNC_INTERVAL, DEFAULT_TIMEOUT,
    DaemonSettings, DnsCheck, DnsType, ExternalCheck, Hooks, HttpCheck, InitState, MAX_WEIGHT,
    OnDown, Pattern, RealConfig, ServiceConfig, StatusSet, TlsCheck, UdpCheck, service_label,
};
pub(crate) use values::{duration, method_by_name, scheduler_by_name};
pub use values::{fmt_duration, parse_duration};

/// Read and validate a native configuration file.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let src = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::whole_file(path, format!("cannot read the file: {e}")))?;
    parse(path, &src)
}

/// Validate a native configuration given as text (`path` is only used in messages).
pub fn parse(path: &Path, src: &str) -> Result<Config, ConfigError> {
    let raw = raw::deserialize(path, src)?;
    let mut p = Problems::new(path, src);
    let config = validate::validate(&mut p, path, raw);
    p.finish(config)
}
