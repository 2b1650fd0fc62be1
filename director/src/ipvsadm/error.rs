//! What can go wrong with an ipvsadm command, and ipvsadm's exit code for each.
//!
//! The messages are ipvsadm 1.31's, word for word (scripts match them), so unlike the
//! library's errors they are not lowercase.

/// An ipvsadm command that failed; `Display` is the message ipvsadm prints on stderr.
#[derive(Debug, thiserror::Error)]
pub enum IpvsadmError {
    /// A command-line error (ipvsadm's `fail(2, ...)`): bad value, bad combination.
    #[error("{0}")]
    CommandLine(String),
    /// popt could not split the arguments (an unknown option, a missing argument):
    /// ipvsadm prints `OPTION: REASON` and exits 255.
    #[error("{option}: {reason}")]
    Popt {
        /// The argument as typed.
        option: String,
        reason: &'static str,
    },
    /// The first option is not a command (or there is none).
    #[error("Try `{0} -h' or '{0} --help' for more information.")]
    TryHelp(String),
    /// The table refused the operation (ipvsadm prints the kernel's reason).
    #[error("{0}")]
    Table(String),
    /// A Maglev table too small for the reals a service was asked to have (a refusal,
    /// exit 255); kept whole so that `-R` can say what its whole input needs.
    #[error("{0}")]
    TableTooSmall(director_control::ControlError),
    /// `-L` of a service that does not exist.
    #[error("No such service")]
    ListNoSuchService,
    /// The state could not be opened (ipvsadm: "Can't initialize ipvs").
    #[error("{0}")]
    Init(String),
    /// Writing the output or reading `-R`'s input failed.
    #[error("{what}: {source}")]
    Io {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// A line of `-R`'s input failed: ipvsadm's message for it, then where the restore
    /// stopped.
    #[error(
        "{source}\n{prog}: -R stopped at line {line} ({text}): the lines before it are applied, it and the lines after it are not"
    )]
    AtLine {
        prog: String,
        line: usize,
        text: String,
        source: Box<IpvsadmError>,
    },
}

impl IpvsadmError {
    /// ipvsadm's exit code: 2 for command-line errors, 255 (its `return -1`) for table
    /// and popt errors, 1 for listing a missing service.
    pub fn exit_code(&self) -> u8 {
        match self {
            IpvsadmError::CommandLine(_) | IpvsadmError::Init(_) => 2,
            IpvsadmError::Popt { .. }
            | IpvsadmError::TryHelp(_)
            | IpvsadmError::Table(_)
            | IpvsadmError::TableTooSmall(_) => 255,
            IpvsadmError::ListNoSuchService | IpvsadmError::Io { .. } => 1,
            IpvsadmError::AtLine { source, .. } => source.exit_code(),
        }
    }
}

/// A reading or writing error of the command's own streams.
pub fn io(what: &'static str) -> impl FnOnce(std::io::Error) -> IpvsadmError {
    move |source| IpvsadmError::Io { what, source }
}

/// Shorthand for ipvsadm's `fail(2, ...)`.
pub fn cmdline(msg: impl Into<String>) -> IpvsadmError {
    IpvsadmError::CommandLine(msg.into())
}

/// Shorthand for an operation the table refuses (exit 255).
pub fn table(msg: impl Into<String>) -> IpvsadmError {
    IpvsadmError::Table(msg.into())
}
