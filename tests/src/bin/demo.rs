//! `cargo xtask demo`: a lab of network namespaces (a client, the director, three real
//! servers), one virtual service per forwarding method, a bounded burst of real HTTP and
//! UDP requests through each VIP, then who answered and the director's counters.

use std::{
    net::{IpAddr, SocketAddr},
    process::ExitCode,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};
use director::{Protocol, control::ServiceView};
use director_common::{real::Method, service::Scheduler};
use director_tests::{
    lab::{http_get, udp_request},
    lvs::{LvsLab, vip_for},
};

const REQUESTS: u32 = 30;
const TIMEOUT: Duration = Duration::from_secs(3);

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("demo: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn method_name(m: Method) -> &'static str {
    match m {
        Method::Route => "Route (DR)",
        Method::Tunnel => "Tunnel (IPIP)",
        Method::Masq => "Masq (NAT)",
    }
}

fn run() -> Result<()> {
    let started = Instant::now();
    println!("== Lab");
    let mut lvs = LvsLab::build(3).context("building the lab")?;
    println!(
        "   client 10.0.0.2 -> director (XDP on eth0, eth1) -> real1..real3 (10.1.0.11-13)\n   \
         VIPs: {} DR, {} IPIP, {} NAT (reals listen on 8080; NAT rewrites the port)\n",
        vip_for(Method::Route),
        vip_for(Method::Tunnel),
        vip_for(Method::Masq)
    );

    let plan = [
        (Method::Route, Scheduler::Maglev, [1u32, 2, 3]),
        (Method::Tunnel, Scheduler::WeightedRoundRobin, [1, 1, 2]),
        (Method::Masq, Scheduler::RoundRobin, [1, 1, 1]),
    ];
    println!("== Services");
    for (method, sched, weights) in plan {
        lvs.service(method, Protocol::Tcp, 80, sched, &weights)?;
        lvs.service(method, Protocol::Udp, 53, sched, &weights)?;
        println!(
            "   {:<15} {}:80/tcp and :53/udp  scheduler {:<4} weights {:?}",
            method_name(method),
            vip_for(method),
            sched_name(sched),
            weights
        );
    }

    println!(
        "\n== Traffic: {REQUESTS} HTTP GETs and {REQUESTS} UDP requests per VIP, from the client"
    );
    println!(
        "   {:<15} {:<6} {:>7} {:>7} {:>7}   weights",
        "method", "proto", "real1", "real2", "real3"
    );
    for (method, _, weights) in plan {
        let vip = vip_for(method);
        let client = lvs.lab.ns("client");
        let mut http = [0u32; 4];
        let mut udp = [0u32; 4];
        for _ in 0..REQUESTS {
            let body = http_get(client, &format!("http://{vip}/"), TIMEOUT)?;
            http[LvsLab::real_of_answer(&body)? as usize] += 1;
            let ans = udp_request(
                client,
                SocketAddr::new(IpAddr::V4(vip), 53),
                b"who?",
                TIMEOUT,
            )?;
            udp[LvsLab::real_of_answer(&String::from_utf8_lossy(&ans))? as usize] += 1;
        }
        for (proto, c) in [("HTTP", http), ("UDP", udp)] {
            println!(
                "   {:<15} {:<6} {:>7} {:>7} {:>7}   {:?}",
                method_name(method),
                proto,
                c[1],
                c[2],
                c[3],
                weights
            );
        }
    }

    println!("\n== The director's table (ipvsadm -L -n --stats layout)");
    print_stats(&lvs.director.control.services()?);

    println!("\n== Packet outcomes (global counters)");
    for (stat, n) in lvs.director.control.stats()? {
        if n > 0 {
            println!("   {:<20} {n}", stat.name());
        }
    }
    drop(lvs);
    println!(
        "\n== Done in {:.1} s; the lab is gone (namespaces, programs, servers).",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn sched_name(s: Scheduler) -> &'static str {
    match s {
        Scheduler::Maglev => "mh",
        Scheduler::SourceHash => "sh",
        Scheduler::RoundRobin => "rr",
        Scheduler::WeightedRoundRobin => "wrr",
    }
}

fn print_stats(services: &[ServiceView]) {
    println!(
        "   {:<33} {:>8} {:>8} {:>8} {:>8} {:>8}",
        "Prot LocalAddress:Port", "Conns", "InPkts", "OutPkts", "InBytes", "OutBytes"
    );
    println!("     -> RemoteAddress:Port");
    for s in services {
        let proto = match s.spec.addr.proto {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
        };
        let st = &s.stats;
        println!(
            "   {:<4} {:<28} {:>8} {:>8} {:>8} {:>8} {:>8}",
            proto,
            format!("{}:{}", s.spec.addr.addr, s.spec.addr.port),
            st.conns,
            st.pkts_in,
            st.pkts_out,
            st.bytes_in,
            st.bytes_out
        );
        for r in &s.reals {
            let st = &r.stats;
            println!(
                "     -> {:<28} {:>8} {:>8} {:>8} {:>8} {:>8}",
                format!("{}:{}", r.spec.addr, r.spec.port),
                st.conns,
                st.pkts_in,
                st.pkts_out,
                st.bytes_in,
                st.bytes_out
            );
        }
    }
}
