//! DNS checks: one query over UDP; UP when the answer is NOERROR with at least one
//! record of the asked type. Packets are built and parsed by simple-dns.

use std::net::SocketAddr;

use simple_dns::{CLASS, Name, Packet, PacketFlag, Question, RCODE, TYPE};
use tokio::net::UdpSocket;

use super::{Outcome, io_detail, unspecified_for};
use crate::config::{DnsCheck, DnsType};

fn rtype(t: DnsType) -> TYPE {
    match t {
        DnsType::A => TYPE::A,
        DnsType::Aaaa => TYPE::AAAA,
        DnsType::Cname => TYPE::CNAME,
        DnsType::Mx => TYPE::MX,
        DnsType::Ns => TYPE::NS,
        DnsType::Ptr => TYPE::PTR,
        DnsType::Soa => TYPE::SOA,
        DnsType::Srv => TYPE::SRV,
        DnsType::Txt => TYPE::TXT,
    }
}

/// Why no query could be made of a check's name.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("name {name:?}: {cause}")]
    Name {
        name: String,
        cause: simple_dns::SimpleDnsError,
    },
    #[error("building the query: {0}")]
    Build(simple_dns::SimpleDnsError),
}

/// The query packet (recursion desired).
pub fn query(id: u16, name: &str, qtype: DnsType) -> Result<Vec<u8>, QueryError> {
    let mut q = Packet::new_query(id);
    q.set_flags(PacketFlag::RECURSION_DESIRED);
    let qname = Name::new(name).map_err(|cause| QueryError::Name {
        name: name.to_owned(),
        cause,
    })?;
    q.questions.push(Question::new(
        qname,
        rtype(qtype).into(),
        CLASS::IN.into(),
        false,
    ));
    q.build_bytes_vec().map_err(QueryError::Build)
}

/// Judge a reply to query `id`; `None` when it is not the reply (another id, a query).
pub fn judge(reply: &[u8], id: u16, d: &DnsCheck) -> Option<Outcome> {
    let p = Packet::parse(reply).ok()?;
    if p.id() != id || !p.has_flags(PacketFlag::RESPONSE) {
        return None;
    }
    let want = rtype(d.qtype);
    Some(match p.rcode() {
        RCODE::NoError => {
            let n = p
                .answers
                .iter()
                .filter(|rr| rr.match_qtype(want.into()))
                .count();
            if n > 0 {
                Outcome::up(format!("{n} {} record(s) for {}", d.qtype.name(), d.name))
            } else {
                Outcome::down(format!("no {} record for {}", d.qtype.name(), d.name))
            }
        }
        RCODE::NameError => Outcome::down(format!("NXDOMAIN for {}", d.name)),
        other => Outcome::down(format!("{other:?} for {}", d.name)),
    })
}

pub async fn check(d: &DnsCheck, target: SocketAddr) -> Outcome {
    let id = fastrand::u16(..);
    let packet = match query(id, &d.name, d.qtype) {
        Ok(p) => p,
        Err(e) => return Outcome::down(e.to_string()),
    };
    let sock = match UdpSocket::bind(unspecified_for(target)).await {
        Ok(s) => s,
        Err(e) => return Outcome::down(io_detail("socket", &e)),
    };
    if let Err(e) = sock.connect(target).await {
        return Outcome::down(io_detail("connect", &e));
    }
    if let Err(e) = sock.send(&packet).await {
        return Outcome::down(io_detail("send", &e));
    }
    let mut buf = vec![0u8; 65_536];
    // Stray datagrams (a late reply to an earlier check) are skipped; the caller's
    // timeout bounds the loop.
    loop {
        match sock.recv(&mut buf).await {
            Ok(n) => {
                if let Some(o) = judge(&buf[..n], id, d) {
                    return o;
                }
            }
            Err(e) => return Outcome::down(io_detail("", &e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use simple_dns::{ResourceRecord, rdata::RData};

    use super::*;
    use crate::{
        check::{
            run,
            tests::{subject, with},
        },
        config::CheckKind,
    };

    /// Answers "ok.lab." with an A record, NXDOMAIN for anything else.
    async fn responder() -> (SocketAddr, tokio::task::JoinHandle<()>) {
        let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = s.local_addr().unwrap();
        let h = tokio::spawn(async move {
            let mut buf = vec![0u8; 1500];
            while let Ok((n, from)) = s.recv_from(&mut buf).await {
                let Ok(q) = Packet::parse(&buf[..n]) else {
                    continue;
                };
                let mut r = Packet::new_reply(q.id());
                let question = q.questions[0].clone();
                let known = question.qname.to_string() == "ok.lab";
                r.questions.push(question.clone());
                if known {
                    r.answers.push(ResourceRecord::new(
                        question.qname.clone(),
                        CLASS::IN,
                        60,
                        RData::A(Ipv4Addr::new(10, 1, 0, 11).into()),
                    ));
                } else {
                    *r.rcode_mut() = RCODE::NameError;
                }
                let _ = s.send_to(&r.build_bytes_vec().unwrap(), from).await;
            }
        });
        (addr, h)
    }

    fn dns(name: &str, qtype: DnsType) -> CheckKind {
        CheckKind::Dns(DnsCheck {
            name: name.into(),
            qtype,
        })
    }

    #[tokio::test]
    async fn answer_nxdomain_and_missing_type() {
        let (addr, h) = responder().await;
        let o = run(&with(dns("ok.lab", DnsType::A)), &subject(addr)).await;
        assert!(o.ok, "{o:?}");
        assert_eq!(o.detail, "1 A record(s) for ok.lab");
        let o = run(&with(dns("gone.lab", DnsType::A)), &subject(addr)).await;
        assert!(!o.ok);
        assert_eq!(o.detail, "NXDOMAIN for gone.lab");
        let o = run(&with(dns("ok.lab", DnsType::Aaaa)), &subject(addr)).await;
        assert!(!o.ok);
        assert_eq!(o.detail, "no AAAA record for ok.lab");
        h.abort();
    }

    #[test]
    fn a_reply_to_another_query_is_not_judged() {
        let d = DnsCheck {
            name: "ok.lab".into(),
            qtype: DnsType::A,
        };
        let q = query(7, "ok.lab", DnsType::A).unwrap();
        assert!(judge(&q, 7, &d).is_none(), "a query is not a reply");
        let r = Packet::new_reply(8).build_bytes_vec().unwrap();
        assert!(judge(&r, 7, &d).is_none(), "another id");
        assert!(judge(b"junk", 7, &d).is_none());
    }
}
