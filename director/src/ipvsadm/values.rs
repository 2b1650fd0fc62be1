//! ipvsadm's value syntax: numbers as `strtol` reads them, IPv4 addresses as
//! `inet_aton` reads them (`10.1` is 10.0.0.1), `host[:port]` and `[v6]:port`.
//!
//! One deliberate difference: ipvsadm resolves host names (DNS); the director never
//! looks names up, so a name is refused with a message saying to give an address.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::portnames::PortNames;

/// ipvsadm's `string_to_number`: the whole of `s` must be a base-10 number (strtol
/// syntax: leading white space and a sign allowed) within `min..=max`.
pub fn number(s: &str, min: i64, max: i64) -> Option<i64> {
    let t = s.trim_start_matches([' ', '\t', '\n', '\x0b', '\x0c', '\r']);
    let (neg, digits) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // Overflow is strtol's ERANGE: refused.
    let magnitude: i64 = digits.parse().ok()?;
    let n = if neg { -magnitude } else { magnitude };
    (min..=max).contains(&n).then_some(n)
}

/// glibc's `inet_aton`: one to four parts, each decimal, octal (leading 0) or hex (0x);
/// the last part fills the remaining bytes. Trailing white space ends the address.
pub fn inet_aton(s: &str) -> Option<Ipv4Addr> {
    let b = s.as_bytes();
    let mut parts: Vec<u64> = Vec::new();
    let mut i = 0;
    loop {
        if !b.get(i)?.is_ascii_digit() {
            return None;
        }
        let mut base = 10;
        if b[i] == b'0' {
            i += 1;
            if matches!(b.get(i), Some(b'x' | b'X')) {
                base = 16;
                i += 1;
            } else {
                base = 8;
            }
        }
        let mut val: u64 = 0;
        while let Some(&c) = b.get(i) {
            let d = match c {
                b'0'..=b'9' => (c - b'0') as u64,
                b'a'..=b'f' if base == 16 => (c - b'a' + 10) as u64,
                b'A'..=b'F' if base == 16 => (c - b'A' + 10) as u64,
                _ => break,
            };
            if base == 8 && d >= 8 {
                return None;
            }
            val = val * base + d;
            if val > u32::MAX as u64 {
                return None;
            }
            i += 1;
        }
        if b.get(i) == Some(&b'.') {
            if parts.len() >= 3 || val > 0xff {
                return None;
            }
            parts.push(val);
            i += 1;
            continue;
        }
        if let Some(&c) = b.get(i)
            && !c.is_ascii_whitespace()
        {
            return None;
        }
        let max: u64 = [0xffff_ffff, 0xff_ffff, 0xffff, 0xff][parts.len()];
        if val > max {
            return None;
        }
        let mut addr: u32 = val as u32;
        for (n, p) in parts.iter().enumerate() {
            addr |= (*p as u32) << (24 - 8 * n);
        }
        return Some(Ipv4Addr::from(addr));
    }
}

/// Why an address did not parse.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AddrError {
    /// Not an address (or a bad port).
    Invalid,
    /// A host name: ipvsadm would look it up; the director does not.
    HostName,
}

/// ipvsadm's `parse_service`: `host[:port]` or `[v6addr]:port` (a bare v6 address has no
/// port). The port is a number 0-65535 or a name from /etc/services for `proto`
/// ("tcp", "udp", "sctp"; none before the service's protocol is known).
pub fn host_port(
    buf: &str,
    proto: Option<&str>,
    names: &PortNames,
) -> Result<(IpAddr, Option<u16>), AddrError> {
    if buf.bytes().all(|b| b.is_ascii_digit()) {
        return Err(AddrError::Invalid);
    }
    let (host, port) = if let Some(inner) = buf.strip_prefix('[') {
        let (addr, after) = inner.split_once(']').ok_or(AddrError::Invalid)?;
        let port = after.strip_prefix(':').ok_or(AddrError::Invalid)?;
        let a: Ipv6Addr = addr.parse().map_err(|_| AddrError::Invalid)?;
        (IpAddr::V6(a), Some(port))
    } else if let Ok(a) = buf.parse::<Ipv6Addr>() {
        (IpAddr::V6(a), None)
    } else {
        let (host, port) = match buf.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (buf, None),
        };
        match inet_aton(host) {
            Some(a) => (IpAddr::V4(a), port),
            None if looks_like_a_name(host) => return Err(AddrError::HostName),
            None => return Err(AddrError::Invalid),
        }
    };
    let port = match port {
        None => None,
        Some(p) => Some(match number(p, 0, 65535) {
            Some(n) => n as u16,
            None => proto
                .and_then(|proto| names.port(p, proto))
                .ok_or(AddrError::Invalid)?,
        }),
    };
    Ok((host, port))
}

fn looks_like_a_name(host: &str) -> bool {
    host.bytes()
        .next()
        .is_some_and(|b| b.is_ascii_alphanumeric())
        && host.bytes().any(|b| b.is_ascii_alphabetic())
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_follow_strtol_and_must_fill_the_string() {
        assert_eq!(number("80", 0, 65535), Some(80));
        assert_eq!(number("+80", 0, 65535), Some(80));
        assert_eq!(number(" 80", 0, 65535), Some(80));
        assert_eq!(number("0", 0, 65535), Some(0));
        assert_eq!(number("65535", 0, 65535), Some(65535));
        for bad in [
            "65536",
            "99999",
            "-1",
            "",
            " ",
            "80 ",
            "8o",
            "0x50",
            "1e3",
            "99999999999999999999",
        ] {
            assert_eq!(number(bad, 0, 65535), None, "{bad:?}");
        }
    }

    #[test]
    fn ipv4_addresses_are_read_as_inet_aton_reads_them() {
        let a = |s| inet_aton(s).map(|a| a.to_string());
        assert_eq!(a("10.0.0.1").as_deref(), Some("10.0.0.1"));
        assert_eq!(a("10.1").as_deref(), Some("10.0.0.1"));
        assert_eq!(a("10.1.2").as_deref(), Some("10.1.0.2"));
        assert_eq!(a("167772161").as_deref(), Some("10.0.0.1"));
        assert_eq!(a("0x0a.0.0.01").as_deref(), Some("10.0.0.1"));
        assert_eq!(a("255.255.255.0").as_deref(), Some("255.255.255.0"));
        for bad in [
            "",
            "10.0.0.256",
            "10.0.0.1.1",
            "10..0.1",
            "10.0.0.",
            "a.b.c.d",
            "08.0.0.1",
            "10.0.0.1x",
            "1.2.3.4294967296",
        ] {
            assert_eq!(a(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn service_addresses_take_an_optional_port_number_or_name() {
        let names = PortNames::parse("http 80/tcp www\ndomain 53/udp\n");
        let hp = |s: &str, p: Option<&str>| host_port(s, p, &names);
        let v4 = |s: &str| IpAddr::V4(s.parse().unwrap());
        assert_eq!(
            hp("10.0.0.1:80", Some("tcp")),
            Ok((v4("10.0.0.1"), Some(80)))
        );
        assert_eq!(hp("10.0.0.1", Some("tcp")), Ok((v4("10.0.0.1"), None)));
        assert_eq!(hp("10.0.0.1:0", Some("tcp")), Ok((v4("10.0.0.1"), Some(0))));
        assert_eq!(
            hp("10.0.0.1:http", Some("tcp")),
            Ok((v4("10.0.0.1"), Some(80)))
        );
        assert_eq!(
            hp("10.0.0.1:www", Some("tcp")),
            Ok((v4("10.0.0.1"), Some(80)))
        );
        assert_eq!(
            hp("10.0.0.1:domain", Some("udp")),
            Ok((v4("10.0.0.1"), Some(53)))
        );
        assert_eq!(hp("10.0.0.1:http", Some("udp")), Err(AddrError::Invalid));
        assert_eq!(hp("10.0.0.1:http", None), Err(AddrError::Invalid));
        let v6 = |s: &str| IpAddr::V6(s.parse().unwrap());
        assert_eq!(
            hp("[2001:db8::1]:80", Some("tcp")),
            Ok((v6("2001:db8::1"), Some(80)))
        );
        assert_eq!(
            hp("2001:db8::1", Some("tcp")),
            Ok((v6("2001:db8::1"), None))
        );
        for bad in [
            "10.0.0.1:99999",
            "10.0.0.1:",
            "10.0.0.1:-1",
            "80",
            "",
            "[2001:db8::1]",
            "[2001:db8::1]80",
            "10.0.0.300:80",
            "10.0.0.1:80:80",
        ] {
            assert_eq!(hp(bad, Some("tcp")), Err(AddrError::Invalid), "{bad:?}");
        }
        assert_eq!(
            hp("www.example.com:80", Some("tcp")),
            Err(AddrError::HostName)
        );
        assert_eq!(hp("localhost", Some("tcp")), Err(AddrError::HostName));
    }
}
