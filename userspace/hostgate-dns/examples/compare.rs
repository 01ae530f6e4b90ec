//! Differential check against another authoritative server (NSD, Knot)
//! serving the same zone file: each query on stdin (`name type`, `+edns`
//! to add an OPT) is answered by our responder and sent over UDP to the
//! server, and the two answers are printed side by side where they
//! differ (rcode, AA, TC, and each section as a sorted set of records).
//!
//! cargo run -p hostgate-dns --example compare -- ZONEFILE ORIGIN ADDR:PORT < queries
//!
//! Not a test: it needs the other server running. How NSD was run for it,
//! without installing the package (which would start a server in the
//! root namespace):
//!
//! ```text
//! apt-get download nsd libprotobuf-c1 libfstrm0; for d in *.deb; do dpkg -x $d root; done
//! # nsd.conf: server: ip-address 127.0.0.1@5353, username "", chroot "",
//! #   database "", rrl-ratelimit 0; zone: name example.com, zonefile ...
//! ip netns add hg-dnsdiff-1 && ip -n hg-dnsdiff-1 link set lo up
//! LD_LIBRARY_PATH=root/usr/lib/x86_64-linux-gnu nsenter --net=/run/netns/hg-dnsdiff-1 \
//!     root/usr/sbin/nsd -d -c nsd.conf &
//! nsenter --net=/run/netns/hg-dnsdiff-1 target/debug/examples/compare \
//!     example.com.zone example.com. 127.0.0.1:5353 < queries
//! ```

use std::io::BufRead;
use std::net::UdpSocket;
use std::str::FromStr;
use std::time::Duration;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query};
use hickory_proto::rr::{Name, Record, RecordType};
use hostgate_dns::catalog::Catalog;
use hostgate_dns::lookup::IndexedZone;
use hostgate_dns::master::rdata_text;
use hostgate_dns::respond::{respond, Client, Config, Counters, Transport};

type Error = Box<dyn std::error::Error>;

fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().collect();
    let [_, file, origin, server] = &args[..] else {
        return Err("usage: compare ZONEFILE ORIGIN ADDR:PORT < queries".into());
    };
    let origin = Name::from_str(origin)?;
    let text = std::fs::read_to_string(file)?;
    let zone = hostgate_dns::master::parse(&text, file, &origin).map_err(|e| format!("{e:?}"))?;
    let catalog: Catalog = [IndexedZone::new(&zone)].into_iter().collect();
    let socket = UdpSocket::bind("0.0.0.0:0")?;
    socket.set_read_timeout(Some(Duration::from_secs(2)))?;
    socket.connect(server)?;
    let (mut same, mut differ) = (0, 0);
    for line in std::io::stdin().lock().lines() {
        let line = line?;
        let words: Vec<&str> = line.split_whitespace().collect();
        let [name, rtype, rest @ ..] = &words[..] else { continue };
        let query = query(name, rtype, rest.contains(&"+edns"))?;
        let tcp = rest.contains(&"+tcp");
        let ours = ask_ours(&catalog, &query, tcp)?;
        let theirs = if tcp { ask_theirs_tcp(server, &query)? } else { ask_theirs(&socket, &query)? };
        let (a, b) = (summary(&ours), summary(&theirs));
        if a == b {
            same += 1;
            println!("same   {line}");
        } else {
            differ += 1;
            println!("DIFFER {line}\n  ours:   {}\n  theirs: {}", a.join("\n          "), b.join("\n          "));
        }
    }
    println!("{same} same, {differ} differ");
    Ok(())
}

fn query(name: &str, rtype: &str, edns: bool) -> Result<Vec<u8>, Error> {
    let mut m = Message::new(0x4242, MessageType::Query, OpCode::Query);
    m.add_query(Query::query(Name::from_str(name)?, RecordType::from_str(rtype)?));
    if edns {
        let mut e = Edns::new();
        e.set_max_payload(1232);
        m.set_edns(e);
    }
    Ok(m.to_vec()?)
}

fn ask_ours(catalog: &Catalog, query: &[u8], tcp: bool) -> Result<Message, Error> {
    let transport = if tcp { Transport::Tcp } else { Transport::Udp };
    let client = Client { addr: "198.51.100.7".parse()?, transport, now_ms: 0 };
    let reply = respond(catalog, &Config::default(), None, &mut Counters::default(), query, &client);
    Ok(Message::from_vec(&reply.ok_or("we dropped it")?)?)
}

fn ask_theirs(socket: &UdpSocket, query: &[u8]) -> Result<Message, Error> {
    socket.send(query)?;
    let mut buf = vec![0u8; 65535];
    let n = socket.recv(&mut buf)?;
    Ok(Message::from_vec(&buf[..n])?)
}

fn ask_theirs_tcp(server: &str, query: &[u8]) -> Result<Message, Error> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(server)?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    let len = u16::try_from(query.len())?;
    stream.write_all(&[&len.to_be_bytes()[..], query].concat())?;
    let mut len = [0u8; 2];
    stream.read_exact(&mut len)?;
    let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
    stream.read_exact(&mut buf)?;
    Ok(Message::from_vec(&buf)?)
}

fn summary(m: &Message) -> Vec<String> {
    let section = |name: &str, records: &[Record]| {
        let mut lines: Vec<String> = records
            .iter()
            .map(|r| format!("{} {} {} {}", r.name.to_lowercase(), r.ttl, r.record_type(), rdata_text(&r.data)))
            .collect();
        lines.sort();
        format!("{name}: [{}]", lines.join(", "))
    };
    vec![
        format!(
            "rcode {:?} aa {} tc {} opt {}",
            m.metadata.response_code,
            m.metadata.authoritative,
            m.metadata.truncation,
            m.edns.is_some()
        ),
        section("answer", &m.answers),
        section("authority", &m.authorities),
        section("additional", &m.additionals),
    ]
}
