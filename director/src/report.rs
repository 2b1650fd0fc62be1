//! What ipvsadm never had: `director list` (a readable table, or `--json` with a stable
//! schema, documented in docs/cli.md) and `director status` (what is attached where,
//! versions, table sizes and fill, VIPs that are not announced).

use std::{collections::BTreeSet, fmt::Write as _, net::IpAddr, path::Path};

use director_common::{
    maps::LAYOUT_VERSION,
    real::{Method, TunType},
    stats::Counters,
};
use director_control::{
    Control, RealSpec,
    fingerprint::{self, Fingerprints},
    model::TunCsum,
    neighbours,
    state::{self, LinkStatus, StateOptions},
};
use serde::Serialize;

use crate::ipvsadm::{
    format::{Snapshot, scheduler_name},
    snapshot,
};

/// Version of the `director list --json` document; bumped on any incompatible change.
pub const LIST_SCHEMA_VERSION: u32 = 1;

#[derive(Serialize)]
pub struct ListDoc {
    pub version: u32,
    pub timeouts: TimeoutsDoc,
    /// Entries of each service's Maglev table.
    pub maglev_size: u32,
    /// Scheduling fingerprint of the whole director (see `director_control::fingerprint`).
    pub fingerprint: String,
    pub services: Vec<ServiceDoc>,
}

#[derive(Serialize)]
pub struct TimeoutsDoc {
    pub tcp: u32,
    pub tcp_fin: u32,
    pub udp: u32,
}

#[derive(Serialize)]
pub struct CountersDoc {
    pub conns: u64,
    pub in_packets: u64,
    pub in_bytes: u64,
    pub out_packets: u64,
    pub out_bytes: u64,
}

impl From<&Counters> for CountersDoc {
    fn from(c: &Counters) -> Self {
        CountersDoc {
            conns: c.conns,
            in_packets: c.pkts_in,
            in_bytes: c.bytes_in,
            out_packets: c.pkts_out,
            out_bytes: c.bytes_out,
        }
    }
}

#[derive(Serialize)]
pub struct PersistenceDoc {
    pub timeout: u32,
    pub netmask: String,
}

#[derive(Serialize)]
pub struct ServiceDoc {
    pub protocol: &'static str,
    pub address: String,
    pub port: u16,
    pub scheduler: &'static str,
    pub flags: Vec<&'static str>,
    pub persistence: Option<PersistenceDoc>,
    /// Scheduling fingerprint of this service.
    pub fingerprint: String,
    pub counters: CountersDoc,
    pub reals: Vec<RealDoc>,
}

#[derive(Serialize)]
pub struct RealDoc {
    pub address: String,
    pub port: u16,
    pub method: &'static str,
    /// Tunnel reals only: the encapsulation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tunnel: Option<TunnelDoc>,
    pub weight: u32,
    pub state: &'static str,
    pub active_conns: u64,
    pub inactive_conns: u64,
    pub persistent_conns: u64,
    pub counters: CountersDoc,
}

/// A tunnel real's encapsulation: `type` ipip, gue or gre; `port` (GUE only); `checksum`
/// none, csum or remcsum (GUE and GRE).
#[derive(Serialize)]
pub struct TunnelDoc {
    #[serde(rename = "type")]
    pub kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checksum: Option<&'static str>,
}

fn tunnel_doc(spec: &RealSpec) -> Option<TunnelDoc> {
    if spec.method != Method::Tunnel {
        return None;
    }
    let t = spec.tunnel;
    Some(TunnelDoc {
        kind: t.kind.name(),
        port: (t.kind == TunType::Gue).then_some(t.port),
        checksum: (t.kind != TunType::Ipip).then_some(match t.csum {
            TunCsum::NoCsum => "none",
            TunCsum::Csum => "csum",
            TunCsum::RemCsum => "remcsum",
        }),
    })
}

/// The METHOD column of the readable list: a tunnel names its encapsulation when it
/// is not IPIP (`tunnel/gue`, `tunnel/gre`).
fn method_text(spec: &RealSpec) -> String {
    match (spec.method, spec.tunnel.kind) {
        (Method::Tunnel, TunType::Gue | TunType::Gre) => {
            format!("tunnel/{}", spec.tunnel.kind.name())
        }
        (m, _) => method_name(m).to_owned(),
    }
}

fn method_name(m: Method) -> &'static str {
    match m {
        Method::Route => "route",
        Method::Tunnel => "tunnel",
        Method::Masq => "masq",
    }
}

fn real_state(weight: u32) -> &'static str {
    if weight == 0 { "quiescent" } else { "up" }
}

/// The `--json` document of a snapshot.
pub fn list_doc(
    snap: &Snapshot,
    t: director_control::control::Timeouts,
    prints: &Fingerprints,
) -> ListDoc {
    ListDoc {
        version: LIST_SCHEMA_VERSION,
        timeouts: TimeoutsDoc {
            tcp: t.tcp,
            tcp_fin: t.tcp_fin,
            udp: t.udp,
        },
        maglev_size: prints.maglev_size,
        fingerprint: prints.director.clone(),
        services: snap
            .services
            .iter()
            .map(|s| {
                let (sched, flag) = scheduler_name(&s.spec);
                ServiceDoc {
                    protocol: match s.spec.addr.proto {
                        director_control::Protocol::Tcp => "tcp",
                        director_control::Protocol::Udp => "udp",
                    },
                    address: s.spec.addr.addr.to_string(),
                    port: s.spec.addr.port,
                    scheduler: sched,
                    flags: flag.into_iter().collect(),
                    persistence: s.spec.persistence.map(|p| PersistenceDoc {
                        timeout: p.timeout_s,
                        netmask: p.netmask.to_string(),
                    }),
                    fingerprint: prints
                        .services
                        .iter()
                        .find(|f| f.addr == s.spec.addr)
                        .map_or_else(String::new, |f| f.fingerprint.clone()),
                    counters: (&s.stats).into(),
                    reals: s
                        .reals
                        .iter()
                        .map(|r| RealDoc {
                            address: r.spec.addr.to_string(),
                            port: r.spec.port,
                            method: method_name(r.spec.method),
                            tunnel: tunnel_doc(&r.spec),
                            weight: r.spec.weight,
                            state: real_state(r.spec.weight),
                            active_conns: r.active,
                            inactive_conns: r.inactive,
                            persistent_conns: r.persistent,
                            counters: (&r.stats).into(),
                        })
                        .collect(),
                }
            })
            .collect(),
    }
}

fn endpoint(addr: IpAddr, port: u16) -> String {
    match addr {
        IpAddr::V4(a) => format!("{a}:{port}"),
        IpAddr::V6(a) => format!("[{a}]:{port}"),
    }
}

/// Columns padded to their widest cell; the last one unpadded.
fn table(rows: &[Vec<String>], indent: &str) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(String::len)
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for r in rows {
        out.push_str(indent);
        for (c, cell) in r.iter().enumerate() {
            if c + 1 == r.len() {
                out.push_str(cell);
            } else {
                let _ = write!(out, "{cell:<w$}  ", w = widths[c]);
            }
        }
        out.push('\n');
    }
    out
}

/// The readable `director list`.
pub fn list_text(snap: &Snapshot, t: director_control::control::Timeouts) -> String {
    let mut out = String::new();
    if snap.services.is_empty() {
        out.push_str("no virtual services (add one with `director -A -t VIP:PORT -s wrr`)\n");
    }
    for s in &snap.services {
        let (sched, flag) = scheduler_name(&s.spec);
        let proto = match s.spec.addr.proto {
            director_control::Protocol::Tcp => "TCP",
            director_control::Protocol::Udp => "UDP",
        };
        let _ = write!(
            out,
            "{proto} {}  scheduler {sched}",
            endpoint(s.spec.addr.addr, s.spec.addr.port)
        );
        if let Some(f) = flag {
            let _ = write!(out, " ({f})");
        }
        if let Some(p) = s.spec.persistence {
            let _ = write!(out, "  persistent {} s, mask {}", p.timeout_s, p.netmask);
        }
        let _ = writeln!(
            out,
            "  connections {}, in {} packets / {} bytes, out {} packets / {} bytes",
            s.stats.conns, s.stats.pkts_in, s.stats.bytes_in, s.stats.pkts_out, s.stats.bytes_out
        );
        if s.reals.is_empty() {
            out.push_str("  no real servers: new connections are dropped\n");
            continue;
        }
        let mut rows = vec![
            [
                "REAL",
                "METHOD",
                "WEIGHT",
                "STATE",
                "ACTIVE",
                "INACTIVE",
                "PERSISTENT",
                "CONNS",
                "IN-PKTS",
                "IN-BYTES",
            ]
            .map(str::to_owned)
            .to_vec(),
        ];
        for r in &s.reals {
            rows.push(vec![
                endpoint(r.spec.addr, r.spec.port),
                method_text(&r.spec),
                r.spec.weight.to_string(),
                real_state(r.spec.weight).to_owned(),
                r.active.to_string(),
                r.inactive.to_string(),
                r.persistent.to_string(),
                r.stats.conns.to_string(),
                r.stats.pkts_in.to_string(),
                r.stats.bytes_in.to_string(),
            ]);
        }
        out.push_str(&table(&rows, "  "));
    }
    let _ = writeln!(
        out,
        "timeouts: tcp {} s, tcpfin {} s, udp {} s",
        t.tcp, t.tcp_fin, t.udp
    );
    out
}

/// `director list [--json]`.
pub fn list(c: &Control, json: bool) -> anyhow::Result<String> {
    let snap = snapshot::read(c)?;
    let t = c.timeouts()?;
    Ok(if json {
        let prints = fingerprint::read(c)?;
        let mut s = serde_json::to_string_pretty(&list_doc(&snap, t, &prints))?;
        s.push('\n');
        s
    } else {
        list_text(&snap, t)
    })
}

#[derive(Serialize)]
pub struct TablesDoc {
    /// Connection table capacity (entries).
    pub conn_capacity: u32,
    /// Entries in it now (both directions of NAT flows, expired ones not yet evicted).
    pub conn_entries: usize,
    /// Entries in the IPv6 flows' table (of the same capacity), counted alike.
    pub conn6_entries: usize,
    /// Live connections (client direction).
    pub conn_live: u64,
    /// Entries of each service's Maglev table.
    pub maglev_size: u32,
    /// Virtual service slots.
    pub service_capacity: u32,
    /// Real servers the data path holds, over all services.
    pub real_capacity: u32,
    /// Persistence template table capacity (entries).
    pub persist_capacity: u32,
    /// New flows per second per CPU before flood protection starts (0: no limit).
    pub flood_limit: u32,
}

#[derive(Serialize)]
pub struct StatusDoc {
    pub director_version: &'static str,
    pub layout_version: u32,
    pub state_dir: String,
    pub attached: bool,
    pub links: Vec<LinkStatus>,
    pub decap_links: Vec<LinkStatus>,
    /// Non-zero outcome counters of the decap programs, summed over their links.
    pub decap_counters: Vec<(&'static str, u64)>,
    pub tables: Option<TablesDoc>,
    pub services: usize,
    pub reals: usize,
    /// Scheduling fingerprint (see `director_control::fingerprint`): equal on two directors
    /// exactly when they send every flow to the same real.
    pub fingerprint: Option<String>,
    /// Non-zero outcome counters of the data path.
    pub counters: Vec<(&'static str, u64)>,
    /// Configured VIPs that are no address of this network namespace.
    pub unannounced_vips: Vec<String>,
    /// The running daemon's BGP report (`[bgp]`, docs/scale-out.md), one line each.
    pub bgp: Option<Vec<String>>,
    /// Each real's next hop as the kernel's neighbour table has it (once per address).
    pub neighbours: Vec<NeighbourDoc>,
}

/// The neighbour entry a real's packets need (the real's own, or its gateway's).
#[derive(Serialize, Debug, Clone, PartialEq, Eq)]
pub struct NeighbourDoc {
    pub real: String,
    /// The gateway the route to the real goes through; `None` on a connected network.
    pub via: Option<String>,
    /// The egress interface.
    pub interface: Option<String>,
    /// The entry's state as `ip neigh` names it (`REACHABLE`, `STALE`, `FAILED`...),
    /// `none` without an entry, `local` for an address of this host, `no route`.
    pub state: String,
    /// The next hop's MAC address, when known.
    pub mac: Option<String>,
    /// The kernel keeps the entry resolved (a managed entry).
    pub managed: bool,
}

fn neighbour_doc(n: &neighbours::RealNeighbour) -> NeighbourDoc {
    let mut doc = NeighbourDoc {
        real: n.real.to_string(),
        via: None,
        interface: None,
        state: "no route".into(),
        mac: None,
        managed: false,
    };
    match &n.path {
        Err(_) => {}
        Ok(neighbours::Path::Local) => doc.state = "local".into(),
        Ok(neighbours::Path::Hop(hop)) => {
            doc.via = hop.gateway.then(|| hop.neighbour.to_string());
            doc.interface = Some(
                nix::net::if_::if_indextoname(hop.ifindex)
                    .map(|c| c.to_string_lossy().into_owned())
                    .unwrap_or_else(|_| format!("if{}", hop.ifindex)),
            );
            doc.state = "none".into();
            if let Some(e) = &n.entry {
                doc.state = e.state.to_string();
                doc.mac = e.mac.map(|m| {
                    m.iter()
                        .map(|b| format!("{b:02x}"))
                        .collect::<Vec<_>>()
                        .join(":")
                });
                doc.managed = e.managed;
            }
        }
    }
    doc
}

fn neighbours_text(out: &mut String, neighbours: &[NeighbourDoc]) {
    if neighbours.is_empty() {
        return;
    }
    out.push_str("real server neighbours:\n");
    let rows: Vec<Vec<String>> = neighbours
        .iter()
        .map(|n| {
            let mut row = vec![n.real.clone()];
            row.push(n.via.as_ref().map_or(String::new(), |v| format!("via {v}")));
            row.push(n.interface.clone().unwrap_or_default());
            row.push(n.state.clone());
            row.push(n.mac.clone().unwrap_or_default());
            row.push(if n.managed { "managed" } else { "" }.to_owned());
            row
        })
        .collect();
    for line in table(&rows, "  ").lines() {
        let _ = writeln!(out, "{}", line.trim_end());
    }
}

/// Addresses of this network namespace's interfaces.
fn local_addresses() -> BTreeSet<IpAddr> {
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else {
        return BTreeSet::new();
    };
    addrs
        .filter_map(|a| {
            let sa = a.address?;
            if let Some(v4) = sa.as_sockaddr_in() {
                Some(IpAddr::V4(v4.ip()))
            } else {
                sa.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip()))
            }
        })
        .collect()
}

/// Gather `director status`.
pub fn status_doc(state: &StateOptions) -> anyhow::Result<StatusDoc> {
    let root = state.root()?;
    let links = state::link_status(&state.links_dir()?);
    let decap_links = state::link_status(&state.decap_dir()?);
    let decap_programs: Vec<u32> = decap_links.iter().map(|l| l.program_id).collect();
    let decap_counters = state::program_counters(&decap_programs)
        .into_iter()
        .map(|(s, v)| (s.name(), v))
        .collect();
    let mut doc = StatusDoc {
        director_version: env!("CARGO_PKG_VERSION"),
        layout_version: LAYOUT_VERSION,
        state_dir: root.display().to_string(),
        attached: false,
        links,
        decap_links,
        decap_counters,
        tables: None,
        services: 0,
        reals: 0,
        fingerprint: None,
        counters: Vec::new(),
        unannounced_vips: Vec::new(),
        bgp: director_daemon::runfiles::RunFiles::new(
            Path::new(director_daemon::runfiles::RUN_DIR),
            state,
        )
        .ok()
        .and_then(|f| f.bgp_report())
        .map(|t| t.lines().map(str::to_owned).collect()),
        neighbours: Vec::new(),
    };
    let c = match state.open_control() {
        Ok(c) => c,
        Err(state::StateError::NotAttached(_)) => return Ok(doc),
        Err(e) => return Err(e.into()),
    };
    doc.attached = true;
    let views = c.services()?;
    let census = c.connection_census()?;
    let live: u64 = census
        .per_real
        .values()
        .map(|n| n.active + n.inactive)
        .sum();
    doc.tables = Some(TablesDoc {
        conn_capacity: c.conn_table_size(),
        conn_entries: census.entries,
        conn6_entries: census.entries6,
        conn_live: live,
        maglev_size: c.table_size(),
        service_capacity: c.service_capacity(),
        real_capacity: c.real_capacity(),
        persist_capacity: c.persist_table_size(),
        flood_limit: c.flood_limit()?,
    });
    doc.services = views.len();
    doc.reals = views.iter().map(|v| v.reals.len()).sum();
    doc.fingerprint = Some(fingerprint::read(&c)?.director);
    doc.counters = c
        .stats()?
        .into_iter()
        .filter(|(_, n)| *n != 0)
        .map(|(s, n)| (s.name(), n))
        .collect();
    let reals: BTreeSet<IpAddr> = views
        .iter()
        .flat_map(|v| v.reals.iter().map(|r| r.spec.addr))
        .collect();
    let reals: Vec<IpAddr> = reals.into_iter().collect();
    doc.neighbours = neighbours::of_reals(&reals)?
        .iter()
        .map(neighbour_doc)
        .collect();
    let local = local_addresses();
    let vips: BTreeSet<IpAddr> = views.iter().map(|v| v.spec.addr.addr).collect();
    doc.unannounced_vips = vips
        .into_iter()
        .filter(|v| !local.contains(v))
        .map(|v| v.to_string())
        .collect();
    Ok(doc)
}

fn links_text(out: &mut String, title: &str, links: &[LinkStatus]) {
    if links.is_empty() {
        let _ = writeln!(out, "{title}: none");
        return;
    }
    let _ = writeln!(out, "{title}:");
    for l in links {
        let _ = write!(
            out,
            "  {}  link {}  program {}  tag {}",
            l.interface, l.link_id, l.program_id, l.program_tag
        );
        if !l.mode.is_empty() {
            let _ = write!(out, "  {}", l.mode);
        }
        if !l.present {
            out.push_str("  (the interface is gone: `director detach` it)");
        }
        out.push('\n');
    }
}

/// The readable `director status`.
pub fn status_text(doc: &StatusDoc) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "director {}, map layout v{}",
        doc.director_version, doc.layout_version
    );
    let _ = writeln!(
        out,
        "state: {} ({})",
        doc.state_dir,
        if doc.attached {
            "attached"
        } else {
            "not attached here: `director attach IFACE` loads it"
        }
    );
    links_text(&mut out, "links", &doc.links);
    links_text(&mut out, "decap links", &doc.decap_links);
    if !doc.decap_links.is_empty() {
        let list: Vec<String> = doc
            .decap_counters
            .iter()
            .map(|(n, v)| format!("{n} {v}"))
            .collect();
        let list = if list.is_empty() {
            "none yet".to_owned()
        } else {
            list.join(", ")
        };
        let _ = writeln!(out, "decap counters: {list}");
    }
    if let Some(t) = &doc.tables {
        let _ = writeln!(
            out,
            "connection table: {} live connections, {} entries in use of {} (IPv6: {} of {})",
            t.conn_live, t.conn_entries, t.conn_capacity, t.conn6_entries, t.conn_capacity
        );
        let _ = writeln!(out, "Maglev table: {} entries per service", t.maglev_size);
        if let Some(f) = &doc.fingerprint {
            let _ = writeln!(
                out,
                "scheduling fingerprint: {f} (equal on directors that send every flow to the same real)"
            );
        }
        let _ = writeln!(out, "persistence templates: at most {}", t.persist_capacity);
        let _ = match t.flood_limit {
            0 => writeln!(out, "flood limit: none"),
            n => writeln!(out, "flood limit: {n} new flows/s per CPU"),
        };
        let _ = writeln!(
            out,
            "virtual services: {} of {}, real servers: {} of {}",
            doc.services, t.service_capacity, doc.reals, t.real_capacity
        );
        if doc.counters.is_empty() {
            out.push_str("counters: none yet\n");
        } else {
            let list: Vec<String> = doc
                .counters
                .iter()
                .map(|(n, v)| format!("{n} {v}"))
                .collect();
            let _ = writeln!(out, "counters: {}", list.join(", "));
        }
    }
    neighbours_text(&mut out, &doc.neighbours);
    if let Some(lines) = &doc.bgp {
        let _ = writeln!(out, "bgp (director daemon):");
        for l in lines {
            let _ = writeln!(out, "  {l}");
        }
    }
    let dev = doc.links.first().map_or("IFACE", |l| l.interface.as_str());
    // Announced by BGP, a VIP is no address of the director's.
    let unannounced: &[String] = if doc.bgp.is_some() {
        &[]
    } else {
        &doc.unannounced_vips
    };
    for v in unannounced {
        let plen = if v.contains(':') { 128 } else { 32 };
        let _ = writeln!(
            out,
            "warning: VIP {v} not configured on any interface: announce it (ip addr add {v}/{plen} dev {dev}) or let keepalived do so"
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use director_common::service::Scheduler;
    use director_control::{Protocol, RealSpec, ServiceSpec, control::Timeouts};

    use super::*;
    use crate::ipvsadm::format::{RealRow, SvcRow};

    fn snap() -> Snapshot {
        let vip = IpAddr::V4("10.0.0.100".parse().unwrap());
        let real = |n: u8, w: u32| RealRow {
            spec: RealSpec::new(IpAddr::V4([10, 1, 0, n].into()), 80, Method::Route, w),
            stats: Counters {
                conns: 2,
                pkts_in: 20,
                bytes_in: 2000,
                pkts_out: 0,
                bytes_out: 0,
            },
            active: 1,
            inactive: 1,
            persistent: 0,
        };
        Snapshot {
            conn_table_size: 65536,
            services: vec![SvcRow {
                spec: ServiceSpec::new(Protocol::Tcp, vip, 80)
                    .scheduler(Scheduler::WeightedRoundRobin),
                stats: Counters::default(),
                reals: vec![real(11, 1), real(12, 0)],
            }],
        }
    }

    fn timeouts() -> Timeouts {
        Timeouts {
            tcp: 900,
            tcp_fin: 120,
            udp: 300,
        }
    }

    #[test]
    fn json_list_carries_each_tunnel_real_s_encapsulation() {
        use director_control::model::{TunCsum, Tunnel};
        let mut s = snap();
        let reals = &mut s.services[0].reals;
        reals[0].spec.method = Method::Tunnel;
        reals[0].spec.tunnel = Tunnel {
            kind: TunType::Gue,
            port: 6080,
            csum: TunCsum::Csum,
        };
        reals[1].spec.method = Method::Tunnel;
        reals[1].spec.tunnel = Tunnel {
            kind: TunType::Gre,
            port: 0,
            csum: TunCsum::RemCsum,
        };
        let mut plain = reals[1].clone();
        plain.spec = RealSpec::new(IpAddr::V4([10, 1, 0, 13].into()), 80, Method::Tunnel, 1);
        reals.push(plain);
        let prints = Fingerprints {
            maglev_size: 16381,
            director: String::new(),
            services: Vec::new(),
        };
        let v: serde_json::Value = serde_json::to_value(list_doc(&s, timeouts(), &prints)).unwrap();
        let tunnels: Vec<&serde_json::Value> = v["services"][0]["reals"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| &r["tunnel"])
            .collect();
        let text = list_text(&s, timeouts());
        for method in ["tunnel/gue", "tunnel/gre", "tunnel "] {
            assert!(text.contains(&format!("  {method}")), "{method} in\n{text}");
        }
        assert_eq!(
            tunnels,
            [
                &serde_json::json!({"type": "gue", "port": 6080, "checksum": "csum"}),
                &serde_json::json!({"type": "gre", "checksum": "remcsum"}),
                &serde_json::json!({"type": "ipip"}),
            ]
        );
    }

    #[test]
    fn json_list_follows_the_documented_schema() {
        let prints = Fingerprints {
            maglev_size: 16381,
            director: "0123456789abcdef".into(),
            services: vec![fingerprint::ServiceFingerprint {
                addr: snap().services[0].spec.addr,
                fingerprint: "fedcba9876543210".into(),
            }],
        };
        let v: serde_json::Value =
            serde_json::to_value(list_doc(&snap(), timeouts(), &prints)).unwrap();
        let want = serde_json::json!({
            "version": 1,
            "timeouts": {"tcp": 900, "tcp_fin": 120, "udp": 300},
            "maglev_size": 16381,
            "fingerprint": "0123456789abcdef",
            "services": [{
                "protocol": "tcp", "address": "10.0.0.100", "port": 80,
                "scheduler": "wrr", "flags": [], "persistence": null,
                "fingerprint": "fedcba9876543210",
                "counters": {"conns": 0, "in_packets": 0, "in_bytes": 0, "out_packets": 0, "out_bytes": 0},
                "reals": [
                    {"address": "10.1.0.11", "port": 80, "method": "route", "weight": 1, "state": "up",
                     "active_conns": 1, "inactive_conns": 1, "persistent_conns": 0,
                     "counters": {"conns": 2, "in_packets": 20, "in_bytes": 2000, "out_packets": 0, "out_bytes": 0}},
                    {"address": "10.1.0.12", "port": 80, "method": "route", "weight": 0, "state": "quiescent",
                     "active_conns": 1, "inactive_conns": 1, "persistent_conns": 0,
                     "counters": {"conns": 2, "in_packets": 20, "in_bytes": 2000, "out_packets": 0, "out_bytes": 0}}
                ]
            }]
        });
        assert_eq!(v, want);
    }

    #[test]
    fn readable_list_shows_weight_state_and_method_per_real() {
        let want = "\
TCP 10.0.0.100:80  scheduler wrr  connections 0, in 0 packets / 0 bytes, out 0 packets / 0 bytes
  REAL          METHOD  WEIGHT  STATE      ACTIVE  INACTIVE  PERSISTENT  CONNS  IN-PKTS  IN-BYTES
  10.1.0.11:80  route   1       up         1       1         0           2      20       2000
  10.1.0.12:80  route   0       quiescent  1       1         0           2      20       2000
timeouts: tcp 900 s, tcpfin 120 s, udp 300 s
";
        assert_eq!(list_text(&snap(), timeouts()), want);
        assert!(list_text(&Snapshot::default(), timeouts()).starts_with("no virtual services"));
    }

    #[test]
    fn status_warns_about_each_vip_that_is_not_announced() {
        let doc = StatusDoc {
            director_version: "0.1.0",
            layout_version: 1,
            state_dir: "/sys/fs/bpf/x".into(),
            attached: true,
            links: vec![LinkStatus {
                interface: "eth0".into(),
                present: true,
                link_id: 7,
                program_id: 42,
                program_tag: "0123456789abcdef".into(),
                mode: "native".into(),
            }],
            decap_links: vec![],
            decap_counters: vec![],
            tables: Some(TablesDoc {
                conn_capacity: 65536,
                conn_entries: 3,
                conn6_entries: 1,
                conn_live: 2,
                maglev_size: 16381,
                service_capacity: 256,
                real_capacity: 16384,
                persist_capacity: 65536,
                flood_limit: 50000,
            }),
            services: 1,
            reals: 2,
            fingerprint: Some("0123456789abcdef".into()),
            counters: vec![("tx", 5)],
            unannounced_vips: vec!["10.0.0.100".into()],
            bgp: None,
            neighbours: vec![
                NeighbourDoc {
                    real: "10.1.0.11".into(),
                    via: None,
                    interface: Some("eth1".into()),
                    state: "REACHABLE".into(),
                    mac: Some("02:00:00:00:01:0b".into()),
                    managed: true,
                },
                NeighbourDoc {
                    real: "10.9.0.5".into(),
                    via: Some("10.1.0.254".into()),
                    interface: Some("eth1".into()),
                    state: "INCOMPLETE".into(),
                    mac: None,
                    managed: true,
                },
                NeighbourDoc {
                    real: "192.0.2.7".into(),
                    via: None,
                    interface: None,
                    state: "no route".into(),
                    mac: None,
                    managed: false,
                },
            ],
        };
        let want = "\
director 0.1.0, map layout v1
state: /sys/fs/bpf/x (attached)
links:
  eth0  link 7  program 42  tag 0123456789abcdef  native
decap links: none
connection table: 2 live connections, 3 entries in use of 65536 (IPv6: 1 of 65536)
Maglev table: 16381 entries per service
scheduling fingerprint: 0123456789abcdef (equal on directors that send every flow to the same real)
persistence templates: at most 65536
flood limit: 50000 new flows/s per CPU
virtual services: 1 of 256, real servers: 2 of 16384
counters: tx 5
real server neighbours:
  10.1.0.11                  eth1  REACHABLE   02:00:00:00:01:0b  managed
  10.9.0.5   via 10.1.0.254  eth1  INCOMPLETE                     managed
  192.0.2.7                        no route
warning: VIP 10.0.0.100 not configured on any interface: announce it (ip addr add 10.0.0.100/32 dev eth0) or let keepalived do so
";
        assert_eq!(status_text(&doc), want);
        // A daemon announcing by BGP: its report, and no warning about VIPs that are
        // no local address (the routers send their traffic here).
        let bgp = StatusDoc {
            bgp: Some(vec![
                "BIRD /run/bird/bird.ctl: up, configuration taken".into(),
                "announced (AS 65001): 10.0.0.100/32".into(),
                "neighbors: 192.0.2.1".into(),
            ]),
            ..doc
        };
        let want = want.replace(
            "warning: VIP 10.0.0.100 not configured on any interface: announce it (ip addr add 10.0.0.100/32 dev eth0) or let keepalived do so\n",
            "bgp (director daemon):\n  BIRD /run/bird/bird.ctl: up, configuration taken\n  announced (AS 65001): 10.0.0.100/32\n  neighbors: 192.0.2.1\n",
        );
        assert_eq!(status_text(&bgp), want);
    }
}
