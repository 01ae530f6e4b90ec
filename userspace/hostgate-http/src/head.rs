//! Where an HTTP/1.1 request head ends: the first empty line (RFC 9112
//! §2.2: CRLF CRLF, and a bare LF is accepted as a line ending, as httparse
//! does), found across reads however the bytes are split. The daemon
//! times every request head with it (NGINX's `client_header_timeout`).

/// Scans a request head arriving in pieces.
#[derive(Debug, Default, Clone)]
pub struct HeadEnd {
    state: State,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Inside a line.
    #[default]
    InLine,
    /// Just after a line's LF.
    LineStart,
    /// A CR at the start of a line.
    LineStartCr,
}

impl HeadEnd {
    /// The offset just past the head's end if it is in `bytes` (the bytes
    /// after it are a body's); `None`: not yet.
    pub fn find(&mut self, bytes: &[u8]) -> Option<usize> {
        for (i, &b) in bytes.iter().enumerate() {
            self.state = match (self.state, b) {
                (State::LineStart | State::LineStartCr, b'\n') => {
                    self.state = State::InLine;
                    return Some(i + 1);
                }
                (_, b'\n') => State::LineStart,
                (State::LineStart, b'\r') => State::LineStartCr,
                _ => State::InLine,
            };
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn whole(bytes: &[u8]) -> Option<usize> {
        HeadEnd::default().find(bytes)
    }

    #[test]
    fn ends_at_the_first_empty_line() {
        let head = b"GET / HTTP/1.1\r\nHost: a\r\n\r\nbody\r\n\r\n";
        assert_eq!(whole(head), Some(27));
        assert_eq!(whole(b"GET / HTTP/1.1\nHost: a\n\nx"), Some(24));
        assert_eq!(whole(b"GET / HTTP/1.1\r\nHost: a\n\r\n"), Some(26));
        assert_eq!(whole(b"GET / HTTP/1.1\r\nHost: a\r\n"), None);
        assert_eq!(whole(b"GET / HTTP/1.1\r\nHost: a\r\n\r"), None);
        // A CR inside a line is not a line ending.
        assert_eq!(whole(b"GET / HTTP/1.1\r\nX: a\rb\r\n"), None);
    }

    proptest! {
        /// However the bytes arrive, the end is found at the same offset.
        #[test]
        fn splits_do_not_matter(
            bytes in proptest::collection::vec(prop::sample::select(vec![b'\r', b'\n', b'a', b':', b' ']), 0..64),
            cuts in proptest::collection::vec(0usize..64, 0..6),
        ) {
            let want = whole(&bytes);
            let mut cuts: Vec<usize> = cuts.into_iter().filter(|&c| c <= bytes.len()).collect();
            cuts.push(0);
            cuts.push(bytes.len());
            cuts.sort_unstable();
            cuts.dedup();
            let mut scanner = HeadEnd::default();
            let mut got = None;
            for w in cuts.windows(2) {
                if let Some(at) = scanner.find(&bytes[w[0]..w[1]]) {
                    got = Some(w[0] + at);
                    break;
                }
            }
            prop_assert_eq!(got, want);
        }
    }
}
