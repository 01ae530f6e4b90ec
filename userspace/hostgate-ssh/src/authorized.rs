//! `authorized_keys` lines: `[options] keytype base64 [comment]`.
//!
//! Options the proxy cannot enforce are refused rather than ignored, so an
//! operator never believes a restriction holds that does not. `from=` takes
//! IP addresses, CIDR blocks and `*`/`?` wildcards over the address text,
//! each optionally negated with `!`; host names are not matched (the proxy
//! does no reverse lookups), so they are refused too.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use ssh_key::{Algorithm, HashAlg, PublicKey};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    #[error("empty line (expected an authorized_keys line: [options] TYPE BASE64 [COMMENT])")]
    Empty,
    #[error("key: {0}")]
    Key(String),
    #[error("key type {0} is not accepted (ed25519, ecdsa-sha2-nistp256/384/521 or ssh-rsa)")]
    KeyType(String),
    #[error("options: {0}")]
    Options(String),
}

/// One `from=` pattern.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FromPattern {
    pub negated: bool,
    pub pattern: String,
}

/// A parsed and accepted line.
#[derive(Clone, Debug)]
pub struct AuthorizedKey {
    pub key: PublicKey,
    pub from: Vec<FromPattern>,
    pub comment: String,
}

impl AuthorizedKey {
    /// Parses one line; errors say which part is wrong.
    pub fn parse(line: &str) -> Result<Self, KeyError> {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            return Err(KeyError::Empty);
        }
        let (options, rest) = split_options(line)?;
        let key = PublicKey::from_openssh(rest).map_err(|e| KeyError::Key(e.to_string()))?;
        check_algorithm(&key.algorithm())?;
        let from = parse_options(options)?;
        Ok(AuthorizedKey { comment: key.comment().to_string(), key, from })
    }

    /// `SHA256:...`, as `ssh-keygen -l` prints it.
    pub fn fingerprint(&self) -> String {
        fingerprint(&self.key)
    }

    /// Whether a client at `ip` may use this key (`from=`; none: anyone).
    pub fn allows_source(&self, ip: IpAddr) -> bool {
        from_allows(&self.from, ip)
    }
}

/// `SHA256:...` of a public key.
pub fn fingerprint(key: &PublicKey) -> String {
    key.fingerprint(HashAlg::Sha256).to_string()
}

/// A fingerprint as one store key segment: base64 may hold `/`.
pub fn store_id(fingerprint: &str) -> String {
    fingerprint.replace('/', "_")
}

fn check_algorithm(a: &Algorithm) -> Result<(), KeyError> {
    match a {
        Algorithm::Ed25519 | Algorithm::Ecdsa { .. } | Algorithm::Rsa { .. } => Ok(()),
        other => Err(KeyError::KeyType(other.as_str().to_string())),
    }
}

/// Splits off the options field: a line whose first word is not a key type
/// starts with options, which may hold quoted spaces.
fn split_options(line: &str) -> Result<(&str, &str), KeyError> {
    let first = line.split_whitespace().next().unwrap_or_default();
    if first.parse::<Algorithm>().is_ok() {
        return Ok(("", line));
    }
    let mut quoted = false;
    let mut escaped = false;
    for (i, c) in line.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            c if c.is_whitespace() && !quoted => return Ok((&line[..i], line[i..].trim_start())),
            _ => {}
        }
    }
    Err(KeyError::Options(if quoted { "unterminated quote".into() } else { "no key after the options".into() }))
}

/// Comma-separated options outside quotes.
fn split_commas(options: &str) -> Vec<String> {
    let mut out = vec![String::new()];
    let (mut quoted, mut escaped) = (false, false);
    for c in options.chars() {
        match c {
            _ if escaped => {
                escaped = false;
                push(&mut out, c);
            }
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            ',' if !quoted => out.push(String::new()),
            c => push(&mut out, c),
        }
    }
    out
}

fn push(out: &mut [String], c: char) {
    if let Some(last) = out.last_mut() {
        last.push(c);
    }
}

/// Options that only narrow what a session may do and that the proxy has
/// nothing to narrow yet, or that it honours by construction.
const HARMLESS: &[&str] = &["no-agent-forwarding", "no-x11-forwarding", "no-user-rc"];

fn parse_options(options: &str) -> Result<Vec<FromPattern>, KeyError> {
    let mut from = Vec::new();
    if options.is_empty() {
        return Ok(from);
    }
    for opt in split_commas(options) {
        let (name, value) = match opt.split_once('=') {
            Some((n, v)) => (n.to_ascii_lowercase(), Some(v.to_string())),
            None => (opt.to_ascii_lowercase(), None),
        };
        match (name.as_str(), value) {
            ("from", Some(v)) => from.extend(parse_from(&v)?),
            (n, None) if HARMLESS.contains(&n) => {}
            (n, _) => return Err(KeyError::Options(format!("{n:?} is not supported by the SSH proxy"))),
        }
    }
    Ok(from)
}

fn parse_from(list: &str) -> Result<Vec<FromPattern>, KeyError> {
    let mut out = Vec::new();
    for p in list.split(',').map(str::trim) {
        let (negated, pattern) = match p.strip_prefix('!') {
            Some(rest) => (true, rest),
            None => (false, p),
        };
        let ok = parse_cidr(pattern).is_some()
            || (!pattern.is_empty() && pattern.chars().all(|c| c.is_ascii_hexdigit() || ".:*?".contains(c)));
        if !ok {
            return Err(KeyError::Options(format!(
                "from: {pattern:?} is not an address, CIDR block or address wildcard (host names are not matched)"
            )));
        }
        out.push(FromPattern { negated, pattern: pattern.to_string() });
    }
    Ok(out)
}

fn parse_cidr(s: &str) -> Option<(IpAddr, u8)> {
    let (addr, len) = match s.split_once('/') {
        Some((a, l)) => (a.parse::<IpAddr>().ok()?, l.parse::<u8>().ok()?),
        None => {
            let a = s.parse::<IpAddr>().ok()?;
            (a, if a.is_ipv4() { 32 } else { 128 })
        }
    };
    let max = if addr.is_ipv4() { 32 } else { 128 };
    (len <= max).then_some((addr, len))
}

fn in_cidr(ip: IpAddr, net: IpAddr, len: u8) -> bool {
    let (ip, net, bits) = match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(b)) => (u128::from(u32::from(a)), u128::from(u32::from(b)), 32),
        (IpAddr::V6(a), IpAddr::V6(b)) => (u128::from(a), u128::from(b), 128),
        _ => return false,
    };
    let shift = bits - u32::from(len);
    shift >= bits || (ip >> shift) == (net >> shift)
}

/// OpenSSH's wildcard match: `*` any run, `?` one character.
fn wildcard(pattern: &[u8], text: &[u8]) -> bool {
    match (pattern.first(), text.first()) {
        (None, _) => text.is_empty(),
        (Some(b'*'), _) => wildcard(&pattern[1..], text) || (!text.is_empty() && wildcard(pattern, &text[1..])),
        (Some(b'?'), Some(_)) => wildcard(&pattern[1..], &text[1..]),
        (Some(p), Some(t)) if p.eq_ignore_ascii_case(t) => wildcard(&pattern[1..], &text[1..]),
        _ => false,
    }
}

fn matches(p: &FromPattern, ip: IpAddr) -> bool {
    match parse_cidr(&p.pattern) {
        Some((net, len)) => in_cidr(ip, net, len),
        None => wildcard(p.pattern.as_bytes(), ip.to_string().as_bytes()),
    }
}

/// OpenSSH's rule: a negated match denies outright; otherwise a positive
/// match is needed. No patterns: everyone.
pub fn from_allows(patterns: &[FromPattern], ip: IpAddr) -> bool {
    if patterns.is_empty() {
        return true;
    }
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    let mut allowed = false;
    for p in patterns.iter().filter(|p| matches(p, ip)) {
        if p.negated {
            return false;
        }
        allowed = true;
    }
    allowed
}

#[cfg(test)]
mod tests {
    use super::*;

    const ED: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBV7cbKnCCvXrfkxgcIJ4H7wS0xnxHe0YBLuOBuNqTwT alice@laptop";

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn plain_line() {
        let k = AuthorizedKey::parse(ED).expect("valid");
        assert_eq!(k.comment, "alice@laptop");
        assert!(k.fingerprint().starts_with("SHA256:"));
        assert!(k.allows_source(ip("198.51.100.7")));
    }

    #[test]
    fn from_option_with_quotes_and_negation() {
        let line = format!("from=\"203.0.113.0/24,!203.0.113.9,2001:db8::*\",no-agent-forwarding {ED}");
        let k = AuthorizedKey::parse(&line).expect("valid");
        assert!(k.allows_source(ip("203.0.113.7")));
        assert!(!k.allows_source(ip("203.0.113.9")), "negation wins");
        assert!(!k.allows_source(ip("198.51.100.7")), "no positive match");
        assert!(k.allows_source(ip("2001:db8::5")), "wildcard");
        assert!(k.allows_source(ip("::ffff:203.0.113.8")), "mapped v4");
    }

    #[test]
    fn refusals_say_why() {
        assert!(matches!(AuthorizedKey::parse("  "), Err(KeyError::Empty)));
        assert!(matches!(AuthorizedKey::parse(&format!("command=\"ls\" {ED}")), Err(KeyError::Options(_))));
        assert!(matches!(AuthorizedKey::parse(&format!("from=\"*.example.com\" {ED}")), Err(KeyError::Options(_))));
        assert!(matches!(AuthorizedKey::parse("from=\"1.2.3.4 ssh-ed25519 AAAA"), Err(KeyError::Options(_))));
        assert!(matches!(AuthorizedKey::parse("ssh-ed25519 AAAAnotbase64!"), Err(KeyError::Key(_))));
        let dss = "ssh-dss AAAAB3NzaC1kc3MAAACBAP1/U4EddRIpUt9KnC7s5Of2EbdSPO9EAMMeP4C2USZpRV1AIlH7WT2NWPq/xfW6MPbLm1Vs14E7gB00b/JmYLdrmVClpJ+f6AR7ECLCT7up1/63xhv4O1fnxqimFQ8E+4P208UewwI1VBNaFpEy9nXzrith1yrv8iIDGZ3RSAHHAAAAFQCXYFCPFSMLzLKSuYKi64QL8Fgc9QAAAIEA9+GghdabPd7LvKtcNrhXuXmUr7v6OuqC+VdMCz0HgmdRWVeOutRZT+ZxBxCBgLRJFnEj6EwoFhO3zwkyjMim4TwWeotUfI0o4KOuHiuzpnWRbqN/C/ohNWLx+2J6ASQ7zKTxvqhRkImog9/hWuWfBpKLZl6Ae1UlZAFMO/7PSSoAAACBAKKSU2PFl/qOLxIwmBZPPIcJshVe7bVUpFvyl3BbJDow8rXfskl8wO63OzP/qLmcJM0+JbcRU/53JjTuyk31drV2qxhIOsLDC9dGCWj47Y7TyhPdXh/0dthTRBy6bqGtRPxGa7gJov1xm/UuYYXPIUR/3x9MAZvZ5xvE0kYXO+rx";
        assert!(matches!(AuthorizedKey::parse(dss), Err(KeyError::KeyType(_)) | Err(KeyError::Key(_))));
    }

    #[test]
    fn store_ids_have_no_slash() {
        assert_eq!(store_id("SHA256:a/b+c"), "SHA256:a_b+c");
    }
}
