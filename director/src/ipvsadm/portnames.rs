//! Port names from /etc/services, as ipvsadm uses them (getservbyname / getservbyport):
//! `-t 10.0.0.1:http` on input, `10.0.0.1:http` in listings without `-n`.
//!
//! Only the local file is read; addresses are never looked up (no DNS).

/// One protocol's port names.
#[derive(Clone, Debug, Default)]
pub struct PortNames {
    /// (name or alias, port, protocol) in file order.
    entries: Vec<(String, u16, String)>,
    /// (canonical name, port, protocol) in file order.
    canonical: Vec<(String, u16, String)>,
}

impl PortNames {
    /// /etc/services, or no names at all if it cannot be read.
    pub fn system() -> Self {
        std::fs::read_to_string("/etc/services")
            .map(|t| Self::parse(&t))
            .unwrap_or_default()
    }

    /// Parse services(5) text: `name port/protocol [aliases...] [# comment]`.
    pub fn parse(text: &str) -> Self {
        let mut names = PortNames::default();
        for line in text.lines() {
            let line = line.split('#').next().unwrap_or("");
            let mut words = line.split_whitespace();
            let (Some(name), Some(pp)) = (words.next(), words.next()) else {
                continue;
            };
            let Some((port, proto)) = pp.split_once('/') else {
                continue;
            };
            let Ok(port) = port.parse::<u16>() else {
                continue;
            };
            names
                .canonical
                .push((name.to_owned(), port, proto.to_owned()));
            for n in std::iter::once(name).chain(words) {
                names.entries.push((n.to_owned(), port, proto.to_owned()));
            }
        }
        names
    }

    /// getservbyname(name, proto).
    pub fn port(&self, name: &str, proto: &str) -> Option<u16> {
        self.entries
            .iter()
            .find(|(n, _, p)| n == name && p == proto)
            .map(|(_, port, _)| *port)
    }

    /// getservbyport(port, proto).
    pub fn name(&self, port: u16, proto: &str) -> Option<&str> {
        self.canonical
            .iter()
            .find(|(_, p, pr)| *p == port && pr == proto)
            .map(|(n, _, _)| n.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SERVICES: &str = "\
# comment line
ssh		22/tcp				# SSH Remote Login Protocol
domain		53/tcp
domain		53/udp
http		80/tcp		www		# WorldWideWeb HTTP
";

    #[test]
    fn names_and_aliases_resolve_per_protocol() {
        let n = PortNames::parse(SERVICES);
        assert_eq!(n.port("http", "tcp"), Some(80));
        assert_eq!(n.port("www", "tcp"), Some(80));
        assert_eq!(n.port("http", "udp"), None);
        assert_eq!(n.port("domain", "udp"), Some(53));
        assert_eq!(n.port("nosuch", "tcp"), None);
    }

    #[test]
    fn ports_print_as_their_canonical_name() {
        let n = PortNames::parse(SERVICES);
        assert_eq!(n.name(80, "tcp"), Some("http"));
        assert_eq!(n.name(53, "udp"), Some("domain"));
        assert_eq!(n.name(8080, "tcp"), None);
    }
}
