//! How the cost of an answer grows with the zone: times the responder on
//! hits, NXDOMAINs and NODATAs in zones of 1 000 and 100 000 names (build
//! with --release). A miss must cost about what a hit costs, whatever
//! the zone's size: hickory-server's in-memory zone scans every name on a
//! miss instead.
//!
//! cargo run --release -p hostgate-dns --example scale

use std::str::FromStr;
use std::time::Instant;

use hickory_proto::op::{Message, MessageType, OpCode, Query};
use hickory_proto::rr::{Name, RecordType};
use hostgate_dns::catalog::Catalog;
use hostgate_dns::lookup::IndexedZone;
use hostgate_dns::respond::{respond, Client, Config, Counters, Transport};

type Error = Box<dyn std::error::Error>;

const QUERIES: usize = 200_000;

fn main() -> Result<(), Error> {
    for size in [1_000, 100_000] {
        let catalog = catalog(size)?;
        for (kind, name, rtype) in [
            ("hit", "h{}.example.com.", RecordType::A),
            ("nxdomain", "nx{}.example.com.", RecordType::A),
            ("nodata", "h{}.example.com.", RecordType::MX),
        ] {
            let queries = (0..1000)
                .map(|i| query(&name.replace("{}", &(i * 97 % size).to_string()), rtype))
                .collect::<Result<Vec<_>, _>>()?;
            let ns = time(&catalog, &queries);
            println!("{size:>7} names  {kind:<9} {ns:>6.0} ns/query");
        }
    }
    Ok(())
}

fn catalog(size: usize) -> Result<Catalog, Error> {
    let mut text = String::from("$TTL 300\n@ SOA ns1 h 1 1 1 1 1\n NS ns1\nns1 A 198.51.100.1\n");
    for i in 0..size {
        text.push_str(&format!("h{i} A 198.18.{}.{}\n", (i >> 8) & 0xff, i & 0xff));
    }
    let zone =
        hostgate_dns::master::parse(&text, "scale", &Name::from_str("example.com.")?).map_err(|e| format!("{e:?}"))?;
    Ok([IndexedZone::new(&zone)].into_iter().collect())
}

fn query(name: &str, rtype: RecordType) -> Result<Vec<u8>, Error> {
    let mut m = Message::new(7, MessageType::Query, OpCode::Query);
    m.add_query(Query::query(Name::from_str(name)?, rtype));
    Ok(m.to_vec()?)
}

fn time(catalog: &Catalog, queries: &[Vec<u8>]) -> f64 {
    let client = Client { addr: [198, 51, 100, 7].into(), transport: Transport::Udp, now_ms: 0 };
    let mut counters = Counters::default();
    let start = Instant::now();
    for q in queries.iter().cycle().take(QUERIES) {
        std::hint::black_box(respond(catalog, &Config::default(), None, &mut counters, q, &client));
    }
    start.elapsed().as_nanos() as f64 / QUERIES as f64
}
