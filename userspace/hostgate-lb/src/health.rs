//! Health checks: what to probe, and the rise/fall state machine that turns
//! probe results into a backend's health. Probing itself (sockets) is the
//! daemon's; everything here is pure.

use serde::{Deserialize, Serialize};

use crate::model::ModelError;

/// How to probe a backend.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Probe {
    /// A TCP connection must be accepted.
    Tcp,
    /// `GET path` over HTTP/1.1 must answer `expect_status`.
    Http { path: String, expect_status: u16 },
}

/// A backend's health check.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthCheck {
    pub probe: Probe,
    /// Port to probe; `None` uses the backend's (or the VIP's) port.
    pub port: Option<u16>,
    pub interval_ms: u32,
    pub timeout_ms: u32,
    /// Consecutive successes that make an unhealthy backend healthy.
    pub rise: u32,
    /// Consecutive failures that make a healthy backend unhealthy.
    pub fall: u32,
}

impl HealthCheck {
    /// Parses the CLI's probe form: `tcp` or `http:/path[:status]`.
    pub fn parse_probe(s: &str) -> Result<Probe, ModelError> {
        let bad = || ModelError::Invalid {
            field: "check",
            problem: format!("{s:?} is not tcp or http:/PATH[:STATUS] (e.g. http:/healthz:200)"),
        };
        if s == "tcp" {
            return Ok(Probe::Tcp);
        }
        let rest = s.strip_prefix("http:").ok_or_else(bad)?;
        if !rest.starts_with('/') {
            return Err(bad());
        }
        let (path, status) = match rest.rsplit_once(':') {
            Some((p, code)) => (p, code.parse().map_err(|_| bad())?),
            None => (rest, 200),
        };
        if !(100..=599).contains(&status) || path.bytes().any(|b| b.is_ascii_whitespace() || b.is_ascii_control()) {
            return Err(bad());
        }
        Ok(Probe::Http { path: path.to_string(), expect_status: status })
    }

    pub fn validate(&self) -> Result<(), ModelError> {
        let bad = |field: &'static str, problem: String| Err(ModelError::Invalid { field, problem });
        if !(50..=3_600_000).contains(&self.interval_ms) {
            return bad("check-interval", format!("{} ms must be between 50 ms and 1 h", self.interval_ms));
        }
        if self.timeout_ms == 0 || self.timeout_ms > self.interval_ms {
            return bad("check-timeout", format!("{} ms must be positive and at most the interval", self.timeout_ms));
        }
        if !(1..=100).contains(&self.rise) {
            return bad("rise", format!("{} must be between 1 and 100", self.rise));
        }
        if !(1..=100).contains(&self.fall) {
            return bad("fall", format!("{} must be between 1 and 100", self.fall));
        }
        Ok(())
    }
}

/// A backend's health as the checker tracks it. Starts healthy, so a new
/// backend takes traffic at once; `fall` failures take it out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HealthState {
    pub healthy: bool,
    streak: u32,
}

impl Default for HealthState {
    fn default() -> Self {
        HealthState { healthy: true, streak: 0 }
    }
}

impl HealthState {
    /// A state starting at `healthy` (e.g. as last recorded).
    pub fn new(healthy: bool) -> Self {
        HealthState { healthy, streak: 0 }
    }

    /// Records one probe result; returns the new health if it changed.
    pub fn observe(&mut self, ok: bool, rise: u32, fall: u32) -> Option<bool> {
        if ok == self.healthy {
            self.streak = 0;
            return None;
        }
        self.streak += 1;
        let needed = if self.healthy { fall } else { rise };
        if self.streak >= needed {
            self.healthy = ok;
            self.streak = 0;
            return Some(ok);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn probes_parse() {
        assert_eq!(HealthCheck::parse_probe("tcp"), Ok(Probe::Tcp));
        assert_eq!(
            HealthCheck::parse_probe("http:/healthz"),
            Ok(Probe::Http { path: "/healthz".into(), expect_status: 200 })
        );
        assert_eq!(HealthCheck::parse_probe("http:/x:204"), Ok(Probe::Http { path: "/x".into(), expect_status: 204 }));
        for bad in ["udp", "http:healthz", "http:/x:999", "http:/a b"] {
            assert!(HealthCheck::parse_probe(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn fall_then_rise() {
        let mut s = HealthState::default();
        assert_eq!(s.observe(false, 2, 3), None);
        assert_eq!(s.observe(false, 2, 3), None);
        assert_eq!(s.observe(false, 2, 3), Some(false));
        assert_eq!(s.observe(true, 2, 3), None);
        assert_eq!(s.observe(false, 2, 3), None, "a failure resets the rise streak");
        assert_eq!(s.observe(true, 2, 3), None);
        assert_eq!(s.observe(true, 2, 3), Some(true));
    }

    proptest! {
        /// Health only flips after `fall` (or `rise`) equal results in a row.
        #[test]
        fn flips_need_a_full_streak(results in proptest::collection::vec(any::<bool>(), 0..60), rise in 1u32..5, fall in 1u32..5) {
            let mut s = HealthState::default();
            let mut run: Vec<bool> = Vec::new();
            for ok in results {
                let before = s.healthy;
                run.push(ok);
                if let Some(now) = s.observe(ok, rise, fall) {
                    prop_assert_eq!(now, ok);
                    let need = if before { fall } else { rise } as usize;
                    prop_assert!(run.len() >= need);
                    prop_assert!(run[run.len() - need..].iter().all(|r| *r == ok));
                    run.clear();
                }
            }
        }
    }
}
