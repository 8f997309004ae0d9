//! The messages a runtime actually sent, for the demo's sequence diagram and for tests that
//! check which flow ran. Each event names the hop (who sent it to whom on which link), the
//! message, and whether it travelled sealed on the PAN.

use std::fmt::Write;
use std::time::Instant;

use tokio::sync::mpsc;

/// One message on one hop.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TraceEvent {
    /// When it was sent.
    pub at: Instant,
    /// The node that sent it.
    pub sender: String,
    /// The node it was sent to.
    pub receiver: String,
    /// The message name.
    pub message: &'static str,
    /// The original sender when the node only relays it.
    pub on_behalf_of: Option<String>,
    /// Whether it was AEAD-sealed on the PAN.
    pub sealed: bool,
}

/// Where runtimes report what they send; `None` reports nothing. Bounded: records a slow
/// reader cannot take are dropped, never queued without end.
pub type TraceSink = Option<mpsc::Sender<TraceEvent>>;

/// A good capacity for a trace channel (the demo's whole run fits).
pub const TRACE_CAPACITY: usize = 4096;

pub(crate) fn report(
    sink: &TraceSink,
    sender: &str,
    receiver: &str,
    record: &cpns_proto::TraceRecord,
) {
    let Some(tx) = sink else { return };
    let on_behalf_of = (record.from != sender).then(|| record.from.clone());
    let _ = tx.try_send(TraceEvent {
        at: Instant::now(),
        sender: sender.into(),
        receiver: receiver.into(),
        message: record.message,
        on_behalf_of,
        sealed: record.sealed,
    });
}

const COLUMN: usize = 18;

/// Draws events as a text sequence diagram with one lifeline per participant, in the order
/// given. Events between unknown participants are listed under the diagram.
pub fn render_sequence(participants: &[String], events: &[TraceEvent]) -> String {
    let mut out = String::new();
    let width = participants.len() * COLUMN;
    let mut header = String::new();
    for p in participants {
        let name: String = p.chars().take(COLUMN - 2).collect();
        let _ = write!(header, "{name:^COLUMN$}");
    }
    let _ = writeln!(out, "{}", header.trim_end());
    let lifelines = || {
        let mut l = vec![' '; width];
        for i in 0..participants.len() {
            l[i * COLUMN + COLUMN / 2] = '|';
        }
        l
    };
    for e in events {
        let col = |n: &str| participants.iter().position(|p| p == n);
        let (Some(a), Some(b)) = (col(&e.sender), col(&e.receiver)) else {
            let _ = writeln!(out, "  ({} -> {}: {})", e.sender, e.receiver, e.message);
            continue;
        };
        let mut line = lifelines();
        let (x, y) = (a * COLUMN + COLUMN / 2, b * COLUMN + COLUMN / 2);
        let (lo, hi) = (x.min(y), x.max(y));
        for c in line.iter_mut().take(hi).skip(lo + 1) {
            *c = '-';
        }
        if x < y {
            line[hi - 1] = '>';
        } else if x > y {
            line[lo + 1] = '<';
        }
        let mut label = e.message.to_string();
        if let Some(o) = &e.on_behalf_of {
            let _ = write!(label, " (relayed for {o})");
        }
        if e.sealed {
            label.push_str(" [sealed]");
        }
        let line: String = line.into_iter().collect();
        let _ = writeln!(out, "{}  {label}", line.trim_end());
    }
    out
}
