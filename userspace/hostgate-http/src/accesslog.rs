//! Access log lines, one per request, in NGINX's `combined` format or as
//! one JSON object per line. Pure formatting; the daemon writes them to a
//! file per customer.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// How a customer's requests are logged.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// `$remote_addr - - [$time_local] "$request" $status $body_bytes_sent
    /// "$http_referer" "$http_user_agent"` (NGINX/Apache combined).
    #[default]
    Combined,
    Json,
    Off,
}

impl std::str::FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "combined" => Ok(LogFormat::Combined),
            "json" => Ok(LogFormat::Json),
            "off" => Ok(LogFormat::Off),
            other => Err(format!("{other:?} is not combined, json or off")),
        }
    }
}

impl std::fmt::Display for LogFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            LogFormat::Combined => "combined",
            LogFormat::Json => "json",
            LogFormat::Off => "off",
        })
    }
}

/// One finished request.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Entry {
    /// Seconds and milliseconds since the Unix epoch (UTC).
    #[serde(skip)]
    pub unix_ms: u64,
    pub client: Option<IpAddr>,
    pub method: String,
    /// Path and query as requested.
    pub uri: String,
    /// `HTTP/1.1`, `HTTP/2.0`.
    pub protocol: String,
    pub host: String,
    pub vhost: String,
    /// `IP:PORT`, or `-` when the proxy answered itself.
    pub backend: String,
    /// 0 when no answer was written (the client went away first).
    pub status: u16,
    /// Response body bytes sent to the client.
    pub bytes_sent: u64,
    /// Request body bytes received.
    pub bytes_received: u64,
    pub duration_us: u64,
    pub referer: String,
    pub user_agent: String,
    pub tls: bool,
    /// Why the request failed, if it did (pingora's error kind).
    pub error: String,
}

const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];

/// (year, month 1-12, day) of a day count since 1970-01-01 (Howard
/// Hinnant's civil_from_days; exact for the whole u64 range we meet).
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// `10/Oct/2000:13:55:36 +0000` (NGINX's `$time_local`, in UTC).
pub fn clf_time(unix_ms: u64) -> String {
    let secs = (unix_ms / 1000) as i64;
    let (y, m, d) = civil(secs.div_euclid(86_400));
    let s = secs.rem_euclid(86_400);
    format!("{d:02}/{}/{y}:{:02}:{:02}:{:02} +0000", MONTHS[(m - 1) as usize], s / 3600, s / 60 % 60, s % 60)
}

/// `2000-10-10T13:55:36.123Z`.
pub fn iso_time(unix_ms: u64) -> String {
    let secs = (unix_ms / 1000) as i64;
    let (y, m, d) = civil(secs.div_euclid(86_400));
    let s = secs.rem_euclid(86_400);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z", s / 3600, s / 60 % 60, s % 60, unix_ms % 1000)
}

/// NGINX's escaping of logged strings: `"`, `\` and bytes outside
/// printable ASCII as `\xHH`, so a client cannot forge a line or a field.
fn esc(s: &str) -> String {
    if s.is_empty() {
        return "-".into();
    }
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'"' | b'\\' | 0..=0x1f | 0x7f..=0xff => out.push_str(&format!("\\x{b:02X}")),
            _ => out.push(b as char),
        }
    }
    out
}

impl Entry {
    /// The combined line (no newline), then ` "host" "backend" duration`
    /// as NGINX operators commonly append.
    pub fn combined(&self) -> String {
        let client = self.client.map_or("-".to_string(), |c| c.to_string());
        format!(
            "{client} - - [{}] \"{} {} {}\" {} {} \"{}\" \"{}\" \"{}\" \"{}\" {:.3}",
            clf_time(self.unix_ms),
            esc(&self.method),
            esc(&self.uri),
            esc(&self.protocol),
            self.status,
            self.bytes_sent,
            esc(&self.referer),
            esc(&self.user_agent),
            esc(&self.host),
            esc(&self.backend),
            self.duration_us as f64 / 1e6,
        )
    }

    /// One JSON object (no newline); strings escaped by serde_json.
    pub fn json(&self) -> String {
        #[derive(Serialize)]
        struct Line<'a> {
            time: String,
            #[serde(flatten)]
            entry: &'a Entry,
        }
        serde_json::to_string(&Line { time: iso_time(self.unix_ms), entry: self }).unwrap_or_default()
    }

    pub fn format(&self, f: LogFormat) -> Option<String> {
        match f {
            LogFormat::Combined => Some(self.combined()),
            LogFormat::Json => Some(self.json()),
            LogFormat::Off => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn entry() -> Entry {
        Entry {
            unix_ms: 971_186_136_123, // 2000-10-10T13:55:36.123Z
            client: Some("198.18.0.2".parse().expect("ip")),
            method: "GET".into(),
            uri: "/a?b=c".into(),
            protocol: "HTTP/1.1".into(),
            host: "shop.example.com".into(),
            vhost: "shop.example.com".into(),
            backend: "198.51.100.6:8080".into(),
            status: 200,
            bytes_sent: 12,
            bytes_received: 0,
            duration_us: 1500,
            referer: String::new(),
            user_agent: "curl/7.88.1".into(),
            tls: false,
            error: String::new(),
        }
    }

    #[test]
    fn combined_line() {
        assert_eq!(
            entry().combined(),
            "198.18.0.2 - - [10/Oct/2000:13:55:36 +0000] \"GET /a?b=c HTTP/1.1\" 200 12 \"-\" \"curl/7.88.1\" \"shop.example.com\" \"198.51.100.6:8080\" 0.002"
        );
    }

    #[test]
    fn json_line() {
        let v: serde_json::Value = serde_json::from_str(&entry().json()).expect("json");
        assert_eq!(v["time"], "2000-10-10T13:55:36.123Z");
        assert_eq!(v["status"], 200);
        assert_eq!(v["client"], "198.18.0.2");
        assert_eq!(v["uri"], "/a?b=c");
    }

    #[test]
    fn dates() {
        assert_eq!(clf_time(0), "01/Jan/1970:00:00:00 +0000");
        assert_eq!(iso_time(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(iso_time(1_795_740_839_000), "2026-11-27T00:53:59.000Z");
    }

    proptest! {
        /// Whatever a client puts in a field, a combined line stays one
        /// line and its quoted fields cannot be closed early.
        #[test]
        fn fields_cannot_forge_lines(uri in any::<String>(), ua in any::<String>()) {
            let mut e = entry();
            e.uri = uri;
            e.user_agent = ua.clone();
            let line = e.combined();
            prop_assert!(!line.contains('\n'));
            prop_assert_eq!(line.matches('"').count(), 10);
            let json = e.json();
            prop_assert!(!json.contains('\n'));
            let v: serde_json::Value = serde_json::from_str(&json).expect("json");
            prop_assert_eq!(v["user_agent"].as_str(), Some(ua.as_str()));
        }
    }
}
