//! A small authoritative DNS server for the tests (UDP: A, AAAA, SRV and PTR records), built
//! on hickory-proto: answers from a zone the test sets, or fails on purpose (SERVFAIL, or no
//! answer at all).

use super::poll::wait_for;
use hickory_resolver::proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_resolver::proto::rr::rdata::{A, AAAA, PTR, SRV};
use hickory_resolver::proto::rr::{Name, RData, Record, RecordType};
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

#[derive(Clone, Copy, PartialEq)]
pub enum DnsMode {
    Answer,
    ServFail,
    Silent,
}

/// Answers by (lower-case absolute name, type).
type Zone = HashMap<(String, RecordType), Vec<RData>>;

pub struct FakeDns {
    pub addr: SocketAddr,
    records: Arc<Mutex<Zone>>,
    mode: Arc<Mutex<DnsMode>>,
    /// Queries received while not in `Answer` mode.
    failed: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl FakeDns {
    pub fn start() -> FakeDns {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(20)))
            .unwrap();
        let d = FakeDns {
            addr: sock.local_addr().unwrap(),
            records: Arc::default(),
            mode: Arc::new(Mutex::new(DnsMode::Answer)),
            failed: Arc::default(),
            stop: Arc::default(),
        };
        let (records, mode, failed, stop) = (
            d.records.clone(),
            d.mode.clone(),
            d.failed.clone(),
            d.stop.clone(),
        );
        thread::spawn(move || {
            let mut buf = [0u8; 1500];
            while !stop.load(Ordering::Acquire) {
                let Ok((n, peer)) = sock.recv_from(&mut buf) else {
                    continue;
                };
                let Ok(q) = Message::from_vec(&buf[..n]) else {
                    continue;
                };
                let m = *mode.lock().unwrap();
                if m != DnsMode::Answer {
                    failed.fetch_add(1, Ordering::SeqCst);
                }
                let mut resp = Message::new();
                resp.set_id(q.id())
                    .set_message_type(MessageType::Response)
                    .set_op_code(OpCode::Query)
                    .set_authoritative(true)
                    .set_recursion_desired(q.recursion_desired())
                    .set_recursion_available(true);
                match m {
                    DnsMode::Silent => continue,
                    DnsMode::ServFail => {
                        resp.set_response_code(ResponseCode::ServFail);
                    }
                    DnsMode::Answer => {
                        let recs = records.lock().unwrap();
                        for query in q.queries() {
                            let key = (query.name().to_ascii().to_lowercase(), query.query_type());
                            for rdata in recs.get(&key).into_iter().flatten() {
                                resp.add_answer(Record::from_rdata(
                                    query.name().clone(),
                                    0,
                                    rdata.clone(),
                                ));
                            }
                        }
                    }
                }
                for query in q.queries() {
                    resp.add_query(query.clone());
                }
                if let Ok(bytes) = resp.to_vec() {
                    let _ = sock.send_to(&bytes, peer);
                }
            }
        });
        d
    }

    pub fn set_a(&self, name: &str, ips: &[Ipv4Addr]) {
        self.records.lock().unwrap().insert(
            (name.to_string(), RecordType::A),
            ips.iter().map(|ip| RData::A(A(*ip))).collect(),
        );
    }

    /// (priority, weight, port, target)
    pub fn set_srv(&self, name: &str, recs: &[(u16, u16, u16, &str)]) {
        self.records.lock().unwrap().insert(
            (name.to_string(), RecordType::SRV),
            recs.iter()
                .map(|(p, w, port, t)| {
                    RData::SRV(SRV::new(*p, *w, *port, Name::from_ascii(t).unwrap()))
                })
                .collect(),
        );
    }

    pub fn set_mode(&self, m: DnsMode) {
        *self.mode.lock().unwrap() = m;
        self.failed.store(0, Ordering::SeqCst);
    }

    /// Waits until `n` queries went unanswered (or SERVFAILed) since the mode changed.
    pub fn wait_failed_queries(&self, n: usize) {
        wait_for("failed DNS lookups", Duration::from_secs(10), || {
            (self.failed.load(Ordering::SeqCst) >= n).then_some(())
        });
    }
}

impl Drop for FakeDns {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
    }
}

impl FakeDns {
    /// A and AAAA records of `name` (absolute, lower-case, e.g. `crawl-1.googlebot.com.`).
    pub fn set_ips(&self, name: &str, ips: &[IpAddr]) {
        let mut z = self.records.lock().unwrap();
        let v4 = ips.iter().filter_map(|ip| match ip {
            IpAddr::V4(a) => Some(RData::A(A(*a))),
            IpAddr::V6(_) => None,
        });
        z.insert((name.to_string(), RecordType::A), v4.collect());
        let v6 = ips.iter().filter_map(|ip| match ip {
            IpAddr::V6(a) => Some(RData::AAAA(AAAA(*a))),
            IpAddr::V4(_) => None,
        });
        z.insert((name.to_string(), RecordType::AAAA), v6.collect());
    }

    /// The PTR records of `ip` (its reverse name under in-addr.arpa or ip6.arpa).
    pub fn set_ptr(&self, ip: IpAddr, names: &[&str]) {
        let reverse = Name::from(ip).to_ascii().to_lowercase();
        self.records.lock().unwrap().insert(
            (reverse, RecordType::PTR),
            names
                .iter()
                .map(|n| RData::PTR(PTR(Name::from_ascii(n).unwrap())))
                .collect(),
        );
    }
}
