//! The GOAWAY frames in what the proxy sends on an HTTP/2 connection.
//!
//! pingora hands HTTP/2 to the h2 crate, which ends a connection on abuse
//! (a rapid-reset flood: too many streams reset before they were accepted,
//! CVE-2023-44487) or on a protocol error with a GOAWAY frame, and tells
//! nobody. The proxy counts those by watching its own side of the
//! connection: the server's byte stream is a plain sequence of frames
//! (RFC 9113 §4.1: 9-byte header, then `length` bytes of payload), so a
//! scanner that sees every byte written, in pieces of any size, finds each
//! GOAWAY and its error code (RFC 9113 §6.8: last stream ID, then code).

/// RFC 9113 §6.8.
const GOAWAY: u8 = 0x7;
const HEADER: usize = 9;
/// Last-Stream-ID and Error Code: the part of a GOAWAY's payload we read.
const GOAWAY_FIXED: usize = 8;

/// Finds the GOAWAY frames in a server's HTTP/2 byte stream.
#[derive(Debug, Default)]
pub struct GoawayScanner {
    /// The frame header being read, and how much of it has arrived.
    header: [u8; HEADER],
    header_len: usize,
    /// Payload bytes of the current frame still to pass.
    payload_left: usize,
    /// The current frame is a GOAWAY: its first 8 payload bytes, so far.
    goaway: Option<([u8; GOAWAY_FIXED], usize)>,
}

impl GoawayScanner {
    /// Scans the next bytes written; returns the error code of every
    /// GOAWAY whose code arrived in them.
    pub fn scan(&mut self, mut bytes: &[u8]) -> Vec<u32> {
        let mut codes = Vec::new();
        while !bytes.is_empty() {
            if self.header_len < HEADER {
                let n = (HEADER - self.header_len).min(bytes.len());
                self.header[self.header_len..self.header_len + n].copy_from_slice(&bytes[..n]);
                self.header_len += n;
                bytes = &bytes[n..];
                if self.header_len == HEADER {
                    let h = &self.header;
                    self.payload_left = usize::from(h[0]) << 16 | usize::from(h[1]) << 8 | usize::from(h[2]);
                    self.goaway = (h[3] == GOAWAY).then_some(([0; GOAWAY_FIXED], 0));
                    if self.payload_left == 0 {
                        self.next_frame();
                    }
                }
                continue;
            }
            let n = self.payload_left.min(bytes.len());
            if let Some((fixed, have)) = &mut self.goaway {
                let take = (GOAWAY_FIXED - *have).min(n);
                fixed[*have..*have + take].copy_from_slice(&bytes[..take]);
                *have += take;
                if *have == GOAWAY_FIXED {
                    codes.push(u32::from_be_bytes([fixed[4], fixed[5], fixed[6], fixed[7]]));
                    self.goaway = None;
                }
            }
            self.payload_left -= n;
            bytes = &bytes[n..];
            if self.payload_left == 0 {
                self.next_frame();
            }
        }
        codes
    }

    fn next_frame(&mut self) {
        self.header_len = 0;
        self.goaway = None;
    }
}

/// The name of an HTTP/2 error code (RFC 9113 §7), for counters.
pub fn error_name(code: u32) -> &'static str {
    match code {
        0x0 => "NO_ERROR",
        0x1 => "PROTOCOL_ERROR",
        0x2 => "INTERNAL_ERROR",
        0x3 => "FLOW_CONTROL_ERROR",
        0x4 => "SETTINGS_TIMEOUT",
        0x5 => "STREAM_CLOSED",
        0x6 => "FRAME_SIZE_ERROR",
        0x7 => "REFUSED_STREAM",
        0x8 => "CANCEL",
        0x9 => "COMPRESSION_ERROR",
        0xa => "CONNECT_ERROR",
        0xb => "ENHANCE_YOUR_CALM",
        0xc => "INADEQUATE_SECURITY",
        0xd => "HTTP_1_1_REQUIRED",
        _ => "OTHER",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn frame(kind: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let len = payload.len() as u32;
        let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, 0];
        f.extend(stream.to_be_bytes());
        f.extend(payload);
        f
    }

    fn goaway(code: u32, debug: &[u8]) -> Vec<u8> {
        let mut p = 7u32.to_be_bytes().to_vec();
        p.extend(code.to_be_bytes());
        p.extend(debug);
        frame(GOAWAY, 0, &p)
    }

    /// A server's start (SETTINGS, its ACK), a response (HEADERS, DATA
    /// with a payload that looks like a GOAWAY header), then GOAWAYs.
    fn conversation() -> Vec<u8> {
        let mut s = frame(0x4, 0, &[0, 3, 0, 0, 0, 100]);
        s.extend(frame(0x4, 0, &[]));
        s.extend(frame(0x1, 1, &[0x88]));
        s.extend(frame(0x0, 1, &goaway(0xb, b"")));
        s.extend(goaway(0xb, b"too_many_resets"));
        s.extend(frame(0x6, 0, &[0; 8]));
        s.extend(goaway(0x0, b""));
        s
    }

    #[test]
    fn finds_each_goaway_and_its_code_not_lookalikes_in_payloads() {
        assert_eq!(GoawayScanner::default().scan(&conversation()), vec![0xb, 0x0]);
        assert_eq!(error_name(0xb), "ENHANCE_YOUR_CALM");
        assert_eq!(error_name(0x42), "OTHER");
    }

    #[test]
    fn byte_by_byte_is_the_same() {
        let mut s = GoawayScanner::default();
        let codes: Vec<u32> = conversation().iter().flat_map(|b| s.scan(std::slice::from_ref(b))).collect();
        assert_eq!(codes, vec![0xb, 0x0]);
    }

    proptest! {
        /// However the writes split the stream, the same codes come out.
        #[test]
        fn any_split_finds_the_same(cuts in proptest::collection::vec(0usize..200, 0..12)) {
            let bytes = conversation();
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % (bytes.len() + 1)).collect();
            cuts.sort_unstable();
            let mut s = GoawayScanner::default();
            let (mut codes, mut from) = (Vec::new(), 0);
            for cut in cuts.into_iter().chain([bytes.len()]) {
                codes.extend(s.scan(&bytes[from..cut]));
                from = cut;
            }
            prop_assert_eq!(codes, vec![0xb, 0x0]);
        }

        /// Arbitrary bytes never panic.
        #[test]
        fn arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = GoawayScanner::default().scan(&bytes);
        }
    }
}
