//! The HTTP proxy's response cache end to end: curl in the client
//! namespace, an origin in a container namespace that counts what reaches
//! it, and a vhost with `--cache`. Checked against RFC 9110/9111: what a
//! shared cache may store, conditional and range requests answered from
//! the cache, Vary, revalidation of a stale response, purge and the memory
//! bound.

mod common;

use std::{
    collections::BTreeMap,
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use common::{err, ok, TestNode};
use hostgate_testbed::{privileged, topology::NODE_V4, Netns};

const BODY: &str =
    "0123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789";
const LAST_MODIFIED: &str = "Wed, 21 Oct 2015 07:28:00 GMT";
const BIG: usize = 200 * 1024;

/// What reached the origin: requests per path, and the conditional
/// headers it was sent.
#[derive(Default)]
struct Seen {
    requests: BTreeMap<String, u32>,
    conditionals: Vec<String>,
}

/// An HTTP/1.1 origin in a namespace, one request per connection; stops on drop.
struct Origin {
    seen: Arc<Mutex<Seen>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Origin {
    fn start(netns_path: String, addr: SocketAddr) -> Origin {
        let (seen, stop) = (Arc::new(Mutex::new(Seen::default())), Arc::new(AtomicBool::new(false)));
        let (s, st) = (seen.clone(), stop.clone());
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            hostgate_testbed::sender::enter_netns(&netns_path).expect("enter the container namespace");
            let listener = TcpListener::bind(addr).expect("bind the origin");
            listener.set_nonblocking(true).expect("nonblocking");
            ready_tx.send(()).expect("ready");
            while !st.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((conn, _)) => answer(conn, &s),
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        ready_rx.recv_timeout(Duration::from_secs(5)).expect("the origin listens");
        Origin { seen, stop, thread: Some(thread) }
    }

    fn requests(&self, path: &str) -> u32 {
        self.seen.lock().expect("seen").requests.get(path).copied().unwrap_or(0)
    }
}

impl Drop for Origin {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn answer(mut conn: TcpStream, seen: &Mutex<Seen>) {
    let _ = conn.set_nonblocking(false);
    let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 64 * 1024 {
        match conn.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let path = head.split_whitespace().nth(1).unwrap_or("/").to_string();
    let header = |name: &str| {
        head.lines()
            .filter_map(|l| l.split_once(':'))
            .find(|(n, _)| n.trim().eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim().to_string())
    };
    let inm = header("if-none-match");
    {
        let mut s = seen.lock().expect("seen");
        *s.requests.entry(path.clone()).or_default() += 1;
        if let Some(v) = &inm {
            s.conditionals.push(format!("{path} if-none-match {v}"));
        }
    }
    let (status, headers, body): (u16, Vec<(&str, String)>, String) = match path.as_str() {
        p if p.starts_with("/fresh") => {
            let validators = vec![
                ("cache-control", "max-age=60".to_string()),
                ("etag", "\"v1\"".to_string()),
                ("last-modified", LAST_MODIFIED.to_string()),
            ];
            match inm.as_deref() {
                Some("\"v1\"") => (304, validators, String::new()),
                _ => (200, validators, BODY.to_string()),
            }
        }
        "/short" => {
            let validators = vec![("cache-control", "max-age=1".to_string()), ("etag", "\"s1\"".to_string())];
            match inm.as_deref() {
                Some("\"s1\"") => (304, validators, String::new()),
                _ => (200, validators, "short".to_string()),
            }
        }
        "/nostore" => (200, vec![("cache-control", "no-store".to_string())], "nostore".into()),
        "/private" => (200, vec![("cache-control", "private, max-age=60".to_string())], "private".into()),
        "/cookie" => (
            200,
            vec![("cache-control", "max-age=60".to_string()), ("set-cookie", "session=1".to_string())],
            "cookie".into(),
        ),
        "/plain" => (200, vec![], "plain".into()),
        "/vary" => {
            let lang = header("accept-language").unwrap_or_default();
            (
                200,
                vec![("cache-control", "max-age=60".to_string()), ("vary", "Accept-Language".to_string())],
                format!("lang={lang}"),
            )
        }
        p if p.starts_with("/big/") => (200, vec![("cache-control", "max-age=60".to_string())], "x".repeat(BIG)),
        _ => (404, vec![], "no such path".into()),
    };
    let mut reply = format!("HTTP/1.1 {status} X\r\nconnection: close\r\n");
    for (n, v) in headers {
        reply.push_str(&format!("{n}: {v}\r\n"));
    }
    if status != 304 {
        reply.push_str(&format!("content-length: {}\r\n", body.len()));
    }
    reply.push_str("\r\n");
    reply.push_str(&body);
    let _ = conn.write_all(reply.as_bytes());
}

/// A response as curl saw it.
struct Seen1 {
    code: u16,
    headers: String,
    body: String,
}

impl Seen1 {
    fn header(&self, name: &str) -> Option<String> {
        self.headers
            .lines()
            .filter_map(|l| l.split_once(':'))
            .find(|(n, _)| n.trim().eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim().to_string())
    }

    fn cache(&self) -> String {
        self.header("x-cache-status").unwrap_or_default()
    }
}

fn get(client: &Netns, host: &str, path: &str, extra: &[&str]) -> Seen1 {
    let out = client
        .command("curl")
        .args(["-sS", "-i", "--max-time", "5", "-H"])
        .arg(format!("Host: {host}"))
        .args(extra)
        .arg(format!("http://{NODE_V4}{path}"))
        .output()
        .expect("run curl (apt-get install curl)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (headers, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let code = headers.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    Seen1 { code, headers: headers.to_string(), body: body.to_string() }
}

#[test]
fn the_cache_answers_as_rfc_9111_says() {
    if !privileged("the_cache_answers_as_rfc_9111_says") {
        return;
    }
    let config = format!("\n[http]\nlisten = [\"{NODE_V4}:80\"]\ncache_mib = 1\n");
    let mut node = TestNode::with_config("hcache", 1, &config);
    node.start_daemon();
    let c1 = &node.topo.containers[0];
    let backend = format!("{}:8080", c1.v4);
    let origin = Origin::start(c1.ns.path(), backend.parse().expect("addr"));
    let client = &node.topo.client;
    ok(node.cli(&["customer", "add", "acme"]));
    let shop = "shop.example.test";
    ok(node.cli(&["http", "vhost", "add", shop, "--customer", "acme", "--backend", &backend, "--cache"]));
    ok(node.cli(&["http", "vhost", "add", "plain.example.test", "--customer", "acme", "--backend", &backend]));
    let ready = || {
        get(client, shop, "/ready", &[]).body == "no such path"
            && get(client, "plain.example.test", "/ready", &[]).body == "no such path"
    };
    assert!(common::eventually(Duration::from_secs(3), ready), "the vhosts are not served");

    // Stored once, then answered from memory.
    let first = get(client, shop, "/fresh", &[]);
    assert_eq!((first.code, first.body.as_str(), first.cache().as_str()), (200, BODY, "miss"), "{}", first.headers);
    let again = get(client, shop, "/fresh", &[]);
    assert_eq!((again.code, again.body.as_str(), again.cache().as_str()), (200, BODY, "hit"), "{}", again.headers);
    // The same key whatever the case of the host or an explicit default port.
    assert_eq!(get(client, "SHOP.example.test:80", "/fresh", &[]).cache(), "hit");
    assert_eq!(origin.requests("/fresh"), 1);

    // Conditional requests answered from the stored validators (RFC 9110 §13).
    let etag = get(client, shop, "/fresh", &["-H", "If-None-Match: \"v1\""]);
    assert_eq!((etag.code, etag.body.as_str()), (304, ""), "{}", etag.headers);
    let ims = get(client, shop, "/fresh", &["-H", &format!("If-Modified-Since: {LAST_MODIFIED}")]);
    assert_eq!(ims.code, 304, "{}", ims.headers);
    let changed = get(client, shop, "/fresh", &["-H", "If-None-Match: \"v0\""]);
    assert_eq!((changed.code, changed.body.as_str()), (200, BODY));

    // Ranges from the stored body (RFC 9110 §14), If-Range by validator.
    let range = get(client, shop, "/fresh", &["-H", "Range: bytes=10-19"]);
    assert_eq!((range.code, range.body.as_str()), (206, "0123456789"), "{}", range.headers);
    assert_eq!(range.header("content-range").as_deref(), Some("bytes 10-19/100"));
    let if_range = get(client, shop, "/fresh", &["-H", "Range: bytes=0-4", "-H", "If-Range: \"v1\""]);
    assert_eq!((if_range.code, if_range.body.as_str()), (206, "01234"));
    let stale_range = get(client, shop, "/fresh", &["-H", "Range: bytes=0-4", "-H", "If-Range: \"v0\""]);
    assert_eq!((stale_range.code, stale_range.body.len()), (200, BODY.len()), "{}", stale_range.headers);
    assert_eq!(origin.requests("/fresh"), 1, "every answer above came from the cache");

    // What a shared cache must not store (RFC 9111 §3, §5.2.2.7) or may
    // not without explicit freshness: each request reaches the origin.
    for path in ["/nostore", "/private", "/cookie", "/plain"] {
        for _ in 0..2 {
            let a = get(client, shop, path, &[]);
            assert_eq!(a.code, 200, "{path}");
            assert_ne!(a.cache(), "hit", "{path}: {}", a.headers);
        }
        assert_eq!(origin.requests(path), 2, "{path} was stored");
    }

    // Vary: one stored response per Accept-Language (RFC 9111 §4.1).
    for (lang, cache) in [("en", "miss"), ("de", "miss"), ("en", "hit"), ("de", "hit")] {
        let a = get(client, shop, "/vary", &["-H", &format!("Accept-Language: {lang}")]);
        assert_eq!((a.body.as_str(), a.cache().as_str()), (format!("lang={lang}").as_str(), cache));
    }
    assert_eq!(origin.requests("/vary"), 2);

    // A stale response is revalidated with its validator; a 304 refreshes it.
    assert_eq!(get(client, shop, "/short", &[]).cache(), "miss");
    std::thread::sleep(Duration::from_millis(1600));
    let revalidated = get(client, shop, "/short", &[]);
    assert_eq!((revalidated.body.as_str(), revalidated.cache().as_str()), ("short", "revalidated"));
    assert!(
        origin.seen.lock().expect("seen").conditionals.contains(&"/short if-none-match \"s1\"".to_string()),
        "the origin was not asked conditionally"
    );
    assert_eq!(get(client, shop, "/short", &[]).cache(), "hit");

    // A vhost without --cache stores nothing and says nothing.
    for _ in 0..2 {
        let a = get(client, "plain.example.test", "/fresh-plain", &[]);
        assert_eq!((a.code, a.header("x-cache-status")), (200, None));
    }
    assert_eq!(origin.requests("/fresh-plain"), 2);

    // Purge by path prefix, then the whole vhost.
    let purged = ok(node.cli(&["http", "cache", "purge", shop, "--path", "/fresh"]));
    assert!(purged.starts_with("1 cached response(s)"), "{purged}");
    assert_eq!(get(client, shop, "/fresh", &[]).cache(), "miss");
    assert_eq!(get(client, shop, "/vary", &["-H", "Accept-Language: en"]).cache(), "hit", "outside the prefix");
    assert!(ok(node.cli(&["http", "cache", "purge", shop])).starts_with("4 cached"), "/fresh, /vary x2, /short");
    assert!(err(node.cli(&["http", "cache", "purge", "nosuch.example.test"])).contains("does not exist"));
    assert!(err(node.cli(&["http", "cache", "purge", shop, "--path", "fresh"])).contains("must start with /"));

    // The memory bound (1 MiB): the least recently used response goes.
    for i in 1..=8 {
        let a = get(client, shop, &format!("/big/{i}"), &[]);
        assert_eq!((a.code, a.body.len()), (200, BIG));
    }
    assert_eq!(get(client, shop, "/big/8", &[]).cache(), "hit");
    assert_eq!(get(client, shop, "/big/1", &[]).cache(), "miss", "evicted under the 1 MiB bound");
    assert_eq!(origin.requests("/big/1"), 2);
}
