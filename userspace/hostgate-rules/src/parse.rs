//! The rules-file parser: one statement per line, every problem reported
//! with its line and column, then whole-file checks (missing statements,
//! shadowed rules).

use std::{
    collections::{BTreeMap, HashMap},
    net::IpAddr,
};

use hostgate_ipam::model::{valid_name, Cidr};

use crate::ast::{Action, Diagnostic, Direction, Proto, Rule, Ruleset, Severity};

#[derive(Clone, Debug)]
struct Token<'a> {
    text: &'a str,
    column: u32,
}

/// Splits a line (comment removed) into words and commas, with columns.
fn tokenize(line: &str) -> (Vec<Token<'_>>, String) {
    let (code, comment) = match line.find('#') {
        Some(i) => (&line[..i], line[i + 1..].trim().to_string()),
        None => (line, String::new()),
    };
    let mut tokens = Vec::new();
    let mut start = None;
    for (i, c) in code.char_indices() {
        if c.is_whitespace() || c == ',' || c == '=' {
            if let Some(s) = start.take() {
                tokens.push(Token { text: &code[s..i], column: s as u32 + 1 });
            }
            if c == ',' || c == '=' {
                tokens.push(Token { text: &code[i..i + 1], column: i as u32 + 1 });
            }
        } else if start.is_none() {
            start = Some(i);
        }
    }
    if let Some(s) = start {
        tokens.push(Token { text: &code[s..], column: s as u32 + 1 });
    }
    (tokens, comment)
}

#[derive(Clone, Debug)]
enum SetValue {
    Cidrs(Vec<Cidr>),
    Ports(Vec<(u16, u16)>),
}

struct Parser<'a> {
    file: &'a str,
    line: u32,
    errors: Vec<Diagnostic>,
    sets: HashMap<String, SetValue>,
}

impl Parser<'_> {
    fn error(&mut self, column: u32, message: impl Into<String>, hint: Option<&str>) {
        self.errors.push(Diagnostic {
            file: self.file.to_string(),
            line: self.line,
            column,
            severity: Severity::Error,
            message: message.into(),
            hint: hint.map(str::to_string),
        });
    }
}

fn parse_cidr(s: &str) -> Option<Cidr> {
    if s.contains('/') {
        return s.parse().ok();
    }
    let addr: IpAddr = s.parse().ok()?;
    Some(Cidr { addr, len: if addr.is_ipv4() { 32 } else { 128 } })
}

fn parse_ports(s: &str) -> Option<(u16, u16)> {
    let (a, b) = s.split_once('-').unwrap_or((s, s));
    let (a, b): (u16, u16) = (a.parse().ok()?, b.parse().ok()?);
    (a >= 1 && a <= b).then_some((a, b))
}

fn parse_rate(s: &str) -> Option<u32> {
    s.strip_suffix("/s")?.parse().ok().filter(|r| *r > 0)
}

fn icmp_type(name: &str, v6: bool) -> Option<u8> {
    let named = match (name, v6) {
        ("echo-request", false) => 8,
        ("echo-reply", false) => 0,
        ("dest-unreachable", false) => 3,
        ("time-exceeded", false) => 11,
        ("echo-request", true) => 128,
        ("echo-reply", true) => 129,
        ("dest-unreachable", true) => 1,
        ("packet-too-big", true) => 2,
        ("time-exceeded", true) => 3,
        _ => return name.parse().ok(),
    };
    Some(named)
}

const RULE_WORDS: &str = "tcp, udp, icmp, icmpv6, any, in, out, from, to, port, type";

impl Parser<'_> {
    /// Reads `item {, item}` starting at `*i`; items go through `one`.
    fn list<T: Clone>(
        &mut self,
        tokens: &[Token<'_>],
        i: &mut usize,
        what: &str,
        mut one: impl FnMut(&mut Self, &Token<'_>) -> Option<Vec<T>>,
    ) -> Option<Vec<T>> {
        let mut out = Vec::new();
        loop {
            let Some(tok) = tokens.get(*i) else {
                let col = tokens.last().map_or(1, |t| t.column + t.text.len() as u32);
                self.error(col, format!("expected {what}"), None);
                return None;
            };
            *i += 1;
            out.extend(one(self, tok)?);
            if tokens.get(*i).is_some_and(|t| t.text == ",") {
                *i += 1;
            } else {
                return Some(out);
            }
        }
    }

    fn set_ref(&mut self, tok: &Token<'_>) -> Option<SetValue> {
        let name = tok.text.strip_prefix('@')?;
        match self.sets.get(name) {
            Some(v) => Some(v.clone()),
            None => {
                self.error(
                    tok.column,
                    format!("unknown set @{name}"),
                    Some("define it with `set NAME = ...` above its first use"),
                );
                None
            }
        }
    }

    fn cidr_item(&mut self, tok: &Token<'_>) -> Option<Vec<Cidr>> {
        if tok.text == "any" {
            return Some(vec![]);
        }
        if tok.text.starts_with('@') {
            return match self.set_ref(tok)? {
                SetValue::Cidrs(c) => Some(c),
                SetValue::Ports(_) => {
                    self.error(tok.column, format!("{} is a set of ports, not of addresses", tok.text), None);
                    None
                }
            };
        }
        match parse_cidr(tok.text) {
            Some(c) => Some(vec![c]),
            None => {
                self.error(
                    tok.column,
                    format!("bad CIDR {:?}", tok.text),
                    Some("write ADDRESS or ADDRESS/LENGTH without host bits, e.g. 198.51.100.0/24"),
                );
                None
            }
        }
    }

    fn port_item(&mut self, tok: &Token<'_>) -> Option<Vec<(u16, u16)>> {
        if tok.text.starts_with('@') {
            return match self.set_ref(tok)? {
                SetValue::Ports(p) => Some(p),
                SetValue::Cidrs(_) => {
                    self.error(tok.column, format!("{} is a set of addresses, not of ports", tok.text), None);
                    None
                }
            };
        }
        match parse_ports(tok.text) {
            Some(p) => Some(vec![p]),
            None => {
                self.error(
                    tok.column,
                    format!("bad port {:?}", tok.text),
                    Some("a port is 1-65535; a range is LOW-HIGH"),
                );
                None
            }
        }
    }

    fn set(&mut self, tokens: &[Token<'_>]) {
        let Some(name) = tokens.get(1) else {
            self.error(tokens[0].column, "set needs a name", Some("set NAME = ITEM, ITEM ..."));
            return;
        };
        if !valid_name(name.text) {
            self.error(name.column, format!("bad set name {:?}", name.text), Some("a-z, 0-9 and '-'"));
            return;
        }
        if tokens.get(2).is_none_or(|t| t.text != "=") {
            let col = tokens.get(2).map_or(name.column + name.text.len() as u32, |t| t.column);
            self.error(col, "expected `=` after the set name", Some("set NAME = ITEM, ITEM ..."));
            return;
        }
        let mut i = 3;
        let is_ports = tokens.get(3).is_some_and(|t| parse_ports(t.text).is_some());
        let value = if is_ports {
            self.list(tokens, &mut i, "a port", |p, t| p.port_item(t)).map(SetValue::Ports)
        } else {
            self.list(tokens, &mut i, "an address", |p, t| p.cidr_item(t)).map(SetValue::Cidrs)
        };
        if let Some(extra) = tokens.get(i) {
            self.error(extra.column, format!("unexpected {:?}", extra.text), Some("separate items with commas"));
            return;
        }
        if let Some(v) = value {
            if self.sets.insert(name.text.to_string(), v).is_some() {
                self.error(name.column, format!("set {} is defined twice", name.text), None);
            }
        }
    }

    /// `allow|drop|reject|rate-limit N/s [burst N]` at tokens[*i..].
    fn action(&mut self, tokens: &[Token<'_>], i: &mut usize, allow_limit: bool) -> Option<Action> {
        let tok = &tokens[*i];
        *i += 1;
        match tok.text {
            "allow" => Some(Action::Allow),
            "drop" => Some(Action::Drop),
            "reject" => Some(Action::Reject),
            "rate-limit" if allow_limit => {
                let Some(rate) = tokens.get(*i).and_then(|t| parse_rate(t.text)) else {
                    let col = tokens.get(*i).map_or(tok.column, |t| t.column);
                    self.error(col, "rate-limit needs a rate", Some("rate-limit 100/s [burst 200]"));
                    return None;
                };
                *i += 1;
                let mut burst = rate;
                if tokens.get(*i).is_some_and(|t| t.text == "burst") {
                    *i += 1;
                    match tokens.get(*i).and_then(|t| t.text.parse::<u32>().ok()).filter(|b| *b > 0) {
                        Some(b) => burst = b,
                        None => {
                            self.error(
                                tokens.get(*i).map_or(tok.column, |t| t.column),
                                "burst needs a positive number",
                                None,
                            );
                            return None;
                        }
                    }
                    *i += 1;
                }
                Some(Action::RateLimit { rate, burst })
            }
            other => {
                let hint = if allow_limit { "allow, drop, reject or rate-limit" } else { "allow, drop or reject" };
                self.error(tok.column, format!("unknown action {other:?}"), Some(hint));
                None
            }
        }
    }

    fn rule(&mut self, tokens: &[Token<'_>], comment: String) -> Option<Rule> {
        let mut i = 0;
        let action = self.action(tokens, &mut i, true)?;
        let mut rule = Rule {
            line: self.line,
            direction: Direction::In,
            action,
            proto: None,
            from: vec![],
            to: vec![],
            ports: vec![],
            icmp_type: None,
            comment,
        };
        let mut port_col = None;
        let mut to_tok = None;
        let mut type_tok = None;
        let mut ok = true;
        while let Some(tok) = tokens.get(i) {
            i += 1;
            match tok.text {
                "in" => rule.direction = Direction::In,
                "out" => rule.direction = Direction::Out,
                "tcp" => rule.proto = Some(Proto::Tcp),
                "udp" => rule.proto = Some(Proto::Udp),
                "icmp" => rule.proto = Some(Proto::Icmp),
                "icmpv6" => rule.proto = Some(Proto::Icmpv6),
                "any" => rule.proto = None,
                "from" => match self.list(tokens, &mut i, "a source (CIDR, @set or any)", |p, t| p.cidr_item(t)) {
                    Some(c) => rule.from = c,
                    None => ok = false,
                },
                "to" => {
                    to_tok = Some(tok.column);
                    match self.list(tokens, &mut i, "a destination", |p, t| p.cidr_item(t)) {
                        Some(a) => rule.to = a,
                        None => ok = false,
                    }
                }
                "port" => {
                    port_col = Some(tok.column);
                    match self.list(tokens, &mut i, "a port", |p, t| p.port_item(t)) {
                        Some(p) => rule.ports = p,
                        None => ok = false,
                    }
                }
                "type" => {
                    type_tok = tokens.get(i).cloned();
                    if type_tok.is_none() {
                        self.error(
                            tok.column,
                            "type needs an ICMP type",
                            Some(
                                "echo-request, echo-reply, dest-unreachable, time-exceeded, packet-too-big or a number",
                            ),
                        );
                        ok = false;
                    }
                    i += 1;
                }
                "," => {
                    self.error(tok.column, "unexpected `,`", Some("commas separate the items of one list"));
                    ok = false;
                }
                other => {
                    self.error(tok.column, format!("unexpected {other:?}"), Some(RULE_WORDS));
                    ok = false;
                }
            }
        }
        if let Some(col) = to_tok {
            let hosts = rule.to.iter().all(|c| c.len == if c.addr.is_ipv4() { 32 } else { 128 });
            if rule.direction == Direction::In && !hosts {
                self.error(
                    col,
                    "incoming rules go `to` the customer's IPs, not to prefixes",
                    Some("list the IPs, or write `out` for egress"),
                );
                ok = false;
            }
        }
        if let Some(col) = port_col {
            if !rule.proto.is_some_and(Proto::has_ports) {
                self.error(col, "ports need a protocol with ports", Some("add tcp or udp to the rule"));
                ok = false;
            }
        }
        if let Some(t) = type_tok {
            match rule.proto {
                Some(p) if p.is_icmp() => {
                    match icmp_type(t.text, p == Proto::Icmpv6) {
                        Some(ty) => rule.icmp_type = Some(ty),
                        None => {
                            self.error(t.column, format!("unknown ICMP type {:?}", t.text), Some("echo-request, echo-reply, dest-unreachable, time-exceeded, packet-too-big or 0-255"));
                            ok = false;
                        }
                    }
                }
                _ => {
                    self.error(t.column, "type needs icmp or icmpv6", Some("add icmp or icmpv6 to the rule"));
                    ok = false;
                }
            }
        }
        ok.then_some(rule)
    }
}

/// Parses `text` (named `file` in messages). On success: the ruleset and
/// its warnings. On failure: every error found (and the warnings).
pub fn parse(file: &str, text: &str) -> Result<(Ruleset, Vec<Diagnostic>), Vec<Diagnostic>> {
    let mut p = Parser { file, line: 0, errors: Vec::new(), sets: HashMap::new() };
    let mut customer: Option<(String, u32)> = None;
    let mut default: Option<Action> = None;
    let mut rules = Vec::new();
    for (n, raw) in text.lines().enumerate() {
        p.line = n as u32 + 1;
        let (tokens, comment) = tokenize(raw);
        let Some(first) = tokens.first() else { continue };
        match first.text {
            "customer" => match tokens.get(1) {
                Some(name) if valid_name(name.text) && tokens.len() == 2 => {
                    if customer.is_some() {
                        p.error(first.column, "a second `customer` line", Some("one file holds one customer's rules"));
                    }
                    customer = Some((name.text.to_string(), p.line));
                }
                Some(name) if !valid_name(name.text) => {
                    p.error(name.column, format!("bad customer name {:?}", name.text), Some("a-z, 0-9 and '-'"))
                }
                Some(_) => p.error(tokens[2].column, "unexpected text after the customer name", None),
                None => p.error(first.column, "customer needs a name", Some("customer NAME")),
            },
            "default" => {
                if tokens.len() < 2 {
                    p.error(first.column, "default needs an action", Some("default allow | drop | reject"));
                    continue;
                }
                let mut i = 1;
                if let Some(a) = p.action(&tokens, &mut i, false) {
                    if let Some(extra) = tokens.get(i) {
                        p.error(extra.column, format!("unexpected {:?}", extra.text), None);
                    } else if default.replace(a).is_some() {
                        p.error(first.column, "a second `default` line", None);
                    }
                }
            }
            "set" => p.set(&tokens),
            _ => {
                if let Some(rule) = p.rule(&tokens, comment) {
                    rules.push(rule);
                }
            }
        }
    }
    p.line = 1;
    if customer.is_none() {
        p.error(1, "no `customer` line", Some("start the file with `customer NAME`: whose IPs these rules guard"));
    }
    if default.is_none() {
        p.error(
            1,
            "no `default` line",
            Some("say what happens to traffic no rule matches: `default drop` or `default allow`"),
        );
    }
    let warnings = order_warnings(file, &rules);
    if !p.errors.is_empty() {
        let mut all = p.errors;
        all.extend(warnings);
        all.sort_by_key(|d| (d.line, d.column));
        return Err(all);
    }
    let (customer, customer_line) = customer.unwrap_or_default();
    let ruleset =
        Ruleset { file: file.to_string(), customer, customer_line, default: default.unwrap_or(Action::Drop), rules };
    Ok((ruleset, warnings))
}

fn cidr_within(inner: &Cidr, outer: &Cidr) -> bool {
    outer.len <= inner.len && outer.contains(inner.addr)
}

/// Whether every packet `later` matches is matched by `earlier`.
pub fn covers(earlier: &Rule, later: &Rule) -> bool {
    let proto = earlier.proto.is_none() || earlier.proto == later.proto;
    let from = earlier.from.is_empty()
        || (!later.from.is_empty() && later.from.iter().all(|l| earlier.from.iter().any(|e| cidr_within(l, e))));
    let to = earlier.to.is_empty()
        || (!later.to.is_empty() && later.to.iter().all(|l| earlier.to.iter().any(|e| cidr_within(l, e))));
    let ports = earlier.ports.is_empty()
        || (!later.ports.is_empty()
            && later.ports.iter().all(|(lo, hi)| earlier.ports.iter().any(|(a, b)| a <= lo && hi <= b)));
    let icmp = earlier.icmp_type.is_none() || earlier.icmp_type == later.icmp_type;
    earlier.direction == later.direction && proto && from && to && ports && icmp
}

/// Whether two optional matches can both hold (`None`: anything).
fn either<T: PartialEq>(x: Option<T>, y: Option<T>) -> bool {
    x.is_none() || y.is_none() || x == y
}

/// Whether some packet matches both rules.
pub fn intersects(a: &Rule, b: &Rule) -> bool {
    let cidrs = |x: &[Cidr], y: &[Cidr]| {
        x.is_empty() || y.is_empty() || x.iter().any(|p| y.iter().any(|q| cidr_within(p, q) || cidr_within(q, p)))
    };
    let ports = a.ports.is_empty()
        || b.ports.is_empty()
        || a.ports.iter().any(|(lo, hi)| b.ports.iter().any(|(c, d)| lo <= d && c <= hi));
    a.direction == b.direction
        && either(a.proto, b.proto)
        && either(a.icmp_type, b.icmp_type)
        && ports
        && cidrs(&a.from, &b.from)
        && cidrs(&a.to, &b.to)
}

/// A source prefix as an ordered key: family, address as a number, length.
type PrefixKey = (u8, u128, u8);

fn prefix_key(c: &Cidr) -> PrefixKey {
    match c.addr {
        IpAddr::V4(a) => (4, u128::from(u32::from(a)), c.len),
        IpAddr::V6(a) => (6, u128::from(a), c.len),
    }
}

/// Earlier rules by source prefix, so that checking a rule against the
/// earlier ones looks only at those whose sources can meet its own (rules
/// from any source, prefixes containing or inside its sources), and
/// checking stays near-linear in the rules.
#[derive(Default)]
struct SourceIndex {
    from_any: Vec<usize>,
    by_prefix: BTreeMap<PrefixKey, Vec<usize>>,
    count: usize,
}

impl SourceIndex {
    /// Earlier rules listing a prefix that contains `c` (found over its ancestors).
    fn containing(&self, c: &Cidr, out: &mut Vec<usize>) {
        let (family, addr, len) = prefix_key(c);
        let bits = if family == 4 { 32 } else { 128 };
        for l in 0..=len {
            let host_bits = u32::from(bits - l);
            let masked = if host_bits >= 128 { 0 } else { addr & (u128::MAX << host_bits) };
            if let Some(v) = self.by_prefix.get(&(family, masked, l)) {
                out.extend(v);
            }
        }
    }

    /// Earlier rules listing a prefix inside `c` (a range of the ordered keys).
    fn inside(&self, c: &Cidr, out: &mut Vec<usize>) {
        let (family, addr, len) = prefix_key(c);
        let bits = if family == 4 { 32u32 } else { 128 };
        let host_bits = bits - u32::from(len);
        let last = if host_bits >= 128 { u128::MAX } else { addr | !(u128::MAX << host_bits) };
        for ((_, _, l), v) in self.by_prefix.range((family, addr, len)..=(family, last, u8::MAX)) {
            if *l >= len {
                out.extend(v);
            }
        }
    }

    /// Earlier rules that might take all of `later`'s traffic.
    fn may_cover(&self, later: &Rule) -> Vec<usize> {
        let mut c = self.from_any.clone();
        if let Some(first) = later.from.first() {
            self.containing(first, &mut c);
        }
        sorted(c)
    }

    /// Earlier rules whose sources can meet `later`'s: all of them when it
    /// is from any source.
    fn may_meet<'r>(&self, later: &Rule, rules: &'r [Rule]) -> Box<dyn Iterator<Item = &'r Rule> + 'r> {
        if later.from.is_empty() {
            return Box::new(rules[..self.count].iter());
        }
        let mut c = self.from_any.clone();
        for p in &later.from {
            self.containing(p, &mut c);
            self.inside(p, &mut c);
        }
        Box::new(sorted(c).into_iter().map(move |i| &rules[i]))
    }

    fn add(&mut self, i: usize, rule: &Rule) {
        if rule.from.is_empty() {
            self.from_any.push(i);
        }
        for c in &rule.from {
            self.by_prefix.entry(prefix_key(c)).or_default().push(i);
        }
        self.count = i + 1;
    }
}

fn sorted(mut v: Vec<usize>) -> Vec<usize> {
    v.sort_unstable();
    v.dedup();
    v
}

/// Warnings about rule order: rules that can never match because an
/// earlier rule takes all their traffic, and rules that partly overlap an
/// earlier one with another action (where both match, the earlier decides,
/// which is easy to miss). A specific rule above a general one (the usual
/// exception) is neither.
fn order_warnings(file: &str, rules: &[Rule]) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    let mut index = SourceIndex::default();
    for (j, later) in rules.iter().enumerate() {
        let warning = |line: u32, message: String, hint: String| Diagnostic {
            file: file.to_string(),
            line,
            column: 1,
            severity: Severity::Warning,
            message,
            hint: Some(hint),
        };
        if let Some(earlier) = index.may_cover(later).into_iter().map(|i| &rules[i]).find(|e| covers(e, later)) {
            out.push(warning(
                later.line,
                format!(
                    "this rule never matches: line {} ({}) takes all its traffic first",
                    earlier.line, earlier.action
                ),
                format!("remove it, or move it above line {}", earlier.line),
            ));
        } else if let Some(earlier) =
            index.may_meet(later, rules).find(|e| e.action != later.action && intersects(e, later) && !covers(later, e))
        {
            out.push(warning(
                later.line,
                format!(
                    "this rule overlaps line {} ({}): where both match, line {} decides",
                    earlier.line, earlier.action, earlier.line
                ),
                "split the rules so they do not overlap, or order them from the most specific to the most general"
                    .to_string(),
            ));
        }
        index.add(j, later);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const WEB: &str = "\
# A web host.
customer acme
default drop

set web = 80, 443
set office = 198.51.100.0/24, 2001:db8:51::/48

allow tcp port @web                       # the websites
allow tcp port 22 from @office            # ssh from the office only
allow icmp type echo-request
allow icmpv6
rate-limit 10/s burst 20 tcp port 25
reject udp port 1-1023 to 203.0.113.10
allow out
";

    fn errors(text: &str) -> Vec<String> {
        parse("t.rules", text).expect_err("must fail").iter().map(ToString::to_string).collect()
    }

    #[test]
    fn worked_example_parses() {
        let (r, warnings) = parse("web.rules", WEB).expect("valid");
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(r.customer, "acme");
        assert_eq!(r.default, Action::Drop);
        assert_eq!(r.rules.len(), 7);
        assert_eq!(r.rules[0].ports, vec![(80, 80), (443, 443)]);
        assert_eq!(r.rules[0].comment, "the websites");
        assert_eq!(r.rules[1].from.len(), 2);
        assert_eq!(r.rules[2].icmp_type, Some(8));
        assert_eq!(r.rules[4].action, Action::RateLimit { rate: 10, burst: 20 });
        assert_eq!(r.rules[5].to, vec![Cidr { addr: "203.0.113.10".parse::<IpAddr>().expect("ip"), len: 32 }]);
        assert_eq!(r.rules[6].direction, Direction::Out);
        assert_eq!(r.rules[5].line, 13);
    }

    #[test]
    fn every_error_is_located() {
        let text = "customer acme\ndefault drop\nallow tcp port 99999\nallow udp from 198.51.100.1/24\nallow tcp port @nope\nallow icmp type frobnicate\nallow port 80\npermit tcp\n";
        assert_eq!(
            errors(text),
            vec![
                "t.rules:3:16: error: bad port \"99999\" (hint: a port is 1-65535; a range is LOW-HIGH)",
                "t.rules:4:16: error: bad CIDR \"198.51.100.1/24\" (hint: write ADDRESS or ADDRESS/LENGTH without host bits, e.g. 198.51.100.0/24)",
                "t.rules:5:16: error: unknown set @nope (hint: define it with `set NAME = ...` above its first use)",
                "t.rules:6:17: error: unknown ICMP type \"frobnicate\" (hint: echo-request, echo-reply, dest-unreachable, time-exceeded, packet-too-big or 0-255)",
                "t.rules:7:7: error: ports need a protocol with ports (hint: add tcp or udp to the rule)",
                "t.rules:8:1: error: unknown action \"permit\" (hint: allow, drop, reject or rate-limit)",
            ]
        );
    }

    #[test]
    fn missing_header_lines() {
        let e = errors("allow tcp\n");
        assert!(e[0].contains("no `customer` line"), "{e:?}");
        assert!(e[1].contains("no `default` line"), "{e:?}");
    }

    #[test]
    fn shadowed_rules_are_warned() {
        let (_, w) =
            parse("t.rules", "customer a\ndefault drop\nallow tcp\ndrop tcp port 22 from 198.51.100.0/24\ndrop udp\n")
                .expect("valid");
        assert_eq!(w.len(), 1);
        assert_eq!(
            w[0].to_string(),
            "t.rules:4:1: warning: this rule never matches: line 3 (allow) takes all its traffic first (hint: remove it, or move it above line 3)"
        );
    }

    #[test]
    fn partial_overlaps_with_another_action_are_warned() {
        let (_, w) = parse(
            "t.rules",
            "customer a\ndefault drop\nallow tcp port 20-80 from 198.51.100.0/25\n\
             drop tcp port 80-90 from 198.51.100.0/24\n\
             allow tcp port 80-90 from 198.51.0.0/16\n\
             allow tcp port 22 from 203.0.113.0/24\ndrop tcp port 22\ndrop udp port 22\n",
        )
        .expect("valid");
        let w: Vec<String> = w.iter().map(ToString::to_string).collect();
        assert_eq!(
            w,
            vec![
                "t.rules:4:1: warning: this rule overlaps line 3 (allow): where both match, line 3 decides \
                 (hint: split the rules so they do not overlap, or order them from the most specific to the most general)",
                "t.rules:7:1: warning: this rule overlaps line 3 (allow): where both match, line 3 decides \
                 (hint: split the rules so they do not overlap, or order them from the most specific to the most general)",
            ],
            "exceptions above the general rule (4 above 5, 6 above 7) and disjoint rules (8) are fine"
        );
    }

    #[test]
    fn set_kinds_do_not_mix() {
        let e = errors("customer a\ndefault drop\nset p = 80\nallow tcp from @p\n");
        assert_eq!(e, vec!["t.rules:4:16: error: @p is a set of ports, not of addresses"]);
    }
}

#[cfg(test)]
mod examples {
    /// The worked examples in rules/examples parse cleanly.
    #[test]
    fn examples_are_clean() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../rules/examples");
        let mut seen = 0;
        for entry in std::fs::read_dir(dir).expect("rules/examples") {
            let path = entry.expect("entry").path();
            let text = std::fs::read_to_string(&path).expect("read");
            let name = path.display().to_string();
            let (_, warnings) = super::parse(&name, &text).unwrap_or_else(|e| panic!("{e:?}"));
            assert!(warnings.is_empty(), "{warnings:?}");
            seen += 1;
        }
        assert_eq!(seen, 3);
    }
}
