use std::{
    collections::BTreeSet,
    net::IpAddr,
    path::Path,
    sync::{Arc, Mutex},
    time::Duration,
};

use super::{
    Bird, Speaker, announced,
    config::{BfdTimers, BgpConfig, Community, Services},
};
use crate::config::parse;

const SERVICES: &str = "[[service]]\naddress = \"10.0.0.100:80\"\n[[service.real]]\naddress = \"10.1.0.11\"\n\
    [[service]]\naddress = \"10.0.0.100:443\"\n[[service.real]]\naddress = \"10.1.0.11\"\n\
    [[service]]\naddress = \"10.0.0.101:80\"\n[[service.real]]\naddress = \"10.1.0.11\"\n";

const BGP: &str = "[bgp]\nsocket = \"/run/bird.ctl\"\ninclude = \"/etc/bird/director.conf\"\nasn = 65001\n\
    [[bgp.neighbor]]\naddress = \"192.0.2.1\"\nasn = 65000\n";

/// `[bgp]` with `extra` keys (and, after them, more neighbors).
fn bgp(extra: &str) -> BgpConfig {
    let (keys, more) = extra.split_at(extra.find("[[bgp.neighbor]]").unwrap_or(extra.len()));
    let (head, first) = BGP.split_at(BGP.find("[[bgp.neighbor]]").unwrap());
    let src = format!("{SERVICES}{head}{keys}{first}{more}");
    parse(Path::new("d.toml"), &src)
        .unwrap_or_else(|e| panic!("{e}"))
        .bgp
        .expect("[bgp]")
}

fn vip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn set(v: &[&str]) -> BTreeSet<IpAddr> {
    v.iter().map(|s| vip(s)).collect()
}

fn health(v: &[(&str, u32)]) -> Vec<(IpAddr, u32)> {
    v.iter().map(|(a, n)| (a.parse().unwrap(), *n)).collect()
}

#[test]
fn defaults_announce_every_vip_whose_services_all_have_an_up_real() {
    let c = bgp("");
    assert_eq!(c.vips, set(&["10.0.0.100", "10.0.0.101"]));
    assert_eq!(c.policy.services, Services::All);
    assert_eq!(c.policy.min_reals, 1);
    assert_eq!(c.drain, Duration::from_secs(5));
    assert_eq!(c.neighbors[0].hold_time, Duration::from_secs(9));
    assert_eq!(c.neighbors[0].bfd, None);
    let all_up = health(&[("10.0.0.100", 1), ("10.0.0.100", 2), ("10.0.0.101", 1)]);
    assert_eq!(
        announced(&c, true, &all_up),
        set(&["10.0.0.100", "10.0.0.101"])
    );
    // One service of .100 has no real UP: .100 goes, .101 stays.
    let one_down = health(&[("10.0.0.100", 0), ("10.0.0.100", 2), ("10.0.0.101", 1)]);
    assert_eq!(announced(&c, true, &one_down), set(&["10.0.0.101"]));
    // A detached data path announces nothing, whatever the health.
    assert_eq!(announced(&c, false, &all_up), set(&[]));
}

#[test]
fn any_service_and_min_reals_policies() {
    let any = bgp("announce = \"any\"\n");
    let one_down = health(&[("10.0.0.100", 0), ("10.0.0.100", 2), ("10.0.0.101", 0)]);
    assert_eq!(announced(&any, true, &one_down), set(&["10.0.0.100"]));
    let two = bgp("min_reals = 2\nannounce = \"any\"\n");
    assert_eq!(
        announced(
            &two,
            true,
            &health(&[("10.0.0.100", 1), ("10.0.0.100", 2), ("10.0.0.101", 1)])
        ),
        set(&["10.0.0.100"])
    );
    assert_eq!(
        announced(
            &two,
            true,
            &health(&[("10.0.0.100", 1), ("10.0.0.100", 1), ("10.0.0.101", 3)])
        ),
        set(&["10.0.0.101"])
    );
    // Only the listed VIPs, and a listed VIP whose services are gone is not announced.
    let only = bgp("vips = [\"10.0.0.101\"]\n");
    assert_eq!(
        announced(
            &only,
            true,
            &health(&[("10.0.0.100", 1), ("10.0.0.101", 1)])
        ),
        set(&["10.0.0.101"])
    );
    assert_eq!(
        announced(&only, true, &health(&[("10.0.0.100", 1)])),
        set(&[])
    );
}

#[test]
fn the_include_file_is_exactly_this() {
    let c = bgp(
        "router_id = \"192.0.2.11\"\nlocal_address = \"192.0.2.11\"\ncommunities = [\"65001:100\", \"65001:7:8\"]\n\
         hold_time = \"6s\"\nbfd = { interval = \"50ms\", multiplier = 5 }\n\
         [[bgp.neighbor]]\naddress = \"192.0.2.129\"\nasn = 65002\nbfd = true\nbfd_multiplier = 4\nhold_time = 30\n",
    );
    assert_eq!(
        c.neighbors[1].bfd,
        Some(BfdTimers {
            interval: Duration::from_millis(50),
            multiplier: 4
        })
    );
    assert_eq!(
        c.communities,
        [
            Community::Standard(65001, 100),
            Community::Large(65001, 7, 8)
        ]
    );
    let text = super::bird::render(&c, &set(&["10.0.0.100", "10.0.0.101"]));
    let filter = "if proto != \"director_vips\" then reject; bgp_community.add((65001,100)); bgp_large_community.add((65001,7,8)); accept;";
    assert_eq!(
        text,
        format!(
            "# Written by `director daemon` from its [bgp] section: edits here are lost.\n\
router id 192.0.2.11;

protocol static director_vips {{
  ipv4;
  route 10.0.0.100/32 blackhole;
  route 10.0.0.101/32 blackhole;
}}

protocol bfd director_bfd {{
}}

protocol bgp director_192_0_2_1 {{
  local 192.0.2.11 as 65001;
  neighbor 192.0.2.1 as 65000;
  hold time 6;
  ipv4 {{
    import none;
    export filter {{ {filter} }};
  }};
}}

protocol bgp director_192_0_2_129 {{
  local 192.0.2.11 as 65001;
  neighbor 192.0.2.129 as 65002;
  hold time 30;
  bfd {{ min rx interval 50 ms; min tx interval 50 ms; multiplier 4; }};
  ipv4 {{
    import none;
    export filter {{ {filter} }};
  }};
}}
"
        )
    );
    // Nothing announced: the static protocol stays, with no route.
    let empty = super::bird::render(&bgp(""), &set(&[]));
    assert!(
        empty.contains("protocol static director_vips {\n  ipv4;\n}\n"),
        "{empty}"
    );
}

const SERVICES6: &str = "[[service]]\naddress = \"[2001:db8::100]:80\"\n[[service.real]]\naddress = \"[2001:db8:1::11]\"\n";

/// An IPv6 VIP goes to the IPv6 sessions only, as a /128 of a static protocol of its
/// own (a BIRD static protocol has one channel); the IPv4 sessions keep the IPv4 VIPs.
#[test]
fn ipv6_vips_are_announced_as_host_routes_to_the_ipv6_neighbors() {
    let src = format!(
        "{SERVICES}{SERVICES6}{BGP}[[bgp.neighbor]]\naddress = \"2001:db8:ff::1\"\nasn = 65000\nlocal_address = \"2001:db8:ff::11\"\n"
    );
    let c = parse(Path::new("d.toml"), &src)
        .unwrap_or_else(|e| panic!("{e}"))
        .bgp
        .expect("[bgp]");
    assert_eq!(c.vips, set(&["10.0.0.100", "10.0.0.101", "2001:db8::100"]));
    let up = health(&[
        ("10.0.0.100", 1),
        ("10.0.0.100", 1),
        ("10.0.0.101", 0),
        ("2001:db8::100", 1),
    ]);
    let vips = announced(&c, true, &up);
    assert_eq!(vips, set(&["10.0.0.100", "2001:db8::100"]));
    let text = super::bird::render(&c, &vips);
    assert!(
        text.contains(
            "protocol static director_vips {\n  ipv4;\n  route 10.0.0.100/32 blackhole;\n}\n"
        ),
        "{text}"
    );
    assert!(
        text.contains(
            "protocol static director_vips6 {\n  ipv6;\n  route 2001:db8::100/128 blackhole;\n}\n"
        ),
        "{text}"
    );
    assert!(
        text.contains(
            "protocol bgp director_2001_db8_ff__1 {\n  local 2001:db8:ff::11 as 65001;\n  neighbor 2001:db8:ff::1 as 65000;\n  hold time 9;\n  ipv6 {\n    import none;\n    export filter { if proto != \"director_vips6\" then reject; accept; };\n  };\n}\n"
        ),
        "{text}"
    );
    assert!(
        text.contains("  neighbor 192.0.2.1 as 65000;\n  hold time 9;\n  ipv4 {\n    import none;\n    export filter { if proto != \"director_vips\" then reject; accept; };"),
        "{text}"
    );
    // Without an IPv6 neighbor, the IPv6 VIP is left out by default, and the file has
    // no IPv6 static protocol (an IPv4-only setup's file is as before).
    let v4only = parse(Path::new("d.toml"), &format!("{SERVICES}{SERVICES6}{BGP}"))
        .unwrap_or_else(|e| panic!("{e}"))
        .bgp
        .expect("[bgp]");
    assert_eq!(v4only.vips, set(&["10.0.0.100", "10.0.0.101"]));
    assert!(!super::bird::render(&v4only, &v4only.vips).contains("director_vips6"));
}

#[test]
fn broken_bgp_sections_name_line_field_and_what_is_expected() {
    // `keys` go into [bgp] before its neighbor, `more` after it.
    let with = |keys: &str, more: &str| {
        let (head, first) = BGP.split_at(BGP.find("[[bgp.neighbor]]").unwrap());
        format!("{SERVICES}{head}{keys}{first}{more}")
    };
    let cases: Vec<(String, &str)> = vec![
        (
            format!(
                "{SERVICES}[bgp]\nasn = 65001\n[[bgp.neighbor]]\naddress = \"192.0.2.1\"\nasn = 65000\n"
            ),
            "d.toml:13:1: bgp.socket: missing: an absolute path is required\nd.toml:13:1: bgp.include: missing: an absolute path is required",
        ),
        (
            with("", "").replace("asn = 65001", "asn = 0"),
            "d.toml:16:7: bgp.asn: expected an AS number from 1 to 4294967295, not 0",
        ),
        (
            with(
                "vips = [\"10.0.0.102\", \"nowhere\", \"10.0.0.101\", \"10.0.0.101\"]\n",
                "",
            ),
            "d.toml:17:9: bgp.vips[0]: 10.0.0.102 is the address of no declared service\nd.toml:17:23: bgp.vips[1]: expected a VIP (an IPv4 or IPv6 address), not \"nowhere\"\nd.toml:17:48: bgp.vips[3]: 10.0.0.101 is listed twice",
        ),
        (
            with("announce = \"most\"\nmin_reals = 0\n", ""),
            "d.toml:17:12: bgp.announce: expected \"all\" (every service of the VIP healthy) or \"any\" (one is enough), not \"most\"\nd.toml:18:13: bgp.min_reals: expected at least 1 (UP real servers a service needs to count as healthy), not 0",
        ),
        (
            with("communities = [\"65001:70000\", \"x\"]\n", ""),
            "d.toml:17:16: bgp.communities[0]: expected a community \"ASN:VALUE\" (0 to 65535 each) or a large community \"ASN:DATA1:DATA2\", not \"65001:70000\"\nd.toml:17:31: bgp.communities[1]: expected a community \"ASN:VALUE\" (0 to 65535 each) or a large community \"ASN:DATA1:DATA2\", not \"x\"",
        ),
        (
            with("drain = \"soon\"\nrouter_id = \"1\"\n", ""),
            "d.toml:18:13: bgp.router_id: expected a router id (an IPv4 address), not \"1\"\nd.toml:17:9: bgp.drain: expected a duration like \"2s\", \"500ms\" or \"1m\" (or whole seconds as a number), not \"soon\"",
        ),
        (
            with("", "hold_time = \"1.5s\"\n"),
            "d.toml:20:13: bgp.neighbor[0].hold_time: expected at least 3s",
        ),
        (
            with(
                "bfd = { multiplier = 300 }\n",
                "bfd = true\nbfd_interval = \"1ms\"\n",
            ),
            "d.toml:17:22: bgp.bfd.multiplier: expected 1 to 255 (missed packets before the session is down), not 300\nd.toml:22:16: bgp.neighbor[0].bfd_interval: expected at least 10ms",
        ),
        (
            with(
                "",
                "[[bgp.neighbor]]\naddress = \"192.0.2.1\"\n[[bgp.neighbor]]\nasn = 65000\n",
            ),
            "d.toml:20:1: bgp.neighbor[1].asn: missing: the neighbor's AS number is required\nd.toml:21:11: bgp.neighbor[1].address: 192.0.2.1 is already a neighbor\nd.toml:22:1: bgp.neighbor[2].address: missing: the neighbor's address is required",
        ),
        (
            with("", "colour = 1\n"),
            "d.toml:20:1: bgp.neighbor[0].colour: unknown field `colour`, expected one of `address`, `asn`, `local_address`, `hold_time`, `bfd`, `bfd_interval`, `bfd_multiplier`",
        ),
        (
            with("", "").replace(
                "[[bgp.neighbor]]\naddress = \"192.0.2.1\"\nasn = 65000\n",
                "",
            ),
            "d.toml:13:1: bgp.neighbor: no neighbor: add at least one [[bgp.neighbor]] with an address and asn",
        ),
        (
            format!(
                "{SERVICES6}{}",
                with(
                    "vips = [\"2001:db8::100\"]\n",
                    "local_address = \"2001:db8::11\"\n"
                )
            )
            .replace(
                "[[service]]\naddress = \"10.0.0.101:80\"",
                "[[service]]\naddress = \"10.0.0.102:80\"",
            ),
            "d.toml:21:9: bgp.vips[0]: 2001:db8::100 is an IPv6 VIP and no neighbor is IPv6: no session would carry its route\nd.toml:25:17: bgp.neighbor[0].local_address: 2001:db8::11 is an IPv6 address and the neighbor 192.0.2.1 is IPv4: a session has one family",
        ),
    ];
    for (src, want) in cases {
        let e = parse(Path::new("d.toml"), &src)
            .map(|_| ())
            .expect_err(&src)
            .to_string();
        assert_eq!(e, want, "\n{src}");
    }
}

/// BIRD as the speaker sees it: the files written, the configures asked, and whether it
/// answers.
#[derive(Clone, Default)]
struct FakeBird(Arc<Mutex<Fake>>);

#[derive(Default)]
struct Fake {
    files: Vec<String>,
    configures: usize,
    down: bool,
    refuse: bool,
}

impl Bird for FakeBird {
    fn write(&mut self, _: &BgpConfig, text: &str) -> Result<(), String> {
        self.0.lock().unwrap().files.push(text.to_owned());
        Ok(())
    }
    fn configure(&mut self, _: &BgpConfig) -> Result<(), String> {
        let mut f = self.0.lock().unwrap();
        f.configures += 1;
        if f.down {
            Err("BIRD's control socket /run/bird.ctl: Connection refused".into())
        } else if f.refuse {
            Err("BIRD refused the configuration: /etc/bird/director.conf:3:9 syntax error".into())
        } else {
            Ok(())
        }
    }
    fn ping(&mut self, _: &BgpConfig) -> Result<(), String> {
        if self.0.lock().unwrap().down {
            Err("BIRD's control socket /run/bird.ctl: Connection refused".into())
        } else {
            Ok(())
        }
    }
}

#[test]
fn the_speaker_reconfigures_only_on_change_and_retries_until_bird_takes_it() {
    let fake = FakeBird::default();
    let metrics = Arc::new({
        let mut m = crate::metrics::Metrics::new(None);
        m.register_bgp();
        m
    });
    let mut s = Speaker::new(bgp(""), Box::new(fake.clone()), Some(metrics.clone()));
    s.update(set(&["10.0.0.100"]));
    s.update(set(&["10.0.0.100"]));
    s.sync(set(&["10.0.0.100"]));
    {
        let f = fake.0.lock().unwrap();
        assert_eq!(f.files.len(), 1, "one write for one change");
        assert_eq!(f.configures, 1);
        assert!(f.files[0].contains("route 10.0.0.100/32 blackhole;"));
    }
    assert!(s.status().bird_up);
    assert_eq!(metrics.bgp_up.get(), 1);
    assert_eq!(metrics.bgp_announced.get(), 1);

    // BIRD is down at the next change: said in the status and metrics, retried at sync.
    fake.0.lock().unwrap().down = true;
    s.update(set(&["10.0.0.100", "10.0.0.101"]));
    let st = s.status();
    assert!(!st.bird_up && st.pending, "{st:?}");
    assert!(st.error.unwrap().contains("Connection refused"));
    assert_eq!(metrics.bgp_up.get(), 0);
    assert_eq!(metrics.bgp_errors.get(), 1);
    fake.0.lock().unwrap().down = false;
    s.sync(set(&["10.0.0.100", "10.0.0.101"]));
    let st = s.status();
    assert!(st.bird_up && !st.pending && st.error.is_none(), "{st:?}");
    assert_eq!(
        fake.0.lock().unwrap().files.len(),
        2,
        "the same file again is not rewritten"
    );
    assert_eq!(fake.0.lock().unwrap().configures, 3);
    assert_eq!(metrics.bgp_announced.get(), 2);

    // A refused configuration is an error too; withdrawing everything empties the routes.
    fake.0.lock().unwrap().refuse = true;
    s.update(set(&[]));
    assert!(s.status().error.unwrap().contains("syntax error"));
    fake.0.lock().unwrap().refuse = false;
    s.sync(set(&[]));
    assert!(s.status().bird_up);
    let last = fake.0.lock().unwrap().files.last().unwrap().clone();
    assert!(!last.contains("route "), "{last}");
}

#[test]
fn bird_replies_are_read_to_their_last_line() {
    let mut r: &[u8] = b"0002-Reading configuration from /etc/bird/bird.conf\n0003 Reconfigured\n";
    let reply = super::bird::read_reply(&mut r).unwrap();
    assert_eq!(reply.code, 3);
    assert!(reply.ok());
    let mut r: &[u8] =
        b"0002-Reading configuration from main.conf\n8002 /tmp/inc.conf:1:59 syntax error\n";
    let reply = super::bird::read_reply(&mut r).unwrap();
    assert!(!reply.ok());
    assert_eq!(
        reply.text(),
        "Reading configuration from main.conf; /tmp/inc.conf:1:59 syntax error"
    );
    let mut r: &[u8] = b"1000-BIRD 2.0.12\n1011-Router ID is 10.0.0.1\n Current server time is x\n0013 Daemon is up and running\n";
    assert_eq!(super::bird::read_reply(&mut r).unwrap().code, 13);
    let mut r: &[u8] = b"0002-Reading\n";
    assert!(super::bird::read_reply(&mut r).is_err(), "cut short");
}

#[test]
fn the_scale_out_example_is_valid() {
    let path = Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/scale-out.toml"
    ));
    let c = crate::config::load(path).unwrap_or_else(|e| panic!("{e}"));
    let b = c.bgp.clone().expect("[bgp]");
    assert_eq!(b.asn, 65001);
    assert_eq!(b.vips, set(&["10.0.0.100", "10.0.0.101"]));
    assert_eq!(b.neighbors.len(), 2);
    assert_eq!(b.neighbors[1].local_address, Some(vip("192.0.2.139")));
    assert_eq!(b.neighbors[0].local_address, None);
    assert_eq!(
        b.neighbors[0].bfd,
        Some(BfdTimers {
            interval: Duration::from_millis(100),
            multiplier: 3
        })
    );
    assert_eq!(
        crate::command::summary(&c),
        "3 services, 5 real servers; BGP AS 65001: 2 VIPs to 2 neighbors (192.0.2.1, 192.0.2.129)"
    );
}
