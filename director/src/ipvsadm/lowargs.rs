//! The first pass over ipvsadm's arguments: a faithful record of what was typed, split
//! the way ipvsadm's option library (popt) splits it. No value is interpreted here.
//!
//! popt's rules, which scripts rely on:
//! - short options cluster (`-Ln`), and an option taking a value takes the rest of its
//!   cluster (`-p300`, `-t10.0.0.1:80`, an `=` in front of it is dropped) or else the
//!   next argument, whatever it looks like (`-t -A` makes `-A` the address);
//! - `-p` takes an optional value: the rest of its cluster, or the next argument unless
//!   that starts with `-` (`-p -M ...` is `-p` with the default timeout);
//! - long options are spelled in full, `--tcp-service ADDR` or `--tcp-service=ADDR`;
//! - other arguments are positional (`--set 900 120 300`), also everything after `--`.

/// Every option ipvsadm 1.31 knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flag {
    AddService,
    EditService,
    DeleteService,
    Clear,
    List,
    Zero,
    AddServer,
    EditServer,
    DeleteServer,
    Set,
    Help,
    Version,
    Restore,
    Save,
    StartDaemon,
    StopDaemon,
    TcpService,
    UdpService,
    SctpService,
    FwmarkService,
    Scheduler,
    Persistent,
    Netmask,
    RealServer,
    Masquerading,
    Ipip,
    Gatewaying,
    Weight,
    UThreshold,
    LThreshold,
    Numeric,
    Connection,
    McastInterface,
    SyncId,
    Timeout,
    Daemon,
    Stats,
    Rate,
    Thresholds,
    PersistentConn,
    NoSort,
    Sort,
    Exact,
    Ipv6,
    Ops,
    Pe,
    SchedFlags,
    McastGroup,
    McastPort,
    McastTtl,
    SyncMaxlen,
    TunInfo,
    TunType,
    TunPort,
    TunNocsum,
    TunCsum,
    TunRemcsum,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Arg {
    None,
    Required,
    Optional,
}

struct Spec {
    long: &'static str,
    short: Option<char>,
    flag: Flag,
    arg: Arg,
}

const fn opt(long: &'static str, short: Option<char>, flag: Flag, arg: Arg) -> Spec {
    Spec {
        long,
        short,
        flag,
        arg,
    }
}

/// ipvsadm 1.31's option table, in its order (the first `list` wins for `--list`).
const OPTIONS: &[Spec] = &[
    opt("add-service", Some('A'), Flag::AddService, Arg::None),
    opt("edit-service", Some('E'), Flag::EditService, Arg::None),
    opt("delete-service", Some('D'), Flag::DeleteService, Arg::None),
    opt("clear", Some('C'), Flag::Clear, Arg::None),
    opt("list", Some('L'), Flag::List, Arg::None),
    opt("list", Some('l'), Flag::List, Arg::None),
    opt("zero", Some('Z'), Flag::Zero, Arg::None),
    opt("add-server", Some('a'), Flag::AddServer, Arg::None),
    opt("edit-server", Some('e'), Flag::EditServer, Arg::None),
    opt("delete-server", Some('d'), Flag::DeleteServer, Arg::None),
    opt("set", None, Flag::Set, Arg::None),
    opt("help", Some('h'), Flag::Help, Arg::None),
    opt("version", Some('v'), Flag::Version, Arg::None),
    opt("restore", Some('R'), Flag::Restore, Arg::None),
    opt("save", Some('S'), Flag::Save, Arg::None),
    opt("start-daemon", None, Flag::StartDaemon, Arg::Required),
    opt("stop-daemon", None, Flag::StopDaemon, Arg::Required),
    opt("tcp-service", Some('t'), Flag::TcpService, Arg::Required),
    opt("udp-service", Some('u'), Flag::UdpService, Arg::Required),
    opt("sctp-service", None, Flag::SctpService, Arg::Required),
    opt(
        "fwmark-service",
        Some('f'),
        Flag::FwmarkService,
        Arg::Required,
    ),
    opt("scheduler", Some('s'), Flag::Scheduler, Arg::Required),
    opt("persistent", Some('p'), Flag::Persistent, Arg::Optional),
    opt("netmask", Some('M'), Flag::Netmask, Arg::Required),
    opt("real-server", Some('r'), Flag::RealServer, Arg::Required),
    opt("masquerading", Some('m'), Flag::Masquerading, Arg::None),
    opt("ipip", Some('i'), Flag::Ipip, Arg::None),
    opt("gatewaying", Some('g'), Flag::Gatewaying, Arg::None),
    opt("weight", Some('w'), Flag::Weight, Arg::Required),
    opt("u-threshold", Some('x'), Flag::UThreshold, Arg::Required),
    opt("l-threshold", Some('y'), Flag::LThreshold, Arg::Required),
    opt("numeric", Some('n'), Flag::Numeric, Arg::None),
    opt("connection", Some('c'), Flag::Connection, Arg::None),
    opt("mcast-interface", None, Flag::McastInterface, Arg::Required),
    opt("syncid", None, Flag::SyncId, Arg::Required),
    opt("timeout", None, Flag::Timeout, Arg::None),
    opt("daemon", None, Flag::Daemon, Arg::None),
    opt("stats", None, Flag::Stats, Arg::None),
    opt("rate", None, Flag::Rate, Arg::None),
    opt("thresholds", None, Flag::Thresholds, Arg::None),
    opt("persistent-conn", None, Flag::PersistentConn, Arg::None),
    opt("nosort", None, Flag::NoSort, Arg::None),
    opt("sort", None, Flag::Sort, Arg::None),
    opt("exact", Some('X'), Flag::Exact, Arg::None),
    opt("ipv6", Some('6'), Flag::Ipv6, Arg::None),
    opt("ops", Some('o'), Flag::Ops, Arg::None),
    opt("pe", None, Flag::Pe, Arg::Required),
    opt("sched-flags", Some('b'), Flag::SchedFlags, Arg::Required),
    opt("mcast-group", None, Flag::McastGroup, Arg::Required),
    opt("mcast-port", None, Flag::McastPort, Arg::Required),
    opt("mcast-ttl", None, Flag::McastTtl, Arg::Required),
    opt("sync-maxlen", None, Flag::SyncMaxlen, Arg::Required),
    opt("tun-info", None, Flag::TunInfo, Arg::None),
    opt("tun-type", None, Flag::TunType, Arg::Required),
    opt("tun-port", None, Flag::TunPort, Arg::Required),
    opt("tun-nocsum", None, Flag::TunNocsum, Arg::None),
    opt("tun-csum", None, Flag::TunCsum, Arg::None),
    opt("tun-remcsum", None, Flag::TunRemcsum, Arg::None),
];

/// One option as typed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Opt {
    pub flag: Flag,
    /// Its value, if it takes one and one was given.
    pub value: Option<String>,
    /// The argument it came from, for messages (`-Ln`, `--tcp-service=...`).
    pub text: String,
}

/// Why popt gave up (`poptStrerror`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoptError {
    /// The argument being parsed (`poptBadOption`).
    pub text: String,
    pub reason: &'static str,
}

/// Everything typed, in order. Processing stops at `error`, as popt does.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LowArgs {
    pub opts: Vec<Opt>,
    pub error: Option<PoptError>,
    /// Positional arguments, in order.
    pub positional: Vec<String>,
}

fn bad(text: &str, reason: &'static str) -> PoptError {
    PoptError {
        text: text.to_owned(),
        reason,
    }
}

/// Split `args` (without the program name) as popt does.
pub fn split(args: &[String]) -> LowArgs {
    let mut low = LowArgs::default();
    let mut i = 0;
    let mut only_positional = false;
    while i < args.len() {
        let arg = &args[i];
        i += 1;
        if only_positional || arg == "-" || !arg.starts_with('-') {
            low.positional.push(arg.clone());
            continue;
        }
        if arg == "--" {
            only_positional = true;
            continue;
        }
        let step = if let Some(long) = arg.strip_prefix("--") {
            split_long(arg, long, args, &mut i)
        } else {
            split_short(arg, args, &mut i)
        };
        match step {
            Ok(mut opts) => low.opts.append(&mut opts),
            Err((mut opts, e)) => {
                low.opts.append(&mut opts);
                low.error = Some(e);
                return low;
            }
        }
    }
    low
}

type Step = Result<Vec<Opt>, (Vec<Opt>, PoptError)>;

/// The value of an option that did not get one inside its own argument.
fn next_value(
    spec: &Spec,
    text: &str,
    args: &[String],
    i: &mut usize,
) -> Result<Option<String>, PoptError> {
    match (spec.arg, args.get(*i)) {
        (Arg::Required, Some(v)) => {
            *i += 1;
            Ok(Some(v.clone()))
        }
        (Arg::Required, None) => Err(bad(text, "missing argument")),
        (Arg::Optional, Some(v)) if !v.starts_with('-') => {
            *i += 1;
            Ok(Some(v.clone()))
        }
        _ => Ok(None),
    }
}

fn split_long(text: &str, long: &str, args: &[String], i: &mut usize) -> Step {
    let (name, inline) = match long.split_once('=') {
        Some((n, v)) => (n, Some(v.to_owned())),
        None => (long, None),
    };
    let Some(spec) = OPTIONS.iter().find(|s| s.long == name) else {
        return Err((Vec::new(), bad(text, "unknown option")));
    };
    let value = match (spec.arg, inline) {
        (Arg::None, Some(_)) => {
            return Err((Vec::new(), bad(text, "option does not take an argument")));
        }
        (Arg::None, None) => None,
        (_, Some(v)) => Some(v),
        (_, None) => next_value(spec, text, args, i).map_err(|e| (Vec::new(), e))?,
    };
    Ok(vec![Opt {
        flag: spec.flag,
        value,
        text: text.to_owned(),
    }])
}

fn split_short(text: &str, args: &[String], i: &mut usize) -> Step {
    let mut opts = Vec::new();
    let mut rest = &text[1..];
    while let Some(c) = rest.chars().next() {
        rest = &rest[c.len_utf8()..];
        let Some(spec) = OPTIONS.iter().find(|s| s.short == Some(c)) else {
            return Err((opts, bad(text, "unknown option")));
        };
        // popt skips one '=' after a short option: `-t=ADDR`.
        let tail = rest.strip_prefix('=').unwrap_or(rest);
        if spec.arg == Arg::None {
            rest = tail;
            opts.push(Opt {
                flag: spec.flag,
                value: None,
                text: text.to_owned(),
            });
            continue;
        }
        let value = if tail.is_empty() {
            match next_value(spec, text, args, i) {
                Ok(v) => v,
                Err(e) => return Err((opts, e)),
            }
        } else {
            Some(tail.to_owned())
        };
        opts.push(Opt {
            flag: spec.flag,
            value,
            text: text.to_owned(),
        });
        break;
    }
    Ok(opts)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_owned).collect()
    }

    fn flags(s: &str) -> Vec<(Flag, Option<String>)> {
        let low = split(&args(s));
        assert_eq!(low.error, None, "{s}");
        low.opts.into_iter().map(|o| (o.flag, o.value)).collect()
    }

    fn v(s: &str) -> Option<String> {
        Some(s.to_owned())
    }

    #[test]
    fn a_value_is_the_next_argument_the_rest_of_the_cluster_or_after_equals() {
        for spelling in [
            "-A -t 10.0.0.1:80",
            "-A -t10.0.0.1:80",
            "-A -t=10.0.0.1:80",
            "-At 10.0.0.1:80",
            "-At10.0.0.1:80",
            "-A --tcp-service 10.0.0.1:80",
            "-A --tcp-service=10.0.0.1:80",
            "--add-service --tcp-service=10.0.0.1:80",
        ] {
            assert_eq!(
                flags(spelling),
                vec![
                    (Flag::AddService, None),
                    (Flag::TcpService, v("10.0.0.1:80"))
                ],
                "{spelling}"
            );
        }
    }

    #[test]
    fn short_options_cluster() {
        assert_eq!(
            flags("-Ln"),
            vec![(Flag::List, None), (Flag::Numeric, None)]
        );
        assert_eq!(
            flags("-lnc"),
            vec![
                (Flag::List, None),
                (Flag::Numeric, None),
                (Flag::Connection, None)
            ]
        );
        assert_eq!(
            flags("-L -n --stats --exact -X"),
            vec![
                (Flag::List, None),
                (Flag::Numeric, None),
                (Flag::Stats, None),
                (Flag::Exact, None),
                (Flag::Exact, None)
            ]
        );
    }

    #[test]
    fn persistent_takes_an_optional_value_that_does_not_start_with_a_dash() {
        assert_eq!(flags("-p 300")[0], (Flag::Persistent, v("300")));
        assert_eq!(flags("-p300")[0], (Flag::Persistent, v("300")));
        assert_eq!(flags("--persistent=300")[0], (Flag::Persistent, v("300")));
        assert_eq!(flags("--persistent 300")[0], (Flag::Persistent, v("300")));
        assert_eq!(flags("-p")[0], (Flag::Persistent, None));
        assert_eq!(
            flags("-p -M 255.255.255.0")[..2],
            [
                (Flag::Persistent, None),
                (Flag::Netmask, v("255.255.255.0"))
            ]
        );
        assert_eq!(flags("--persistent -s rr")[0], (Flag::Persistent, None));
    }

    #[test]
    fn a_required_value_is_taken_even_when_it_looks_like_an_option() {
        assert_eq!(
            flags("-A -t -D"),
            vec![(Flag::AddService, None), (Flag::TcpService, v("-D"))]
        );
    }

    #[test]
    fn arguments_that_are_not_options_are_positional() {
        let low = split(&args("--set 900 120 300"));
        assert_eq!(low.opts.len(), 1);
        assert_eq!(low.positional, args("900 120 300"));
        let low = split(&args("-L -- -n"));
        assert_eq!(low.positional, args("-n"));
        let low = split(&args("-L -"));
        assert_eq!(low.positional, args("-"));
    }

    #[test]
    fn popt_errors_name_the_argument() {
        let low = split(&args("-A -t 10.0.0.1:80 --bogus -s rr"));
        assert_eq!(low.opts.len(), 2);
        assert_eq!(low.error, Some(bad("--bogus", "unknown option")));
        let low = split(&args("-A -t"));
        assert_eq!(low.error, Some(bad("-t", "missing argument")));
        let low = split(&args("-A --tcp-service"));
        assert_eq!(low.error, Some(bad("--tcp-service", "missing argument")));
        let low = split(&args("-L --numeric=1"));
        assert_eq!(
            low.error,
            Some(bad("--numeric=1", "option does not take an argument"))
        );
        let low = split(&args("-Lq"));
        assert_eq!(
            low.opts.len(),
            1,
            "options before the bad one in a cluster are kept"
        );
        assert_eq!(low.error, Some(bad("-Lq", "unknown option")));
        // Long names are never abbreviated.
        let low = split(&args("-A --tcp 10.0.0.1:80"));
        assert_eq!(low.error, Some(bad("--tcp", "unknown option")));
    }
}
