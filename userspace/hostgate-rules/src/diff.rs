//! What applying new rulesets would change, rule by rule, for
//! `hostgate rules diff`.

use serde::Serialize;

use crate::ast::Ruleset;

/// One change, for one customer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Change {
    pub customer: String,
    /// `+` added, `-` removed, `~` the default changed.
    pub kind: char,
    pub text: String,
    /// Line in the new file (additions) or the old one (removals).
    pub line: Option<u32>,
}

/// Differences between the rules in force and the candidate ones. Rules
/// are compared in canonical form (sets expanded, comments ignored) and in
/// order, since order decides: a moved rule shows as removed and added.
pub fn diff(old: &[Ruleset], new: &[Ruleset]) -> Vec<Change> {
    let mut out = Vec::new();
    let mut customers: Vec<&str> = old.iter().chain(new).map(|r| r.customer.as_str()).collect();
    customers.sort_unstable();
    customers.dedup();
    for c in customers {
        let before = old.iter().find(|r| r.customer == c);
        let after = new.iter().find(|r| r.customer == c);
        let texts = |rs: Option<&Ruleset>| -> Vec<(String, u32)> {
            rs.map(|r| r.rules.iter().map(|x| (x.to_string(), x.line)).collect()).unwrap_or_default()
        };
        let (a, b) = (texts(before), texts(after));
        // Longest common subsequence keeps unchanged rules out of the report.
        let mut lcs = vec![vec![0usize; b.len() + 1]; a.len() + 1];
        for i in (0..a.len()).rev() {
            for j in (0..b.len()).rev() {
                lcs[i][j] = if a[i].0 == b[j].0 { lcs[i + 1][j + 1] + 1 } else { lcs[i + 1][j].max(lcs[i][j + 1]) };
            }
        }
        let (mut i, mut j) = (0, 0);
        while i < a.len() || j < b.len() {
            if i < a.len() && j < b.len() && a[i].0 == b[j].0 {
                i += 1;
                j += 1;
            } else if j < b.len() && (i == a.len() || lcs[i][j + 1] >= lcs[i + 1][j]) {
                out.push(Change { customer: c.into(), kind: '+', text: b[j].0.clone(), line: Some(b[j].1) });
                j += 1;
            } else {
                out.push(Change { customer: c.into(), kind: '-', text: a[i].0.clone(), line: Some(a[i].1) });
                i += 1;
            }
        }
        let default = |rs: Option<&Ruleset>| rs.map(|r| r.default.to_string());
        if default(before) != default(after) {
            let text = format!(
                "default {} -> {}",
                default(before).unwrap_or_else(|| "(no rules)".into()),
                default(after).unwrap_or_else(|| "(no rules)".into())
            );
            out.push(Change { customer: c.into(), kind: '~', text, line: None });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::parse;

    #[test]
    fn reports_only_what_changes() {
        let (old, _) =
            parse("a", "customer a\ndefault drop\nallow tcp port 80\nallow tcp port 22 # ssh\n").expect("old");
        let (new, _) =
            parse("a", "customer a\ndefault allow\nset web = 80\nallow tcp port @web\ndrop udp\nallow tcp port 22\n")
                .expect("new");
        let d = diff(&[old], &[new]);
        assert_eq!(
            d,
            vec![
                Change { customer: "a".into(), kind: '+', text: "drop in udp".into(), line: Some(5) },
                Change { customer: "a".into(), kind: '~', text: "default drop -> allow".into(), line: None },
            ]
        );
    }

    #[test]
    fn new_and_removed_customers() {
        let (b, _) = parse("b", "customer b\ndefault drop\nallow icmp\n").expect("b");
        let d = diff(&[], std::slice::from_ref(&b));
        assert_eq!(d.len(), 2);
        assert_eq!(d[0].text, "allow in icmp");
        assert_eq!(diff(&[b], &[])[0].kind, '-');
    }
}
