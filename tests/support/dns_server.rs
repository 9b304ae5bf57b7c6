//! An in-process authoritative DNS server for integration tests: UDP and TCP on one
//! random port of 127.0.0.1, answering from records the test sets (and may change at run
//! time): MX (including null MX), A, AAAA, TXT, CNAME. Unknown names get NXDOMAIN, known
//! names without the asked type get NOERROR with no answer; negative answers carry an SOA
//! with minimum 0 and every record has TTL 0, so resolvers do not cache across changes.
//!
//! Used as `mod support;` from tests: only std, tokio and hickory-server (its `proto`).
#![allow(dead_code)]

use std::{
    collections::{HashMap, HashSet},
    net::{Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicUsize, Ordering},
    },
};

use hickory_server::proto::{
    op::{Edns, Message, MessageType, OpCode, ResponseCode},
    rr::{
        Name, RData, Record, RecordType,
        rdata::{A, AAAA, CNAME, MX, SOA, TXT},
    },
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream, UdpSocket},
    task::JoinHandle,
};

#[derive(Default, Clone)]
struct Entry {
    mx: Vec<(u16, String)>,
    a: Vec<Ipv4Addr>,
    aaaa: Vec<Ipv6Addr>,
    /// Each record is a list of character-strings.
    txt: Vec<Vec<Vec<u8>>>,
    cname: Option<String>,
}

#[derive(Default)]
struct Zone {
    names: HashMap<String, Entry>,
    servfail: HashSet<String>,
}

struct Shared {
    zone: Mutex<Zone>,
    queries: AtomicUsize,
}

impl Shared {
    fn zone(&self) -> MutexGuard<'_, Zone> {
        self.zone.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A running test DNS server; stops when dropped.
pub struct TestDnsServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for TestDnsServer {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Lower case, no trailing dot.
fn key(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

fn fqdn(name: &str) -> Name {
    let name = key(name);
    if name.is_empty() {
        Name::root()
    } else {
        Name::from_ascii(format!("{name}.")).expect("valid test DNS name")
    }
}

impl TestDnsServer {
    /// Binds UDP and TCP on the same random port of 127.0.0.1.
    pub async fn start() -> TestDnsServer {
        let (udp, tcp) = bind_pair().await;
        let addr = udp.local_addr().expect("local addr");
        let shared = Arc::new(Shared {
            zone: Mutex::new(Zone::default()),
            queries: AtomicUsize::new(0),
        });
        let udp_task = tokio::spawn(serve_udp(udp, shared.clone()));
        let tcp_task = tokio::spawn(serve_tcp(tcp, shared.clone()));
        TestDnsServer {
            addr,
            shared,
            tasks: vec![udp_task, tcp_task],
        }
    }

    /// The server's address, for `dns.nameservers`.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Queries answered so far.
    pub fn query_count(&self) -> usize {
        self.shared.queries.load(Ordering::Relaxed)
    }

    fn edit(&self, name: &str, f: impl FnOnce(&mut Entry)) {
        let mut zone = self.shared.zone();
        f(zone.names.entry(key(name)).or_default());
    }

    /// Makes `name` exist (NOERROR) even without records.
    pub fn add_name(&self, name: &str) {
        self.edit(name, |_| {});
    }

    /// Replaces the MX records of `domain` with `(preference, exchange)` pairs.
    pub fn set_mx(&self, domain: &str, records: &[(u16, &str)]) {
        let records = records.iter().map(|(p, h)| (*p, key(h))).collect();
        self.edit(domain, |e| e.mx = records);
    }

    /// Publishes the null MX `0 .` (RFC 7505) for `domain`.
    pub fn set_null_mx(&self, domain: &str) {
        self.edit(domain, |e| e.mx = vec![(0, String::new())]);
    }

    /// Replaces the A records of `name`.
    pub fn set_a(&self, name: &str, addrs: &[Ipv4Addr]) {
        let addrs = addrs.to_vec();
        self.edit(name, |e| e.a = addrs);
    }

    /// Replaces the AAAA records of `name`.
    pub fn set_aaaa(&self, name: &str, addrs: &[Ipv6Addr]) {
        let addrs = addrs.to_vec();
        self.edit(name, |e| e.aaaa = addrs);
    }

    /// Replaces the TXT records of `name`: one record per value, each split into
    /// 255-byte character-strings.
    pub fn set_txt(&self, name: &str, values: &[&str]) {
        let records = values
            .iter()
            .map(|v| {
                let bytes = v.as_bytes();
                if bytes.is_empty() {
                    vec![Vec::new()]
                } else {
                    bytes.chunks(255).map(<[u8]>::to_vec).collect()
                }
            })
            .collect();
        self.edit(name, |e| e.txt = records);
    }

    /// Replaces the TXT records of `name`, giving each record's character-strings
    /// explicitly (each must be at most 255 bytes).
    pub fn set_txt_strings(&self, name: &str, records: &[&[&str]]) {
        let records = records
            .iter()
            .map(|strings| {
                strings
                    .iter()
                    .map(|s| {
                        assert!(
                            s.len() <= 255,
                            "a TXT character-string is at most 255 bytes"
                        );
                        s.as_bytes().to_vec()
                    })
                    .collect()
            })
            .collect();
        self.edit(name, |e| e.txt = records);
    }

    /// Makes `name` a CNAME for `target`.
    pub fn set_cname(&self, name: &str, target: &str) {
        let target = key(target);
        self.edit(name, |e| e.cname = Some(target));
    }

    /// Answers SERVFAIL for `name` (all types) while `on`.
    pub fn set_servfail(&self, name: &str, on: bool) {
        let mut zone = self.shared.zone();
        if on {
            zone.servfail.insert(key(name));
        } else {
            zone.servfail.remove(&key(name));
        }
    }

    /// Removes `name` and all its records (it becomes NXDOMAIN unless a child exists).
    pub fn remove(&self, name: &str) {
        self.shared.zone().names.remove(&key(name));
    }

    /// Removes everything.
    pub fn clear(&self) {
        let mut zone = self.shared.zone();
        zone.names.clear();
        zone.servfail.clear();
    }
}

async fn bind_pair() -> (UdpSocket, TcpListener) {
    for _ in 0..50 {
        let udp = UdpSocket::bind("127.0.0.1:0").await.expect("bind UDP");
        let addr = udp.local_addr().expect("local addr");
        if let Ok(tcp) = TcpListener::bind(addr).await {
            return (udp, tcp);
        }
    }
    panic!("no free port for both UDP and TCP");
}

async fn serve_udp(socket: UdpSocket, shared: Arc<Shared>) {
    let mut buf = vec![0u8; 65535];
    loop {
        let Ok((n, peer)) = socket.recv_from(&mut buf).await else {
            continue;
        };
        let Some((response, max)) = respond(&buf[..n], &shared) else {
            continue;
        };
        let bytes = match response.to_vec() {
            Ok(bytes) if bytes.len() <= max => bytes,
            _ => match response.truncate().to_vec() {
                Ok(bytes) => bytes,
                Err(_) => continue,
            },
        };
        let _ = socket.send_to(&bytes, peer).await;
    }
}

async fn serve_tcp(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(serve_tcp_conn(stream, shared.clone()));
    }
}

async fn serve_tcp_conn(mut stream: TcpStream, shared: Arc<Shared>) {
    loop {
        let mut len = [0u8; 2];
        if stream.read_exact(&mut len).await.is_err() {
            return;
        }
        let mut request = vec![0u8; usize::from(u16::from_be_bytes(len))];
        if stream.read_exact(&mut request).await.is_err() {
            return;
        }
        let Some((response, _)) = respond(&request, &shared) else {
            return;
        };
        let Ok(bytes) = response.to_vec() else {
            return;
        };
        let Ok(len) = u16::try_from(bytes.len()) else {
            return;
        };
        if stream.write_all(&len.to_be_bytes()).await.is_err()
            || stream.write_all(&bytes).await.is_err()
        {
            return;
        }
    }
}

/// Builds the response and the largest size the client accepts over UDP.
fn respond(request: &[u8], shared: &Shared) -> Option<(Message, usize)> {
    let request = Message::from_vec(request).ok()?;
    if request.metadata.message_type != MessageType::Query {
        return None;
    }
    shared.queries.fetch_add(1, Ordering::Relaxed);
    let mut response = Message::response(request.metadata.id, request.metadata.op_code);
    response.metadata.recursion_desired = request.metadata.recursion_desired;
    response.metadata.recursion_available = true;
    response.metadata.authoritative = true;
    response.queries = request.queries.clone();
    if request.edns.is_some() {
        let mut edns = Edns::new();
        edns.set_max_payload(4096);
        response.set_edns(edns);
    }
    let max = usize::from(request.max_payload());

    let Some(query) = request.queries.first() else {
        response.metadata.response_code = ResponseCode::FormErr;
        return Some((response, max));
    };
    if request.metadata.op_code != OpCode::Query {
        response.metadata.response_code = ResponseCode::NotImp;
        return Some((response, max));
    }
    let zone = shared.zone();
    let (code, answers) = lookup(&zone, &query.name.to_ascii(), query.query_type);
    drop(zone);
    response.metadata.response_code = code;
    if answers.is_empty() && code != ResponseCode::ServFail {
        response.authorities.push(soa_for(&query.name.to_ascii()));
    }
    response.answers = answers;
    Some((response, max))
}

fn lookup(zone: &Zone, qname: &str, qtype: RecordType) -> (ResponseCode, Vec<Record>) {
    let mut name = key(qname);
    let mut answers = Vec::new();
    for _ in 0..8 {
        if zone.servfail.contains(&name) {
            return (ResponseCode::ServFail, Vec::new());
        }
        let Some(entry) = zone.names.get(&name) else {
            let suffix = format!(".{name}");
            let exists = zone.names.keys().any(|k| k.ends_with(&suffix));
            let code = if exists || !answers.is_empty() {
                ResponseCode::NoError
            } else {
                ResponseCode::NXDomain
            };
            return (code, answers);
        };
        let owner = fqdn(&name);
        if let Some(target) = &entry.cname
            && qtype != RecordType::CNAME
        {
            answers.push(Record::from_rdata(
                owner,
                0,
                RData::CNAME(CNAME(fqdn(target))),
            ));
            name = target.clone();
            continue;
        }
        let record = |data: RData| Record::from_rdata(owner.clone(), 0, data);
        match qtype {
            RecordType::MX => answers.extend(
                entry
                    .mx
                    .iter()
                    .map(|(p, h)| record(RData::MX(MX::new(*p, fqdn(h))))),
            ),
            RecordType::A => answers.extend(entry.a.iter().map(|ip| record(RData::A(A(*ip))))),
            RecordType::AAAA => {
                answers.extend(entry.aaaa.iter().map(|ip| record(RData::AAAA(AAAA(*ip)))))
            }
            RecordType::TXT => answers.extend(entry.txt.iter().map(|strings| {
                let parts: Vec<&[u8]> = strings.iter().map(Vec::as_slice).collect();
                record(RData::TXT(TXT::from_bytes(parts)))
            })),
            RecordType::CNAME => {
                if let Some(target) = &entry.cname {
                    answers.push(record(RData::CNAME(CNAME(fqdn(target)))));
                }
            }
            _ => {}
        }
        return (ResponseCode::NoError, answers);
    }
    (ResponseCode::ServFail, Vec::new())
}

/// An SOA for negative answers: owner is the name's last two labels, minimum 0 so the
/// negative answer is not cached.
fn soa_for(qname: &str) -> Record {
    let name = key(qname);
    let labels: Vec<&str> = name.split('.').collect();
    let apex = labels[labels.len().saturating_sub(2)..].join(".");
    let soa = SOA::new(
        fqdn(&format!("ns.{apex}")),
        fqdn(&format!("hostmaster.{apex}")),
        1,
        3600,
        600,
        86400,
        0,
    );
    Record::from_rdata(fqdn(&apex), 0, RData::SOA(soa))
}
