//! RFC 1035 master files (zone files), in and out.
//!
//! Read: `$ORIGIN`, `$TTL`, absolute and relative names, `@`, an omitted
//! owner (a line starting with blank space: the previous owner), omitted
//! TTL and class in either order, parentheses across lines, quoted
//! strings with `\X` and `\DDD` escapes, `;` comments, TTLs with units
//! (`1h30m`, `2w`). `$INCLUDE` and `$GENERATE` are refused: a zone is one
//! self-contained text the store can hold. Parsing is all or nothing: the
//! zone, or every error found (each naming `file:line`).
//!
//! A record without a TTL takes `$TTL`, else the previous record's TTL
//! (RFC 1035 §5.1), else it is an error: we never guess from the SOA.
//!
//! Write: [`export`] writes the canonical form this parser reads back to
//! an equal zone: absolute names, one record per line, SOA first.

use std::fmt::Write as _;
use std::net::{Ipv4Addr, Ipv6Addr};

use hickory_proto::rr::{
    rdata::{CAA, CNAME, MX, NS, PTR, SOA, SRV, TXT},
    DNSClass, Name, RData, Record, RecordType,
};

use crate::zone::{in_class, Zone, SUPPORTED_TYPES};

/// At most this many errors are listed; a wrong file usually repeats one.
const MAX_ERRORS: usize = 100;

/// One problem in a file. `line` 0 is about the whole file.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.render())]
pub struct MasterError {
    pub file: String,
    pub line: usize,
    pub message: String,
}

impl MasterError {
    fn render(&self) -> String {
        match self.line {
            0 => format!("{}: {}", self.file, self.message),
            n => format!("{}:{}: {}", self.file, n, self.message),
        }
    }
}

/// A lexical token: text as written (escapes kept, for names), or a quoted
/// string already unescaped.
#[derive(Clone, Debug)]
enum Token {
    Word(String),
    Quoted(Vec<u8>),
}

/// One logical entry: its tokens, its first line, and whether that line
/// began with blank space (owner omitted).
#[derive(Debug)]
struct Entry {
    line: usize,
    blank_owner: bool,
    tokens: Vec<Token>,
}

/// Splits a file into entries, honouring comments, quotes and
/// parentheses.
fn lex(text: &str) -> Result<Vec<Entry>, (usize, String)> {
    let mut entries = Vec::new();
    let mut current: Option<Entry> = None;
    let mut depth = 0usize;
    let mut chars = text.chars().peekable();
    let mut line = 1usize;
    let mut at_line_start = true;
    let mut open_line = 0;
    while let Some(c) = chars.next() {
        if at_line_start && depth == 0 {
            if let Some(e) = current.take().filter(|e| !e.tokens.is_empty()) {
                entries.push(e);
            }
            current = Some(Entry { line, blank_owner: c == ' ' || c == '\t', tokens: Vec::new() });
        }
        at_line_start = false;
        let entry = current.get_or_insert_with(|| Entry { line, blank_owner: false, tokens: Vec::new() });
        match c {
            '\n' => {
                line += 1;
                at_line_start = true;
            }
            ' ' | '\t' | '\r' => {}
            ';' => {
                while chars.peek().is_some_and(|c| *c != '\n') {
                    chars.next();
                }
            }
            '(' => {
                if depth == 0 {
                    open_line = line;
                }
                depth += 1;
            }
            ')' => {
                depth = depth.checked_sub(1).ok_or((line, "')' without '('".to_string()))?;
            }
            '"' => entry.tokens.push(Token::Quoted(quoted(&mut chars, line)?)),
            _ => entry.tokens.push(Token::Word(word(c, &mut chars))),
        }
    }
    if depth > 0 {
        return Err((open_line, "'(' never closed".to_string()));
    }
    entries.extend(current.filter(|e| !e.tokens.is_empty()));
    Ok(entries)
}

/// The rest of an unquoted word; escapes are kept as written.
fn word(first: char, chars: &mut std::iter::Peekable<std::str::Chars<'_>>) -> String {
    let mut s = String::from(first);
    let mut escaped = first == '\\';
    while let Some(&c) = chars.peek() {
        if !escaped && matches!(c, ' ' | '\t' | '\r' | '\n' | ';' | '(' | ')' | '"') {
            break;
        }
        if escaped && c == '\n' {
            break;
        }
        escaped = !escaped && c == '\\';
        s.push(c);
        chars.next();
    }
    s
}

/// A quoted string's bytes, unescaped; it must end on its line.
fn quoted(chars: &mut std::iter::Peekable<std::str::Chars<'_>>, line: usize) -> Result<Vec<u8>, (usize, String)> {
    let mut raw = String::new();
    loop {
        match chars.next() {
            None | Some('\n') => return Err((line, "quoted string not closed on its line".into())),
            Some('"') => break,
            Some('\\') => {
                raw.push('\\');
                match chars.next() {
                    None | Some('\n') => return Err((line, "quoted string not closed on its line".into())),
                    Some(c) => raw.push(c),
                }
            }
            Some(c) => raw.push(c),
        }
    }
    unescape(&raw).map_err(|m| (line, m))
}

/// Resolves `\X` and `\DDD` (decimal) escapes.
fn unescape(s: &str) -> Result<Vec<u8>, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'\\' {
            out.push(bytes[i]);
            i += 1;
            continue;
        }
        let digits = bytes.get(i + 1..i + 4).filter(|d| d.iter().all(u8::is_ascii_digit));
        if let Some(d) = digits {
            let v = d.iter().fold(0u32, |acc, b| acc * 10 + u32::from(b - b'0'));
            out.push(u8::try_from(v).map_err(|_| format!("escape \\{} is above 255", v))?);
            i += 4;
        } else {
            let c = bytes.get(i + 1).ok_or("a '\\' ends the text")?;
            out.push(*c);
            i += 2;
        }
    }
    Ok(out)
}

/// Parser state across entries.
struct State {
    origin: Name,
    default_ttl: Option<u32>,
    last_ttl: Option<u32>,
    last_owner: Option<Name>,
}

/// Parses a zone file for `origin`. `file` only names the source in
/// errors.
pub fn parse(text: &str, file: &str, origin: &Name) -> Result<Zone, Vec<MasterError>> {
    let err = |line: usize, message: String| MasterError { file: file.to_string(), line, message };
    let entries = lex(text).map_err(|(line, m)| vec![err(line, m)])?;
    let mut state = State { origin: origin.clone(), default_ttl: None, last_ttl: None, last_owner: None };
    let mut records = Vec::new();
    let mut lines = Vec::new();
    let mut errors = Vec::new();
    for entry in &entries {
        match state.entry(entry) {
            Ok(Some(record)) => {
                records.push(record);
                lines.push(entry.line);
            }
            Ok(None) => {}
            Err(m) => errors.push(err(entry.line, m)),
        }
    }
    if errors.is_empty() {
        return Zone::new(origin.clone(), records).map_err(|zone_errors| {
            let line_of = |i: Option<usize>| i.and_then(|i| lines.get(i).copied()).unwrap_or(0);
            zone_errors.into_iter().map(|e| err(line_of(e.record), e.problem.to_string())).collect()
        });
    }
    if errors.len() > MAX_ERRORS {
        let more = errors.len() - MAX_ERRORS;
        errors.truncate(MAX_ERRORS);
        errors.push(err(0, format!("and {more} more errors")));
    }
    Err(errors)
}

/// One record in master format (`owner [ttl] [IN] type data`), names
/// relative to `origin`; without a TTL it takes `default_ttl`. For the
/// daemon's `dns record add|rm`, which edit a zone one record at a time.
pub fn parse_record(line: &str, origin: &Name, default_ttl: u32) -> Result<Record, String> {
    let entries = lex(line).map_err(|(_, m)| m)?;
    let [entry] = &entries[..] else { return Err("expected exactly one record".into()) };
    let mut state = State { origin: origin.clone(), default_ttl: Some(default_ttl), last_ttl: None, last_owner: None };
    state.entry(entry)?.ok_or_else(|| "a directive, not a record".to_string())
}

impl State {
    /// A directive (`None`) or a record.
    fn entry(&mut self, entry: &Entry) -> Result<Option<Record>, String> {
        let mut tokens = entry.tokens.iter().peekable();
        let owner = if entry.blank_owner {
            self.last_owner.clone().ok_or("no owner, and no previous record to take it from")?
        } else {
            let first = word_of(tokens.next())?;
            if first.starts_with('$') {
                self.directive(first, tokens.collect())?;
                return Ok(None);
            }
            self.name(first)?
        };
        self.last_owner = Some(owner.clone());
        let mut ttl = None;
        let mut class_seen = false;
        let rtype = loop {
            let t = word_of(tokens.next()).map_err(|_| "no record type".to_string())?;
            if ttl.is_none() && t.starts_with(|c: char| c.is_ascii_digit()) {
                ttl = Some(parse_ttl(t)?);
            } else if !class_seen && is_class(t) {
                if !t.eq_ignore_ascii_case("IN") {
                    return Err(format!("class {t} is not supported (only IN)"));
                }
                class_seen = true;
            } else {
                break parse_type(t)?;
            }
        };
        let ttl = match ttl.or(self.default_ttl).or(self.last_ttl) {
            Some(t) => t,
            None => return Err("no TTL, no $TTL and no previous TTL".into()),
        };
        self.last_ttl = Some(ttl);
        let rest: Vec<&Token> = tokens.collect();
        let data = self.rdata(rtype, &rest).map_err(|m| format!("{rtype}: {m}"))?;
        Ok(Some(in_class(Record::from_rdata(owner, ttl, data))))
    }

    fn directive(&mut self, name: &str, args: Vec<&Token>) -> Result<(), String> {
        match name.to_ascii_uppercase().as_str() {
            "$ORIGIN" => {
                let [arg] = args[..] else { return Err("$ORIGIN takes one name".into()) };
                self.origin = self.name(word_of(Some(arg))?)?;
            }
            "$TTL" => {
                let [arg] = args[..] else { return Err("$TTL takes one TTL".into()) };
                self.default_ttl = Some(parse_ttl(word_of(Some(arg))?)?);
            }
            "$INCLUDE" => return Err("$INCLUDE is not supported: put the records in this file".into()),
            "$GENERATE" => return Err("$GENERATE is not supported: write the records out".into()),
            other => return Err(format!("unknown directive {other}")),
        }
        Ok(())
    }

    /// A name in the file: `@`, absolute, or relative to `$ORIGIN`.
    fn name(&self, text: &str) -> Result<Name, String> {
        parse_name(text, &self.origin)
    }

    fn rdata(&self, rtype: RecordType, t: &[&Token]) -> Result<RData, String> {
        let words = || t.iter().map(|t| word_of(Some(t))).collect::<Result<Vec<_>, _>>();
        let data = match rtype {
            RecordType::A => RData::A(one(&words()?)?.parse::<Ipv4Addr>().map_err(|e| e.to_string())?.into()),
            RecordType::AAAA => RData::AAAA(one(&words()?)?.parse::<Ipv6Addr>().map_err(|e| e.to_string())?.into()),
            RecordType::CNAME => RData::CNAME(CNAME(self.name(one(&words()?)?)?)),
            RecordType::NS => RData::NS(NS(self.name(one(&words()?)?)?)),
            RecordType::PTR => RData::PTR(PTR(self.name(one(&words()?)?)?)),
            RecordType::MX => match words()?[..] {
                [pref, exchange] => RData::MX(MX::new(number(pref)?, self.name(exchange)?)),
                _ => return Err("expected: preference exchange".into()),
            },
            RecordType::SRV => match words()?[..] {
                [prio, weight, port, target] => {
                    RData::SRV(SRV::new(number(prio)?, number(weight)?, number(port)?, self.name(target)?))
                }
                _ => return Err("expected: priority weight port target".into()),
            },
            RecordType::TXT => RData::TXT(txt(t)?),
            RecordType::CAA => RData::CAA(caa(t)?),
            RecordType::SOA => RData::SOA(self.soa(&words()?)?),
            other => return Err(format!("record type {other} is not supported")),
        };
        Ok(data)
    }

    fn soa(&self, w: &[&str]) -> Result<SOA, String> {
        let [mname, rname, serial, refresh, retry, expire, minimum] = w[..] else {
            return Err("expected: mname rname serial refresh retry expire minimum".into());
        };
        let timer = |t: &str| parse_ttl(t).and_then(|v| i32::try_from(v).map_err(|e| e.to_string()));
        Ok(SOA::new(
            self.name(mname)?,
            self.name(rname)?,
            number(serial)?,
            timer(refresh)?,
            timer(retry)?,
            timer(expire)?,
            parse_ttl(minimum)?,
        ))
    }
}

fn word_of(t: Option<&Token>) -> Result<&str, String> {
    match t {
        Some(Token::Word(w)) => Ok(w),
        Some(Token::Quoted(_)) => Err("a quoted string where a plain value belongs".into()),
        None => Err("missing field".into()),
    }
}

fn one<'a>(w: &[&'a str]) -> Result<&'a str, String> {
    match w {
        [x] => Ok(x),
        _ => Err(format!("expected one value, found {}", w.len())),
    }
}

fn number<T: std::str::FromStr>(s: &str) -> Result<T, String> {
    s.parse().map_err(|_| format!("{s:?} is not a valid number here"))
}

fn is_class(t: &str) -> bool {
    ["IN", "CH", "CS", "HS", "ANY"].iter().any(|c| t.eq_ignore_ascii_case(c))
}

fn parse_type(t: &str) -> Result<RecordType, String> {
    let rtype: RecordType = t.to_ascii_uppercase().parse().map_err(|_| format!("unknown record type {t}"))?;
    if SUPPORTED_TYPES.contains(&rtype) {
        Ok(rtype)
    } else {
        Err(format!("record type {t} is not supported"))
    }
}

/// A TTL: seconds, or BIND-style units (`1w2d3h4m5s`); at most 2^31 - 1
/// (RFC 2181 §8).
pub fn parse_ttl(s: &str) -> Result<u32, String> {
    let bad = || format!("{s:?} is not a TTL");
    if !s.starts_with(|c: char| c.is_ascii_digit()) {
        return Err(bad());
    }
    let mut total: u64 = 0;
    let mut value: u64 = 0;
    let mut digits = false;
    for c in s.chars() {
        if let Some(d) = c.to_digit(10) {
            value = value.checked_mul(10).and_then(|v| v.checked_add(u64::from(d))).ok_or_else(bad)?;
            digits = true;
            continue;
        }
        let unit = match c.to_ascii_lowercase() {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86400,
            'w' => 604800,
            _ => return Err(bad()),
        };
        if !digits {
            return Err(bad());
        }
        total = total.saturating_add(value.saturating_mul(unit));
        value = 0;
        digits = false;
    }
    total = total.saturating_add(value);
    u32::try_from(total).ok().filter(|t| *t <= i32::MAX as u32).ok_or_else(|| format!("{s:?}: TTL above 2^31-1"))
}

/// A name: `@` is the origin; a name without a final dot is relative.
pub fn parse_name(text: &str, origin: &Name) -> Result<Name, String> {
    if text == "@" {
        return Ok(origin.clone());
    }
    let (labels, absolute) = split_labels(text)?;
    let name = Name::from_labels(labels).map_err(|e| format!("{text:?}: {e}"))?;
    if absolute {
        return Ok(name);
    }
    let mut relative = name;
    relative.set_fqdn(false);
    relative.append_domain(origin).map_err(|e| format!("{text:?}: {e}"))
}

/// Labels of a presentation-format name, escapes resolved, and whether it
/// ended with a dot.
fn split_labels(text: &str) -> Result<(Vec<Vec<u8>>, bool), String> {
    if text == "." {
        return Ok((Vec::new(), true));
    }
    let bytes = text.as_bytes();
    let mut labels = Vec::new();
    let mut current = String::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => {
                let len = if bytes.get(i + 1).is_some_and(u8::is_ascii_digit) { 4 } else { 2 };
                current.push_str(text.get(i..i + len).ok_or_else(|| format!("{text:?}: bad escape"))?);
                i += len;
                continue;
            }
            b'.' => {
                if current.is_empty() {
                    return Err(format!("{text:?}: empty label"));
                }
                labels.push(unescape(&current).map_err(|e| format!("{text:?}: {e}"))?);
                current.clear();
            }
            _ => {
                let c = text.get(i..).and_then(|t| t.chars().next()).ok_or("bad text")?;
                current.push(c);
                i += c.len_utf8();
                continue;
            }
        }
        i += 1;
    }
    let absolute = current.is_empty();
    if !absolute {
        labels.push(unescape(&current).map_err(|e| format!("{text:?}: {e}"))?);
    }
    if labels.iter().flatten().any(|b| !b.is_ascii()) {
        return Err(format!("{text:?}: non-ASCII in a name (write IDNs as punycode)"));
    }
    Ok((labels, absolute))
}

/// One or more character-strings, quoted or not, each at most 255 bytes.
fn txt(t: &[&Token]) -> Result<TXT, String> {
    if t.is_empty() {
        return Err("no text".into());
    }
    let strings = t.iter().map(|t| character_string(t)).collect::<Result<Vec<_>, _>>()?;
    Ok(TXT::from_bytes(strings.iter().map(Vec::as_slice).collect()))
}

fn character_string(t: &Token) -> Result<Vec<u8>, String> {
    let bytes = match t {
        Token::Quoted(b) => b.clone(),
        Token::Word(w) => unescape(w)?,
    };
    if bytes.len() > 255 {
        return Err(format!("a character-string of {} bytes (at most 255; split it)", bytes.len()));
    }
    Ok(bytes)
}

/// `flags tag value` (RFC 8659 §4.1.1).
fn caa(t: &[&Token]) -> Result<CAA, String> {
    let [flags, tag, value] = t else { return Err("expected: flags tag value".into()) };
    let flags: u8 = number(word_of(Some(flags))?)?;
    let tag = word_of(Some(tag))?;
    if tag.is_empty() || tag.len() > 15 || !tag.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(format!("CAA tag {tag:?}: 1 to 15 letters and digits"));
    }
    let value = match value {
        Token::Quoted(b) => b.clone(),
        Token::Word(w) => unescape(w)?,
    };
    let mut caa = CAA::new_issue(false, None, Vec::new());
    caa.issuer_critical = flags & 0x80 != 0;
    caa.reserved_flags = flags & 0x7f;
    caa.tag = tag.to_string();
    caa.value = value;
    Ok(caa)
}

/// A name in presentation format with decimal escapes (hickory's own
/// writer uses octal for `\DDD`, which RFC 1035 readers misread).
pub fn name_text(name: &Name) -> String {
    let mut out = String::new();
    for label in name.iter() {
        for &b in label {
            match b {
                b'.' | b';' | b'(' | b')' | b'"' | b'\\' | b'@' | b'$' => {
                    out.push('\\');
                    out.push(char::from(b));
                }
                0x21..=0x7e => out.push(char::from(b)),
                _ => {
                    let _ = write!(out, "\\{b:03}");
                }
            }
        }
        out.push('.');
    }
    if out.is_empty() {
        out.push('.');
    }
    out
}

/// A quoted character-string.
fn quote(bytes: &[u8]) -> String {
    let mut out = String::from('"');
    for &b in bytes {
        match b {
            b'"' | b'\\' => {
                out.push('\\');
                out.push(char::from(b));
            }
            0x20..=0x7e => out.push(char::from(b)),
            _ => {
                let _ = write!(out, "\\{b:03}");
            }
        }
    }
    out.push('"');
    out
}

/// The presentation form of the data of the types a zone may hold.
pub fn rdata_text(data: &RData) -> String {
    match data {
        RData::A(a) => a.to_string(),
        RData::AAAA(a) => a.to_string(),
        RData::CNAME(n) => name_text(&n.0),
        RData::NS(n) => name_text(&n.0),
        RData::PTR(n) => name_text(&n.0),
        RData::MX(mx) => format!("{} {}", mx.preference, name_text(&mx.exchange)),
        RData::SRV(s) => format!("{} {} {} {}", s.priority, s.weight, s.port, name_text(&s.target)),
        RData::TXT(t) => t.txt_data.iter().map(|s| quote(s)).collect::<Vec<_>>().join(" "),
        RData::CAA(c) => format!("{} {} {}", c.flags(), c.tag, quote(&c.value)),
        RData::SOA(s) => format!(
            "{} {} {} {} {} {} {}",
            name_text(&s.mname),
            name_text(&s.rname),
            s.serial,
            s.refresh,
            s.retry,
            s.expire,
            s.minimum
        ),
        other => other.to_string(),
    }
}

/// The zone in canonical master format.
pub fn export(zone: &Zone) -> String {
    let mut out = format!("$ORIGIN {}\n", name_text(zone.origin()));
    for record in zone.records() {
        let _ = writeln!(
            out,
            "{} {} {} {} {}",
            name_text(&record.name),
            record.ttl,
            DNSClass::IN,
            record.record_type(),
            rdata_text(&record.data)
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::str::FromStr;

    fn origin() -> Name {
        Name::from_str("example.com.").unwrap()
    }

    fn messages(text: &str) -> Vec<String> {
        match parse(text, "t.zone", &origin()) {
            Ok(_) => vec![],
            Err(e) => e.iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn one_record_at_a_time() {
        let r = parse_record("www 60 IN A 198.51.100.2", &origin(), 300).unwrap();
        assert_eq!((r.name.to_string().as_str(), r.ttl), ("www.example.com.", 60));
        let r = parse_record("@ TXT \"a b\" c", &origin(), 300).unwrap();
        assert_eq!(
            (r.name.to_string().as_str(), r.ttl, rdata_text(&r.data).as_str()),
            ("example.com.", 300, "\"a b\" \"c\"")
        );
        assert!(parse_record("www A 198.51.100.300", &origin(), 300).unwrap_err().contains("A:"));
        assert!(parse_record("www A 198.51.100.2\nx A 198.51.100.3", &origin(), 300).is_err());
        assert!(parse_record("$TTL 60", &origin(), 300).is_err());
    }

    const HEAD: &str =
        "$TTL 1h\n@ IN SOA ns1 hostmaster ( 1 2h 15m 2w\n 5m ) ; the SOA\n  NS ns1\nns1 A 198.51.100.1\n";

    #[test]
    fn the_syntax_of_rfc_1035() {
        let text = format!(
            "{HEAD}www 300 IN A 198.51.100.2\n IN 60 AAAA 2001:db8::2 ; same owner\n\
             WWW.example.com. 300 A 198.51.100.3\n\
             $ORIGIN sub2.example.com.\nhost A 203.0.113.5\n\
             txt TXT \"a \\\"quoted\\\" \\065 string;\" bare\\032word\n\
             @ CAA 0 issue \"ca.example.net\"\n\
             srv SRV 10 5 443 host\nmx MX 10 @\nptr PTR host.example.com.\n"
        );
        let zone = parse(&text, "t.zone", &origin()).unwrap_or_else(|e| panic!("{e:?}"));
        let find = |owner: &str, t: RecordType| {
            let owner = Name::from_str(owner).unwrap();
            zone.rrsets().find(|(o, ty, _)| **o == owner && *ty == t).map(|(_, _, s)| s.clone())
        };
        let www = find("www.example.com.", RecordType::A).unwrap();
        assert_eq!((www.ttl, www.data.len()), (300, 2), "names are case-insensitive");
        assert_eq!(find("www.example.com.", RecordType::AAAA).unwrap().ttl, 60);
        assert_eq!(find("host.sub2.example.com.", RecordType::A).unwrap().ttl, 3600, "$TTL");
        let txt = find("txt.sub2.example.com.", RecordType::TXT).unwrap();
        let RData::TXT(t) = &txt.data[0] else { panic!() };
        assert_eq!(&*t.txt_data[0], b"a \"quoted\" A string;");
        assert_eq!(&*t.txt_data[1], b"bare word");
        let RData::MX(mx) = &find("mx.sub2.example.com.", RecordType::MX).unwrap().data[0] else { panic!() };
        assert_eq!(mx.exchange, Name::from_str("sub2.example.com.").unwrap());
        assert_eq!(zone.soa().minimum, 300);
        assert_eq!(zone.soa().expire, 1209600);
    }

    #[test]
    fn errors_name_file_and_line_and_nothing_is_half_loaded() {
        let text = format!("{HEAD}www A 198.51.100.300\n\nftp CNAME www\nftp A 198.51.100.4\n");
        assert_eq!(messages(&text)[..1], ["t.zone:6: A: invalid IPv4 address syntax".to_string()]);
        let text = format!("{HEAD}ftp CNAME www\nftp A 198.51.100.4\n");
        assert_eq!(messages(&text), ["t.zone:6: ftp.example.com. has a CNAME and other data (A)"]);
    }

    #[test]
    fn includes_generates_and_strangers_are_refused() {
        assert_eq!(
            messages(&format!("{HEAD}$INCLUDE other.zone\n"))[0],
            "t.zone:6: $INCLUDE is not supported: put the records in this file"
        );
        assert!(
            messages(&format!("{HEAD}$GENERATE 1-10 h$ A 198.51.100.$\n"))[0].contains("$GENERATE is not supported")
        );
        assert!(messages(&format!("{HEAD}x HINFO a b\n"))[0].contains("t.zone:6: record type HINFO is not supported"));
        assert!(messages(&format!("{HEAD}x CH TXT a\n"))[0].contains("class CH"));
        assert!(messages(&format!("{HEAD}x A ( 198.51.100.1\n"))[0].starts_with("t.zone:6: '(' never closed"));
        assert!(messages(&format!("{HEAD}x TXT \"open\n"))[0].starts_with("t.zone:6: quoted string"));
        assert!(messages("www A 198.51.100.1\n")[0].contains("no TTL"));
        assert_eq!(messages("$TTL 60\nwww A 198.51.100.1\n"), ["t.zone: no SOA record at the apex"]);
        assert!(messages(&format!("{HEAD}www.example.net. A 198.51.100.1\n"))[0]
            .starts_with("t.zone:6: www.example.net. is outside"));
    }

    #[test]
    fn export_is_canonical() {
        let text = format!("{HEAD}www 300 A 198.51.100.2\nt TXT \"a\\\"b\" c\\010\n");
        let zone = parse(&text, "t.zone", &origin()).unwrap();
        let lines: Vec<String> = export(&zone).lines().map(str::to_string).collect();
        assert_eq!(
            lines,
            [
                "$ORIGIN example.com.",
                "example.com. 3600 IN SOA ns1.example.com. hostmaster.example.com. 1 7200 900 1209600 300",
                "example.com. 3600 IN NS ns1.example.com.",
                "ns1.example.com. 3600 IN A 198.51.100.1",
                "t.example.com. 3600 IN TXT \"a\\\"b\" \"c\\010\"",
                "www.example.com. 300 IN A 198.51.100.2",
            ]
        );
    }

    #[test]
    fn ttls_with_units() {
        assert_eq!(parse_ttl("1h30m"), Ok(5400));
        assert_eq!(parse_ttl("2W"), Ok(1209600));
        assert_eq!(parse_ttl("300"), Ok(300));
        assert!(parse_ttl("h").is_err());
        assert!(parse_ttl("99999999999").is_err());
    }

    fn label() -> impl Strategy<Value = String> {
        prop_oneof!["[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?", Just("*".to_string()), Just("We\\.ird\\032".to_string()),]
    }

    fn owner() -> impl Strategy<Value = String> {
        proptest::collection::vec(label(), 0..3).prop_map(|l| {
            l.into_iter().filter(|l| l != "*").map(|l| format!("{l}.")).collect::<String>() + "example.com."
        })
    }

    fn rdata() -> impl Strategy<Value = (String, String)> {
        prop_oneof![
            any::<[u8; 4]>().prop_map(|a| ("A".into(), std::net::Ipv4Addr::from(a).to_string())),
            any::<[u16; 8]>().prop_map(|a| ("AAAA".into(), std::net::Ipv6Addr::from(a).to_string())),
            (any::<u16>(), owner()).prop_map(|(p, n)| ("MX".into(), format!("{p} {n}"))),
            proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 1..4)
                .prop_map(|s| ("TXT".into(), s.iter().map(|s| quote(s)).collect::<Vec<_>>().join(" "))),
            (any::<u16>(), any::<u16>(), any::<u16>(), owner())
                .prop_map(|(a, b, c, n)| ("SRV".into(), format!("{a} {b} {c} {n}"))),
            (prop_oneof![Just(0u8), Just(128u8)], "[a-z]{1,10}", proptest::collection::vec(any::<u8>(), 0..30))
                .prop_map(|(f, t, v)| ("CAA".into(), format!("{f} {t} {}", quote(&v)))),
            owner().prop_map(|n| ("PTR".into(), n)),
        ]
    }

    /// Zone-file-ish text: the tokens that steer the lexer, mixed.
    fn zoneish() -> impl Strategy<Value = String> {
        let piece = prop_oneof![
            Just("@".to_string()),
            Just(" ".to_string()),
            Just("\n".to_string()),
            Just("(".to_string()),
            Just(")".to_string()),
            Just("\"".to_string()),
            Just(";".to_string()),
            Just("\\".to_string()),
            Just("$ORIGIN".to_string()),
            Just("$TTL".to_string()),
            Just("IN".to_string()),
            Just("SOA".to_string()),
            Just("TXT".to_string()),
            Just("CAA".to_string()),
            Just("MX".to_string()),
            Just(".".to_string()),
            "[a-z0-9*-]{1,8}",
            "[0-9]{1,12}",
            "\\\\[0-9]{1,3}",
            any::<char>().prop_map(String::from),
        ];
        proptest::collection::vec(piece, 0..60).prop_map(|p| p.concat())
    }

    proptest! {
        /// Whatever the text, the parser returns (a zone or errors).
        #[test]
        fn any_text_parses_or_errs_without_panicking(text in zoneish()) {
            let _ = parse(&format!("{HEAD}{text}"), "fuzz", &origin());
            let _ = parse(&text, "fuzz", &origin());
        }

        /// export -> parse gives the same zone, and exporting again the same text.
        #[test]
        fn export_then_parse_round_trips(
            records in proptest::collection::vec((owner(), 0u32..100000, rdata()), 0..20),
            serial in any::<u32>(),
        ) {
            let mut text = format!("$TTL 60\n@ SOA ns1 h.ostmaster {serial} 1 2 3 4\n NS ns1.example.net.\n");
            let mut seen = std::collections::HashMap::new();
            for (owner, ttl, (rtype, data)) in &records {
                // one TTL per RRset, as the model requires
                let ttl = *seen.entry((owner.to_ascii_lowercase(), rtype.clone())).or_insert(*ttl);
                text.push_str(&format!("{owner} {ttl} IN {rtype} {data}\n"));
            }
            let zone = parse(&text, "gen", &origin()).map_err(|e| TestCaseError::fail(format!("{e:?}\n{text}")))?;
            let exported = export(&zone);
            let again = parse(&exported, "export", &origin()).map_err(|e| TestCaseError::fail(format!("{e:?}\n{exported}")))?;
            prop_assert_eq!(&again, &zone);
            prop_assert_eq!(export(&again), exported);
        }
    }
}
