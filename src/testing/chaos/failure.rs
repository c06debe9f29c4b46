//! [`ChaosFailure`]: which delivery, under which fault, left the state different, and how.

use std::fmt;

use super::{events::Described, ChaosFault};
use crate::verify::DeliveryId;

/// What [`Chaos`](super::Chaos) found: a delivery under a fault that left your state different
/// from one clean, in-order delivery of each event, or a delivery answered with other than a
/// 2xx. Its `Display` is the readable difference, for `assert!` and `unwrap`.
#[derive(Debug)]
pub struct ChaosFailure {
    fault: Option<ChaosFault>,
    delivery: Option<Described>,
    note: Option<String>,
    what: What,
}

#[derive(Debug)]
enum What {
    /// The snapshots, as `{:#?}` renders them.
    Differs { clean: String, faulted: String },
    /// Answered with this status: Ringyo would retry it.
    Refused { status: u16 },
}

impl ChaosFailure {
    /// The state after `fault` (on `delivery`, if one alone did it) differs from `clean`.
    pub(super) fn differs(
        fault: ChaosFault,
        delivery: Option<&Described>,
        note: Option<String>,
        clean: &impl fmt::Debug,
        faulted: &impl fmt::Debug,
    ) -> Self {
        Self {
            fault: Some(fault),
            delivery: delivery.cloned(),
            note,
            what: What::Differs {
                clean: format!("{clean:#?}"),
                faulted: format!("{faulted:#?}"),
            },
        }
    }

    /// `delivery` was answered `status` in a run under `fault` (`None`: the clean run).
    pub(super) fn refused(fault: Option<ChaosFault>, delivery: &Described, status: u16) -> Self {
        Self {
            fault,
            delivery: Some(delivery.clone()),
            note: None,
            what: What::Refused { status },
        }
    }

    /// The fault under which it happened; `None` for the clean run.
    pub fn fault(&self) -> Option<ChaosFault> {
        self.fault
    }

    /// The delivery that did it alone, if one did; `None` when only the fault on every
    /// delivery together changed the state.
    pub fn delivery_id(&self) -> Option<DeliveryId> {
        self.delivery.as_ref().map(|delivery| delivery.id)
    }
}

impl fmt::Display for ChaosFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let run = self.fault.map_or_else(
            || "the clean run".to_owned(),
            |fault| format!("fault: {fault}"),
        );
        match &self.what {
            What::Refused { status } => {
                let delivery = self.delivery.as_ref().map(ToString::to_string);
                write!(
                    f,
                    "delivery chaos: {} was answered {status}, not a 2xx, so Ringyo would retry \
                     it ({run})",
                    delivery.as_deref().unwrap_or("a delivery")
                )
            }
            What::Differs { clean, faulted } => {
                writeln!(
                    f,
                    "delivery chaos: the state differs from one clean, in-order delivery of \
                     each event"
                )?;
                writeln!(f, "  {run}")?;
                match &self.delivery {
                    Some(delivery) => writeln!(f, "  delivery: {delivery}")?,
                    None => writeln!(
                        f,
                        "  delivery: every one together (no single delivery changes it alone)"
                    )?,
                }
                if let Some(note) = &self.note {
                    writeln!(f, "  ({note})")?;
                }
                writeln!(f, "  - after one clean delivery of each event")?;
                writeln!(f, "  + under the fault")?;
                f.write_str(&diff(clean, faulted))
            }
        }
    }
}

/// Lines kept around a difference.
const CONTEXT: usize = 2;

/// `clean` and `faulted` line by line: the common lines around the part that differs, then
/// that part, `-` for the clean state's lines and `+` for the faulted one's.
fn diff(clean: &str, faulted: &str) -> String {
    let clean: Vec<&str> = clean.lines().collect();
    let faulted: Vec<&str> = faulted.lines().collect();
    let same = |(a, b): (&&str, &&str)| a == b;
    let head = clean
        .iter()
        .zip(&faulted)
        .take_while(|&pair| same(pair))
        .count();
    let tail = clean[head..]
        .iter()
        .rev()
        .zip(faulted[head..].iter().rev())
        .take_while(|&pair| same(pair))
        .count();
    let mut out = String::new();
    let mut line = |mark: &str, text: &str| {
        out.push_str("    ");
        out.push_str(mark);
        out.push_str(text);
        out.push('\n');
    };
    for text in &clean[head.saturating_sub(CONTEXT)..head] {
        line("  ", text);
    }
    for text in &clean[head..clean.len() - tail] {
        line("- ", text);
    }
    for text in &faulted[head..faulted.len() - tail] {
        line("+ ", text);
    }
    let after = clean.len() - tail;
    for text in &clean[after..(after + CONTEXT).min(clean.len())] {
        line("  ", text);
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[test]
    fn the_difference_shows_only_the_changed_lines_and_their_neighbours() {
        let clean: BTreeMap<_, _> = [("a", 1), ("b", 1), ("c", 1), ("d", 1), ("e", 1)].into();
        let mut faulted = clean.clone();
        faulted.insert("c", 2);
        let shown = diff(&format!("{clean:#?}"), &format!("{faulted:#?}"));
        let context = |key: &str| format!("          \"{key}\": 1,\n");
        let expected = [
            context("a"),
            context("b"),
            "    -     \"c\": 1,\n".to_owned(),
            "    +     \"c\": 2,\n".to_owned(),
            context("d"),
            context("e"),
        ];
        assert_eq!(shown, expected.concat());
    }

    #[test]
    fn a_failure_names_the_fault_the_delivery_and_the_difference() {
        let delivery = Described {
            event: "call.completed".to_owned(),
            subject: Some("call:call_a".parse().unwrap()),
            id: "ab".repeat(32).parse().unwrap(),
        };
        let failure = ChaosFailure::differs(ChaosFault::SentTwice, Some(&delivery), None, &1, &2);
        let text = failure.to_string();
        assert!(
            text.contains("fault: sent twice, the second a second after the first"),
            "{text}"
        );
        assert!(
            text.contains(&format!(
                "delivery: call.completed about call:call_a (delivery {})",
                delivery.id
            )),
            "{text}"
        );
        assert!(text.ends_with("    - 1\n    + 2\n"), "{text}");
        assert_eq!(failure.delivery_id(), Some(delivery.id));
    }
}
