//! RFC 5424 messages in RFC 5425 octet-counted frames: pure formatting,
//! no IO, so that every byte that goes on the wire is unit-tested.

use std::fmt::Write as _;

/// Severity (RFC 5424 §6.2.1) of a tracing level.
pub fn severity(level: &tracing::Level) -> u8 {
    match *level {
        tracing::Level::ERROR => 3,
        tracing::Level::WARN => 4,
        tracing::Level::INFO => 6,
        _ => 7,
    }
}

/// Facility `daemon` (3).
const FACILITY_DAEMON: u8 = 3;

/// What one message says, besides its text.
pub struct Header<'a> {
    pub severity: u8,
    /// Microseconds since the epoch.
    pub time_us: u64,
    pub hostname: &'a str,
    pub app_name: &'a str,
    pub procid: u32,
    /// RFC 5424 §7.3.1 `meta sequenceId`: 1..=2^31-1, wrapping, per process;
    /// a receiver can tell a gap from it.
    pub sequence: u32,
}

/// `<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID - [meta sequenceId="N"] MSG`
/// in an octet-counted frame (`LEN SP MESSAGE`, RFC 5425 §4.3).
pub fn frame(h: &Header<'_>, msg: &str) -> Vec<u8> {
    let mut m = String::with_capacity(96 + msg.len());
    let _ = write!(
        m,
        "<{}>1 {} {} {} {} - [meta sequenceId=\"{}\"] ",
        FACILITY_DAEMON * 8 + h.severity,
        timestamp(h.time_us),
        field(h.hostname, 255),
        field(h.app_name, 48),
        h.procid,
        h.sequence
    );
    // MSG may be any UTF-8 but the frame must stay one message: line breaks
    // inside a field value would still be one frame (octet counting does not
    // care), so they are kept as they are.
    m.push_str(msg);
    let mut out = format!("{} ", m.len()).into_bytes();
    out.extend_from_slice(m.as_bytes());
    out
}

/// A header field: printable US-ASCII without spaces, at most `max` long,
/// `-` if nothing is left (RFC 5424 NILVALUE).
fn field(s: &str, max: usize) -> String {
    let f: String = s.chars().filter(|c| c.is_ascii_graphic()).take(max).collect();
    if f.is_empty() {
        "-".into()
    } else {
        f
    }
}

/// `2026-11-27T01:02:03.456789Z` (RFC 3339, UTC, microseconds).
pub fn timestamp(us: u64) -> String {
    let secs = us / 1_000_000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, mo, d) = civil_from_days(days);
    format!("{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}.{:06}Z", rem / 3600, rem % 3600 / 60, rem % 60, us % 1_000_000)
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian
/// (H. Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// Splits complete frames off the front of `buf`: the number of bytes they
/// take, and how many there are. Stops at the first incomplete or
/// malformed one (a torn write at the end of a spool file).
pub fn complete_frames(buf: &[u8]) -> (usize, usize) {
    let (mut at, mut n) = (0usize, 0usize);
    loop {
        let rest = &buf[at..];
        let Some(space) = rest.iter().take(11).position(|b| *b == b' ') else { return (at, n) };
        let Some(len) = std::str::from_utf8(&rest[..space]).ok().and_then(|s| s.parse::<usize>().ok()) else {
            return (at, n);
        };
        if space == 0 || rest.len() < space + 1 + len {
            return (at, n);
        }
        at += space + 1 + len;
        n += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_in_its_frame() {
        let h = Header {
            severity: 6,
            time_us: 1_795_741_323_456_789,
            hostname: "node 1",
            app_name: "hostgate",
            procid: 42,
            sequence: 7,
        };
        let f = frame(&h, "INFO x: hello");
        let text = String::from_utf8(f).expect("utf8");
        let (len, msg) = text.split_once(' ').expect("LEN SP");
        assert_eq!(len.parse::<usize>().expect("len"), msg.len());
        assert_eq!(msg, "<30>1 2026-11-27T01:02:03.456789Z node1 hostgate 42 - [meta sequenceId=\"7\"] INFO x: hello");
    }

    #[test]
    fn timestamps_are_calendar_dates() {
        assert_eq!(timestamp(0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(timestamp(951_782_400_000_000), "2000-02-29T00:00:00.000000Z");
        assert_eq!(timestamp(4_107_542_399_999_999), "2100-02-28T23:59:59.999999Z");
    }

    #[test]
    fn complete_frames_stop_at_a_torn_one() {
        let h = Header { severity: 3, time_us: 0, hostname: "n", app_name: "a", procid: 1, sequence: 1 };
        let mut buf = frame(&h, "one");
        buf.extend(frame(&h, "two"));
        let whole = buf.len();
        buf.extend(&frame(&h, "three")[..10]);
        assert_eq!(complete_frames(&buf), (whole, 2));
        assert_eq!(complete_frames(b"12x"), (0, 0));
        assert_eq!(complete_frames(b""), (0, 0));
    }
}
