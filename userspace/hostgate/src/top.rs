//! `hostgate top`: a live view of rates per VIP, backend, customer,
//! customer IP and firewall rule, from the daemon's control API (`/v1/vips`,
//! `/v1/rules/stats`) read once a period; rates are the difference of two
//! reads over the time between them. The pure part (rows, rates, sorting)
//! is separate from the terminal part so that it is unit-tested.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use hostgate_api::{Client, RulesStatus, VipView};
use ratatui::{
    crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers},
    layout::{Constraint, Layout},
    style::{Modifier, Style},
    text::Line,
    widgets::{Block, Row, Table},
    Frame,
};

/// What a row counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Vip,
    Backend,
    Customer,
    Ip,
    Rule,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Vip => "vip",
            Kind::Backend => "backend",
            Kind::Customer => "customer",
            Kind::Ip => "ip",
            Kind::Rule => "rule",
        }
    }
}

/// One counted object: its running totals and what is said about it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Counted {
    pub packets: u64,
    pub bytes: u64,
    /// Health of a backend, action of a rule, drops of a customer.
    pub detail: String,
}

/// Everything read at one instant, by (kind, name).
pub type Snapshot = BTreeMap<(Kind, String), Counted>;

/// The rows of one read of the API. Customers count what their rules
/// decided (all traffic the firewall judged for their IPs), with their
/// drops as the detail.
pub fn snapshot(vips: &[VipView], rules: &RulesStatus) -> Snapshot {
    let mut out = Snapshot::new();
    for v in vips {
        let c = Counted {
            packets: v.traffic.packets,
            bytes: v.traffic.bytes,
            detail: format!("{} backend(s)", v.backends.len()),
        };
        out.insert((Kind::Vip, v.vip.clone()), c);
        for b in &v.backends {
            let c = Counted {
                packets: b.traffic.packets,
                bytes: b.traffic.bytes,
                detail: format!("{} {}", b.mode, b.health),
            };
            out.insert((Kind::Backend, format!("{} -> {}", v.vip, b.backend)), c);
        }
    }
    for r in &rules.rules {
        let at = r.line.map_or_else(|| format!("{}:default", r.file), |l| format!("{}:{l}", r.file));
        let c = Counted { packets: r.packets, bytes: r.bytes, detail: format!("{} {}", r.direction, r.action) };
        out.insert((Kind::Rule, at), c);
        let customer = out.entry((Kind::Customer, r.customer.clone())).or_insert(Counted {
            packets: 0,
            bytes: 0,
            detail: String::new(),
        });
        customer.packets += r.packets;
        customer.bytes += r.bytes;
    }
    for t in &rules.ips {
        let c = Counted { packets: t.packets, bytes: t.bytes, detail: t.customer.clone() };
        out.insert((Kind::Ip, t.ip.clone()), c);
    }
    for (customer, drops) in &rules.drops {
        if let Some(c) = out.get_mut(&(Kind::Customer, customer.clone())) {
            c.detail = format!("{drops} dropped");
        }
    }
    out
}

/// A row of the view: totals now, rates since the previous read.
#[derive(Clone, Debug, PartialEq)]
pub struct RateRow {
    pub kind: Kind,
    pub name: String,
    pub pps: f64,
    pub bps: f64,
    pub packets: u64,
    pub bytes: u64,
    pub detail: String,
}

/// Rates between two reads `secs` apart. An object new since `prev` has no
/// rate yet; a counter that went backwards (rules re-applied, counters
/// zeroed) counts from zero.
pub fn rates(prev: &Snapshot, cur: &Snapshot, secs: f64) -> Vec<RateRow> {
    cur.iter()
        .map(|((kind, name), c)| {
            let (pps, bps) = match prev.get(&(*kind, name.clone())) {
                Some(p) if secs > 0.0 => {
                    let dp = c.packets.checked_sub(p.packets).unwrap_or(c.packets);
                    let db = c.bytes.checked_sub(p.bytes).unwrap_or(c.bytes);
                    (dp as f64 / secs, db as f64 * 8.0 / secs)
                }
                _ => (0.0, 0.0),
            };
            RateRow {
                kind: *kind,
                name: name.clone(),
                pps,
                bps,
                packets: c.packets,
                bytes: c.bytes,
                detail: c.detail.clone(),
            }
        })
        .collect()
}

/// The column the rows are ordered by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SortBy {
    /// Packets per second, highest first.
    Pps,
    /// Bits per second, highest first.
    Bps,
    /// Total packets, highest first.
    Packets,
    /// Name, A to Z.
    Name,
    /// Kind, then name.
    Kind,
}

impl SortBy {
    fn label(self) -> &'static str {
        match self {
            SortBy::Pps => "pkt/s",
            SortBy::Bps => "bit/s",
            SortBy::Packets => "packets",
            SortBy::Name => "name",
            SortBy::Kind => "kind",
        }
    }

    /// The key that selects it.
    pub fn from_key(c: char) -> Option<SortBy> {
        Some(match c {
            'p' => SortBy::Pps,
            'b' => SortBy::Bps,
            't' => SortBy::Packets,
            'n' => SortBy::Name,
            'k' => SortBy::Kind,
            _ => return None,
        })
    }
}

/// Orders rows by `by` (ties by kind and name, so the order is stable
/// from one refresh to the next), reversed if asked.
pub fn sort(rows: &mut [RateRow], by: SortBy, reverse: bool) {
    let by_name = |a: &RateRow, b: &RateRow| (a.kind, &a.name).cmp(&(b.kind, &b.name));
    rows.sort_by(|a, b| {
        let primary = match by {
            SortBy::Pps => b.pps.total_cmp(&a.pps),
            SortBy::Bps => b.bps.total_cmp(&a.bps),
            SortBy::Packets => b.packets.cmp(&a.packets),
            SortBy::Name => a.name.cmp(&b.name),
            SortBy::Kind => std::cmp::Ordering::Equal,
        };
        primary.then_with(|| by_name(a, b))
    });
    if reverse {
        rows.reverse();
    }
}

/// 1234567 -> `1.23M`.
pub fn human(v: f64) -> String {
    let (scaled, unit) = match v {
        v if v >= 1e9 => (v / 1e9, "G"),
        v if v >= 1e6 => (v / 1e6, "M"),
        v if v >= 1e3 => (v / 1e3, "k"),
        v => (v, ""),
    };
    if unit.is_empty() {
        format!("{scaled:.1}")
    } else {
        format!("{scaled:.2}{unit}")
    }
}

/// Which kinds are shown: all, or one.
fn kind_filter(n: u8) -> Option<Kind> {
    [None, Some(Kind::Vip), Some(Kind::Backend), Some(Kind::Customer), Some(Kind::Ip), Some(Kind::Rule)][n as usize % 6]
}

struct View {
    node: String,
    by: SortBy,
    reverse: bool,
    filter: u8,
    rows: Vec<RateRow>,
    error: Option<String>,
    period: Duration,
}

fn draw(f: &mut Frame, v: &View) {
    let [head, body, foot] =
        Layout::vertical([Constraint::Length(1), Constraint::Min(0), Constraint::Length(1)]).areas(f.area());
    let shown = kind_filter(v.filter).map_or("all", Kind::name);
    f.render_widget(
        Line::from(format!(
            "hostgate top - node {} - every {:.1}s - sorted by {}{} - showing {}",
            v.node,
            v.period.as_secs_f64(),
            v.by.label(),
            if v.reverse { " (reversed)" } else { "" },
            shown
        )),
        head,
    );
    let header = Row::new(["KIND", "NAME", "PKT/S", "BIT/S", "PACKETS", "BYTES", "DETAIL"])
        .style(Style::default().add_modifier(Modifier::BOLD | Modifier::REVERSED));
    let wanted = kind_filter(v.filter);
    let rows = v.rows.iter().filter(|r| wanted.is_none_or(|k| k == r.kind)).map(|r| {
        Row::new([
            r.kind.name().to_string(),
            r.name.clone(),
            human(r.pps),
            human(r.bps),
            r.packets.to_string(),
            r.bytes.to_string(),
            r.detail.clone(),
        ])
    });
    let widths = [
        Constraint::Length(8),
        Constraint::Min(30),
        Constraint::Length(9),
        Constraint::Length(9),
        Constraint::Length(12),
        Constraint::Length(14),
        Constraint::Length(22),
    ];
    f.render_widget(Table::new(rows, widths).header(header).block(Block::bordered()), body);
    let footer = match &v.error {
        Some(e) => format!("error: {e}"),
        None => "keys: p pkt/s  b bit/s  t packets  n name  k kind  r reverse  f filter kind  q quit".into(),
    };
    f.render_widget(Line::from(footer), foot);
}

async fn read(client: &Client) -> anyhow::Result<Snapshot> {
    let vips: Vec<VipView> = client.get(hostgate_api::VIPS).await?;
    let rules: RulesStatus = client.get(hostgate_api::RULES_STATS).await?;
    Ok(snapshot(&vips, &rules))
}

/// Runs the live view until `q`, Esc or Ctrl-C.
pub async fn run(client: &Client, period: Duration) -> anyhow::Result<()> {
    let status: hostgate_api::Status = client.get(hostgate_api::STATUS).await?;
    let mut terminal = ratatui::try_init().map_err(|e| anyhow::anyhow!("hostgate top needs a terminal: {e}"))?;
    // Keys are read on a thread of their own (crossterm's read blocks) and
    // handed over, so that a key press redraws at once, between refreshes.
    let (keys, mut pressed) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        while let Ok(ev) = event::read() {
            if keys.send(ev).is_err() {
                break;
            }
        }
    });
    let mut view =
        View { node: status.node, by: SortBy::Pps, reverse: false, filter: 0, rows: vec![], error: None, period };
    let mut prev: Option<(Instant, Snapshot)> = None;
    let mut tick = tokio::time::interval(period);
    let result = loop {
        tokio::select! {
            _ = tick.tick() => {
                match read(client).await {
                    Ok(cur) => {
                        let now = Instant::now();
                        let (at, last) = prev.take().unwrap_or((now, cur.clone()));
                        view.rows = rates(&last, &cur, now.duration_since(at).as_secs_f64());
                        view.error = None;
                        prev = Some((now, cur));
                    }
                    Err(e) => view.error = Some(format!("{e:#}")),
                }
            }
            ev = pressed.recv() => {
                let Some(Event::Key(k)) = ev else {
                    if ev.is_none() { break Ok(()); }
                    continue;
                };
                if k.kind != KeyEventKind::Press {
                    continue;
                }
                match k.code {
                    KeyCode::Char('q') | KeyCode::Esc => break Ok(()),
                    KeyCode::Char('c') if k.modifiers.contains(KeyModifiers::CONTROL) => break Ok(()),
                    KeyCode::Char('r') => view.reverse = !view.reverse,
                    KeyCode::Char('f') => view.filter = view.filter.wrapping_add(1) % 6,
                    KeyCode::Char(c) => {
                        if let Some(by) = SortBy::from_key(c) {
                            view.by = by;
                        }
                    }
                    _ => {}
                }
            }
        }
        sort(&mut view.rows, view.by, view.reverse);
        if let Err(e) = terminal.draw(|f| draw(f, &view)) {
            break Err(e.into());
        }
    };
    ratatui::restore();
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counted(packets: u64, bytes: u64) -> Counted {
        Counted { packets, bytes, detail: String::new() }
    }

    #[test]
    fn rates_are_differences_over_time() {
        let mut prev = Snapshot::new();
        prev.insert((Kind::Vip, "a".into()), counted(100, 1000));
        prev.insert((Kind::Rule, "r:3".into()), counted(50, 500));
        let mut cur = prev.clone();
        cur.insert((Kind::Vip, "a".into()), counted(300, 3000));
        cur.insert((Kind::Rule, "r:3".into()), counted(10, 100)); // counters zeroed by a new apply
        cur.insert((Kind::Backend, "new".into()), counted(7, 70)); // no previous read: no rate
        let rows = rates(&prev, &cur, 2.0);
        let get = |k: Kind, n: &str| rows.iter().find(|r| r.kind == k && r.name == n).cloned().expect("row");
        assert_eq!((get(Kind::Vip, "a").pps, get(Kind::Vip, "a").bps), (100.0, 8000.0));
        assert_eq!(get(Kind::Rule, "r:3").pps, 5.0);
        assert_eq!(get(Kind::Backend, "new").pps, 0.0);
    }

    #[test]
    fn sorting_by_rate_or_name_and_reversed() {
        let row = |name: &str, pps: f64| RateRow {
            kind: Kind::Rule,
            name: name.into(),
            pps,
            bps: 0.0,
            packets: 0,
            bytes: 0,
            detail: String::new(),
        };
        let mut rows = vec![row("a:3", 1.0), row("a:4", 9.0), row("a:5", 1.0)];
        sort(&mut rows, SortBy::Pps, false);
        assert_eq!(rows.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(), ["a:4", "a:3", "a:5"]);
        sort(&mut rows, SortBy::Name, false);
        assert_eq!(rows.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(), ["a:3", "a:4", "a:5"]);
        sort(&mut rows, SortBy::Name, true);
        assert_eq!(rows.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(), ["a:5", "a:4", "a:3"]);
    }

    #[test]
    fn customers_sum_their_rules() {
        let rule = |line, packets| hostgate_api::RuleStats {
            id: 0,
            customer: "acme".into(),
            file: "acme.rules".into(),
            line,
            direction: "in".into(),
            action: "drop".into(),
            packets,
            bytes: packets * 100,
        };
        let rules = RulesStatus {
            rules_dir: None,
            applied_at: None,
            last_errors: vec![],
            rules: vec![rule(Some(3), 5), rule(None, 2)],
            drops: [("acme".to_string(), 5)].into(),
            ips: vec![hostgate_api::IpTraffic {
                ip: "203.0.113.10".into(),
                customer: "acme".into(),
                packets: 7,
                bytes: 700,
            }],
        };
        let s = snapshot(&[], &rules);
        assert_eq!(s[&(Kind::Customer, "acme".into())], Counted { packets: 7, bytes: 700, detail: "5 dropped".into() });
        assert!(s.contains_key(&(Kind::Rule, "acme.rules:default".into())));
        assert_eq!(s[&(Kind::Ip, "203.0.113.10".into())].packets, 7);
    }

    #[test]
    fn human_units() {
        assert_eq!(human(12.0), "12.0");
        assert_eq!(human(1_234_567.0), "1.23M");
    }
}
