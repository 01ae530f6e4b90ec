//! Automatic certificates' pure part (issue #10 point 3): which names may
//! get an ACME order, when a name's certificate is due for renewal, how
//! long a failing name waits before the next attempt, and the per-name
//! record the issuer keeps in the store (`http/acme/orders/<name>`). No
//! clocks: every decision takes "now" in unix seconds.

use serde::{Deserialize, Serialize};

use crate::model::Vhost;

/// The first retry after a failure waits this long, doubling per failure...
pub const BACKOFF_MIN_SECS: i64 = 60;
/// ...up to this (a day), as certbot and Caddy cap theirs.
pub const BACKOFF_MAX_SECS: i64 = 86_400;
/// A certificate is renewed this long before it expires at the latest...
pub const RENEW_BEFORE_SECS: i64 = 30 * 86_400;
/// The path HTTP-01 asks for (RFC 8555 section 8.3).
pub const CHALLENGE_PREFIX: &str = "/.well-known/acme-challenge/";

/// The names that may get a certificate by ACME: vhosts that opted in
/// (`--acme`), never wildcards (HTTP-01 cannot prove them), sorted, each
/// once. Nothing else: a client's Host header never starts an order.
pub fn eligible<'a>(vhosts: impl IntoIterator<Item = &'a Vhost>) -> Vec<String> {
    let mut names: Vec<String> =
        vhosts.into_iter().filter(|v| v.acme && !v.is_wildcard()).map(|v| v.host.clone()).collect();
    names.sort();
    names.dedup();
    names
}

/// When a certificate valid from `not_before` to `not_after` should be
/// renewed: a third of its lifetime before it ends (30 days of a 90-day
/// certificate), but never later than 30 days before it ends.
pub fn renew_at(not_before: i64, not_after: i64) -> i64 {
    let lifetime = (not_after - not_before).max(0);
    not_after - (lifetime / 3).min(RENEW_BEFORE_SECS)
}

/// How long to wait after the `failures`-th failure in a row (1 is the
/// first): 1 min, 2 min, 4 min, ... at most a day.
pub fn backoff_secs(failures: u32) -> i64 {
    let doublings = failures.saturating_sub(1).min(20);
    (BACKOFF_MIN_SECS << doublings).min(BACKOFF_MAX_SECS)
}

/// The validity of a stored certificate that covers a name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Covering {
    pub not_before: i64,
    pub not_after: i64,
}

/// Whether a certificate for `names` (its subjectAltName DNS names)
/// covers `name`: exactly, or by a one-label wildcard.
pub fn covers(names: &[String], name: &str) -> bool {
    names.iter().any(|n| {
        n == name
            || n.strip_prefix("*.").is_some_and(|suffix| {
                name.split_once('.').is_some_and(|(label, rest)| !label.is_empty() && rest == suffix)
            })
    })
}

/// Where a name stands, as the issuer records it in the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum State {
    /// An order is being worked on.
    Ordering,
    /// The last order succeeded; the certificate is stored.
    Valid,
    /// The last order failed; the next one waits for `next_attempt`.
    Failed,
}

impl std::fmt::Display for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            State::Ordering => "ordering",
            State::Valid => "valid",
            State::Failed => "failed",
        })
    }
}

/// The issuer's record of one name (`http/acme/orders/<name>`): it
/// survives restarts, so a failing name keeps its backoff.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderRecord {
    pub state: State,
    /// Failures in a row (0 after a success).
    #[serde(default)]
    pub failures: u32,
    /// Unix seconds of the last attempt's start.
    #[serde(default)]
    pub last_attempt: i64,
    /// No new order before this (unix seconds); 0: whenever needed.
    #[serde(default)]
    pub next_attempt: i64,
    /// Why the last attempt failed.
    #[serde(default)]
    pub last_error: Option<String>,
    /// Expiry of the certificate the last success stored (unix seconds).
    #[serde(default)]
    pub not_after: Option<i64>,
}

impl OrderRecord {
    /// The record after an attempt started at `now` failed with `error`.
    pub fn failed(previous: Option<&OrderRecord>, now: i64, error: String) -> OrderRecord {
        let failures = previous.map_or(0, |p| p.failures).saturating_add(1);
        OrderRecord {
            state: State::Failed,
            failures,
            last_attempt: now,
            next_attempt: now + backoff_secs(failures),
            last_error: Some(error),
            not_after: previous.and_then(|p| p.not_after),
        }
    }

    /// The record after an attempt started at `now` stored a certificate
    /// valid until `not_after`.
    pub fn succeeded(now: i64, not_after: i64) -> OrderRecord {
        OrderRecord {
            state: State::Valid,
            failures: 0,
            last_attempt: now,
            next_attempt: 0,
            last_error: None,
            not_after: Some(not_after),
        }
    }
}

/// What the issuer does about one name now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Order a certificate now.
    Order,
    /// Nothing to do before this time (unix seconds): the renewal time of
    /// the certificate in force, or the end of a failure's backoff.
    WaitUntil(i64),
}

/// The decision for a name whose best stored certificate (the covering one
/// that lasts longest) is `best`, with the issuer's `record`, at `now`.
/// A certificate not yet due keeps the name quiet whatever happened before
/// (the operator may have added one by hand); a due or missing one is
/// ordered unless a failure's backoff still runs.
pub fn decide(best: Option<Covering>, record: Option<&OrderRecord>, now: i64) -> Decision {
    if let Some(c) = best {
        let due = renew_at(c.not_before, c.not_after);
        if now < due {
            return Decision::WaitUntil(due);
        }
    }
    match record {
        Some(r) if r.state == State::Failed && now < r.next_attempt => Decision::WaitUntil(r.next_attempt),
        _ => Decision::Order,
    }
}

/// The certificate's store name (`http/certs/<name>`): the vhost's name,
/// the name `cert add` would give it, so `cert list` shows it there.
pub fn cert_name(host: &str) -> String {
    host.to_string()
}

/// A token from the challenge path, if it is one a CA could have given
/// (base64url, RFC 8555 section 8.3: at least 128 bits): anything else is
/// not looked up.
pub fn challenge_token(path: &str) -> Option<&str> {
    let token = path.strip_prefix(CHALLENGE_PREFIX)?;
    let ok =
        (16..=256).contains(&token.len()) && token.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    ok.then_some(token)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::model::{Backend, Route};

    fn vhost(host: &str, acme: bool) -> Vhost {
        let backends = vec![Backend::parse("backend", "198.51.100.6:8080").expect("backend")];
        Vhost { acme, ..Vhost::new(host, "acme", vec![Route { prefix: "/".into(), backends }]) }
    }

    #[test]
    fn only_opted_in_exact_names_are_eligible() {
        let all = [
            vhost("b.example.com", true),
            vhost("a.example.com", true),
            vhost("*.example.com", true),
            vhost("plain.example.com", false),
        ];
        assert_eq!(eligible(&all), ["a.example.com", "b.example.com"]);
        assert!(eligible(&[]).is_empty());
    }

    #[test]
    fn renewal_time() {
        let day = 86_400;
        // 90 days: renewed with 30 days left.
        assert_eq!(renew_at(0, 90 * day), 60 * day);
        // Five years: still 30 days before the end, not a third.
        assert_eq!(renew_at(0, 5 * 365 * day), 5 * 365 * day - 30 * day);
        // Six days (short-lived certificates): two days before the end.
        assert_eq!(renew_at(0, 6 * day), 4 * day);
        // Nonsense validity: due at its end at the latest.
        assert_eq!(renew_at(10, 5), 5);
    }

    #[test]
    fn backoff_doubles_from_a_minute_to_a_day() {
        let seen: Vec<i64> = (1..=13).map(backoff_secs).collect();
        assert_eq!(seen[..5], [60, 120, 240, 480, 960]);
        assert_eq!(*seen.last().expect("last"), 86_400);
        assert_eq!(backoff_secs(0), 60);
        assert_eq!(backoff_secs(u32::MAX), 86_400);
    }

    #[test]
    fn decisions() {
        let day = 86_400;
        let fresh = Covering { not_before: 0, not_after: 90 * day };
        // No certificate, no record: order.
        assert_eq!(decide(None, None, 5), Decision::Order);
        // A certificate not yet due: wait for its renewal time.
        assert_eq!(decide(Some(fresh), None, day), Decision::WaitUntil(60 * day));
        // Due: order.
        assert_eq!(decide(Some(fresh), None, 61 * day), Decision::Order);
        // A failure's backoff holds even though the name needs a certificate...
        let failed = OrderRecord::failed(None, 100, "boom".into());
        assert_eq!((failed.failures, failed.next_attempt), (1, 160));
        assert_eq!(decide(None, Some(&failed), 120), Decision::WaitUntil(160));
        // ...until it ends.
        assert_eq!(decide(None, Some(&failed), 160), Decision::Order);
        let again = OrderRecord::failed(Some(&failed), 160, "boom".into());
        assert_eq!((again.failures, again.next_attempt), (2, 280));
        // A certificate added meanwhile (by hand) quiets the name.
        assert_eq!(decide(Some(fresh), Some(&again), 200), Decision::WaitUntil(60 * day));
        // A success resets the count.
        let ok = OrderRecord::succeeded(300, 90 * day);
        assert_eq!((ok.failures, ok.state, ok.next_attempt), (0, State::Valid, 0));
        assert_eq!(decide(Some(fresh), Some(&ok), 61 * day), Decision::Order);
    }

    #[test]
    fn coverage() {
        let names = vec!["shop.example.com".to_string(), "*.example.org".to_string()];
        assert!(covers(&names, "shop.example.com"));
        assert!(covers(&names, "a.example.org"));
        assert!(!covers(&names, "a.b.example.org"));
        assert!(!covers(&names, "example.org"));
        assert!(!covers(&names, "other.example.com"));
    }

    #[test]
    fn challenge_tokens() {
        let t = "LoqXcYV8q5ONbJQxbmR7SCTNo3tiAXDfowyjxAjEuX0";
        assert_eq!(challenge_token(&format!("{CHALLENGE_PREFIX}{t}")), Some(t));
        for bad in ["/.well-known/acme-challenge/", "/.well-known/acme-challenge/short", "/other/x"] {
            assert_eq!(challenge_token(bad), None, "{bad}");
        }
        assert_eq!(challenge_token(&format!("{CHALLENGE_PREFIX}{t}/../x")), None);
    }

    proptest! {
        /// The wait after a failure never shrinks as failures pile up and
        /// stays within a minute and a day.
        #[test]
        fn backoff_is_monotonic_and_bounded(n in 0u32..10_000) {
            let (a, b) = (backoff_secs(n), backoff_secs(n + 1));
            prop_assert!(a <= b);
            prop_assert!((BACKOFF_MIN_SECS..=BACKOFF_MAX_SECS).contains(&a));
        }

        /// A renewal is always due before expiry, never before issuance,
        /// and a due certificate without a running backoff is ordered.
        #[test]
        fn renewal_is_due_within_the_validity(nb in 0i64..1_000_000_000, len in 1i64..400_000_000, now in 0i64..2_000_000_000) {
            let na = nb + len;
            let at = renew_at(nb, na);
            prop_assert!(at >= nb && at <= na);
            let d = decide(Some(Covering { not_before: nb, not_after: na }), None, now);
            prop_assert_eq!(d == Decision::Order, now >= at);
        }
    }
}
