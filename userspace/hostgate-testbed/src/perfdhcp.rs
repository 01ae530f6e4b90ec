//! ISC perfdhcp (Debian's `kea-admin`), the DHCPv4 load generator of the
//! crash test and `cargo xtask bench dhcp`. It acts as a relay agent: its
//! packets carry giaddr = the local address and go to the server's port
//! 67, and the replies come back to giaddr:67, so the server must accept
//! relayed requests on that interface.

use std::{process::Command, time::Duration};

/// One exchange's figures (DISCOVER-OFFER or REQUEST-ACK).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Exchange {
    pub sent: u64,
    pub received: u64,
    pub drops_percent: f64,
    pub avg_delay_ms: f64,
    pub max_delay_ms: f64,
}

/// What one perfdhcp run reported.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Report {
    pub discover_offer: Exchange,
    pub request_ack: Exchange,
    /// Addresses given to two clients at once, when run with `-u`.
    pub non_unique: u64,
    pub output: String,
}

/// A perfdhcp run of full DORA exchanges from the namespace at `netns`
/// (a /run/netns path) through `iface` to `server`: `rate` new exchanges a
/// second among `clients` distinct clients, for `period`.
#[derive(Clone, Debug)]
pub struct Load<'a> {
    pub netns: &'a str,
    pub iface: &'a str,
    pub server: &'a str,
    pub rate: u32,
    pub clients: u32,
    pub period: Duration,
    /// Check that no address is handed to two clients (`-u`).
    pub unique: bool,
    /// Renewals (REQUEST with ciaddr, `-f`) and releases (`-F`) a second,
    /// of clients that hold a lease; both 0: DORA only.
    pub renew_rate: u32,
    pub release_rate: u32,
}

impl Load<'_> {
    pub fn command(&self) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net={}", self.netns))
            .args(["--", "perfdhcp", "-4", "-l", self.iface])
            .arg(format!("-r{}", self.rate))
            .arg(format!("-R{}", self.clients))
            .arg(format!("-p{}", self.period.as_secs().max(1)))
            // Wait for late answers before the report, so a slow server is
            // measured rather than cut off (microseconds).
            .arg("-W500000");
        if self.unique {
            c.arg("-u");
        }
        if self.renew_rate > 0 {
            c.arg(format!("-f{}", self.renew_rate));
        }
        if self.release_rate > 0 {
            c.arg(format!("-F{}", self.release_rate));
        }
        c.arg(self.server);
        c
    }

    /// Runs to completion and parses the report.
    pub fn run(&self) -> std::io::Result<Report> {
        let out = self.command().output()?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
        Ok(parse(&text))
    }
}

/// Reads perfdhcp's text report.
pub fn parse(text: &str) -> Report {
    let mut report = Report { output: text.to_string(), ..Default::default() };
    let mut current: Option<&mut Exchange> = None;
    for line in text.lines().map(str::trim) {
        if line.starts_with("***Statistics for: DISCOVER-OFFER") {
            current = Some(&mut report.discover_offer);
            continue;
        }
        if line.starts_with("***Statistics for: REQUEST-ACK") {
            current = Some(&mut report.request_ack);
            continue;
        }
        if line.starts_with("***") {
            current = None;
            continue;
        }
        let Some((key, value)) = line.split_once(':') else { continue };
        let number = value.split_whitespace().next().and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
        if key == "non unique addresses" {
            report.non_unique += number as u64;
        }
        let Some(e) = current.as_deref_mut() else { continue };
        match key {
            "sent packets" => e.sent = number as u64,
            "received packets" => e.received = number as u64,
            "drops ratio" => e.drops_percent = number,
            "avg delay" => e.avg_delay_ms = number,
            "max delay" => e.max_delay_ms = number,
            _ => {}
        }
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_report() {
        let text = "Running: perfdhcp -4\n***Rate statistics***\nRate: 95.9 4-way exchanges/second\n\
            ***Statistics for: DISCOVER-OFFER***\nsent packets: 199\nreceived packets: 199\ndrops: 0\n\
            drops ratio: 0 %\nnon unique addresses: 0\n\nmin delay: 0.301 ms\navg delay: 5.230 ms\n\
            max delay: 27.943 ms\n***Statistics for: REQUEST-ACK***\nsent packets: 199\n\
            received packets: 190\ndrops ratio: 4.5 %\nnon unique addresses: 2\navg delay: 7.5 ms\n";
        let r = parse(text);
        assert_eq!((r.discover_offer.sent, r.discover_offer.received), (199, 199));
        assert_eq!(r.discover_offer.avg_delay_ms, 5.23);
        assert_eq!((r.request_ack.received, r.request_ack.drops_percent, r.non_unique), (190, 4.5, 2));
    }
}
