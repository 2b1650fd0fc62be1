//! The file as written: serde's record of it, every value with its span, so that
//! validation can point at the very characters that are wrong. A file serde itself
//! refuses (bad TOML, an unknown key, a wrong type) gets its diagnostic here.

use std::path::Path;

use serde::Deserialize;
use toml::Spanned;

use super::diagnostics::{ConfigError, Diagnostic, line_col};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawFile {
    pub(super) allow_empty: Option<bool>,
    pub(super) daemon: Option<RawDaemon>,
    pub(super) check: Option<RawTiming>,
    #[serde(default, rename = "service")]
    pub(super) services: Vec<Spanned<RawService>>,
    pub(super) bgp: Option<Spanned<crate::bgp::config::RawBgp>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDaemon {
    pub(super) metrics: Option<Spanned<String>>,
    pub(super) sync_interval: Option<Spanned<toml::Value>>,
    pub(super) jitter: Option<Spanned<toml::Value>>,
    pub(super) notify: Option<Spanned<toml::Value>>,
    pub(super) notify_up: Option<Spanned<toml::Value>>,
    pub(super) notify_down: Option<Spanned<toml::Value>>,
    pub(super) notify_timeout: Option<Spanned<toml::Value>>,
    pub(super) on_down: Option<Spanned<String>>,
}

/// `[check]`: timing defaults for every service's check.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTiming {
    pub(super) interval: Option<Spanned<toml::Value>>,
    pub(super) timeout: Option<Spanned<toml::Value>>,
    pub(super) rise: Option<Spanned<i64>>,
    pub(super) fall: Option<Spanned<i64>>,
    pub(super) fastinter: Option<Spanned<toml::Value>>,
    pub(super) downinter: Option<Spanned<toml::Value>>,
    pub(super) init_state: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawService {
    pub(super) name: Option<Spanned<String>>,
    pub(super) address: Spanned<String>,
    pub(super) protocol: Option<Spanned<String>>,
    pub(super) scheduler: Option<Spanned<String>>,
    pub(super) hash_port: Option<Spanned<bool>>,
    pub(super) method: Option<Spanned<String>>,
    pub(super) persistent: Option<Spanned<toml::Value>>,
    pub(super) persistent_netmask: Option<Spanned<String>>,
    pub(super) on_down: Option<Spanned<String>>,
    pub(super) slowstart: Option<Spanned<toml::Value>>,
    pub(super) quorum: Option<Spanned<i64>>,
    pub(super) fallback: Option<Spanned<RawFallback>>,
    pub(super) check: Option<Spanned<RawCheck>>,
    pub(super) notify: Option<Spanned<toml::Value>>,
    pub(super) notify_up: Option<Spanned<toml::Value>>,
    pub(super) notify_down: Option<Spanned<toml::Value>>,
    #[serde(default, rename = "real")]
    pub(super) reals: Vec<Spanned<RawReal>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawFallback {
    pub(super) address: Spanned<String>,
    pub(super) method: Option<Spanned<String>>,
    pub(super) weight: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawReal {
    pub(super) address: Spanned<String>,
    pub(super) weight: Option<Spanned<i64>>,
    pub(super) method: Option<Spanned<String>>,
    pub(super) tun_type: Option<Spanned<String>>,
    pub(super) tun_port: Option<Spanned<i64>>,
    pub(super) tun_csum: Option<Spanned<String>>,
    pub(super) check_address: Option<Spanned<String>>,
    pub(super) check_port: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCheck {
    #[serde(rename = "type")]
    pub(super) kind: Option<Spanned<String>>,
    pub(super) interval: Option<Spanned<toml::Value>>,
    pub(super) timeout: Option<Spanned<toml::Value>>,
    pub(super) rise: Option<Spanned<i64>>,
    pub(super) fall: Option<Spanned<i64>>,
    pub(super) fastinter: Option<Spanned<toml::Value>>,
    pub(super) downinter: Option<Spanned<toml::Value>>,
    pub(super) init_state: Option<Spanned<String>>,
    pub(super) port: Option<Spanned<i64>>,
    // http, https
    pub(super) path: Option<Spanned<String>>,
    pub(super) host: Option<Spanned<String>>,
    pub(super) status: Option<Spanned<toml::Value>>,
    pub(super) body: Option<Spanned<String>>,
    pub(super) verify: Option<Spanned<bool>>,
    pub(super) ca_file: Option<Spanned<String>>,
    // udp
    pub(super) payload: Option<Spanned<String>>,
    pub(super) expect: Option<Spanned<String>>,
    pub(super) require_reply: Option<Spanned<bool>>,
    // dns
    pub(super) name: Option<Spanned<String>>,
    pub(super) query_type: Option<Spanned<String>>,
    // external
    pub(super) command: Option<Spanned<toml::Value>>,
    pub(super) dynamic: Option<Spanned<bool>>,
}

/// Read `src` into the raw record, or say where and why serde refused it.
pub(super) fn deserialize(path: &Path, src: &str) -> Result<RawFile, ConfigError> {
    let de = toml::Deserializer::parse(src).map_err(|e| toml_error(path, src, &e, ""))?;
    serde_path_to_error::deserialize(de).map_err(|e| {
        let field = e
            .path()
            .iter()
            .filter_map(|seg| match seg {
                serde_path_to_error::Segment::Seq { index } => Some(format!("[{index}]")),
                serde_path_to_error::Segment::Map { key } if key.starts_with("$__serde") => None,
                serde_path_to_error::Segment::Map { key } => Some(format!(".{key}")),
                serde_path_to_error::Segment::Enum { variant } => Some(format!(".{variant}")),
                serde_path_to_error::Segment::Unknown => None,
            })
            .collect::<String>();
        let field = field.trim_start_matches('.').to_owned();
        toml_error(path, src, e.inner(), &field)
    })
}

/// A TOML or serde error as a diagnostic, its wording made plain.
fn toml_error(path: &Path, src: &str, e: &toml::de::Error, field: &str) -> ConfigError {
    let (line, column) = e.span().map_or((0, 0), |s| line_col(src, s.start));
    let mut message = e.message().trim().to_owned();
    let mut field = field.to_owned();
    // serde names the table of a missing field; name the field itself.
    if let Some(rest) = message.strip_prefix("missing field `")
        && let Some((name, _)) = rest.split_once('`')
    {
        field = if field.is_empty() {
            name.to_owned()
        } else {
            format!("{field}.{name}")
        };
    }
    // serde says "unknown field `x`, expected one of ..."; keep it, it lists the keys.
    if message.starts_with("invalid type") {
        message = message.replacen("invalid type", "wrong type", 1);
    }
    for (rust, plain) in [
        ("expected i64", "expected an integer"),
        ("expected a boolean", "expected true or false"),
    ] {
        if message.ends_with(rust) {
            message = format!("{}{plain}", &message[..message.len() - rust.len()]);
        }
    }
    ConfigError {
        problems: vec![Diagnostic {
            file: path.to_owned(),
            line,
            column,
            field,
            message,
        }],
    }
}
