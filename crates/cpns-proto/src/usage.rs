//! Usage statistics (004 §5.5.4), decided without IO: what a PNE's user lets leave the device
//! and to whom, and what a server accepts of a report (docs/device-status.md, "Usage
//! statistics").

use std::collections::BTreeMap;

use cpns_wire::{Audience, UsageRecord, UsageReport};

/// A user's reporting preference for one service (004 §5.5.4.2), as the PNE's store keeps
/// it.
pub use cpns_wire::Preference;

/// A PNE's preferences: one per service, and a default for the others.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Preferences {
    /// For a service with no preference of its own.
    pub default: Preference,
    /// By service.
    pub services: BTreeMap<String, Preference>,
}

impl Default for Preferences {
    fn default() -> Self {
        Self {
            default: Preference::Server,
            services: BTreeMap::new(),
        }
    }
}

impl Preferences {
    /// The preference that holds for `service`.
    pub fn of(&self, service: &str) -> Preference {
        self.services.get(service).copied().unwrap_or(self.default)
    }
}

/// Most records in one report.
pub const MAX_RECORDS: usize = 64;
/// Records a PNE puts in one report.
pub const BATCH: usize = 32;
/// Most bytes of an encoded report.
pub const MAX_REPORT_BYTES: usize = 64 * 1024;
/// Most bytes of a service name.
pub const MAX_SERVICE: usize = 128;
/// Most networks a record names, and bytes of each.
pub const MAX_NETWORKS: usize = 16;
/// Oldest use a server takes, seconds before now.
pub const MAX_AGE_S: u64 = 30 * 86_400;
/// Largest record id and volume a server keeps.
pub const MAX_STORED: u64 = i64::MAX as u64;
/// How far in the future a use may end (clocks differ), seconds.
pub const CLOCK_SKEW_S: u64 = 300;

/// What a PNE sends of its unsent records, and what it keeps to itself.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Outgoing {
    /// The report, each record's audience set from the preferences (at most [`BATCH`]).
    pub report: UsageReport,
    /// Records of private services: never sent; the PNE marks them done so they are never
    /// looked at again.
    pub withheld: Vec<u64>,
}

/// Sorts unsent records by the preferences as they are now: private ones are withheld, the
/// others go out, at most [`BATCH`] in one report (the rest wait for the next).
pub fn outgoing(unsent: &[UsageRecord], prefs: &Preferences) -> Outgoing {
    let mut out = Outgoing::default();
    for r in unsent {
        match prefs.of(&r.service).audience() {
            None => out.withheld.push(r.id),
            Some(audience) if out.report.records.len() < BATCH => {
                out.report.records.push(UsageRecord {
                    audience,
                    ..r.clone()
                });
            }
            Some(_) => {}
        }
    }
    out
}

/// Checks a report a server received at `now_s` (seconds since the Unix epoch); the first
/// reason it may not be taken, naming the record.
pub fn check_report(report: &UsageReport, now_s: u64) -> Result<(), String> {
    if report.records.len() > MAX_RECORDS {
        return Err(format!(
            "a report holds at most {MAX_RECORDS} records, this one {}",
            report.records.len()
        ));
    }
    for r in &report.records {
        let bad = |why: String| Err(format!("usage record {}: {why}", r.id));
        if r.service.is_empty() || r.service.len() > MAX_SERVICE {
            return bad(format!("a service name is 1 to {MAX_SERVICE} bytes"));
        }
        if r.end_s < r.start_s {
            return bad("it ends before it starts".into());
        }
        if r.start_s < now_s.saturating_sub(MAX_AGE_S) {
            return bad(format!(
                "it started more than {} days ago",
                MAX_AGE_S / 86_400
            ));
        }
        if r.end_s > now_s.saturating_add(CLOCK_SKEW_S) {
            return bad("it ends in the future".into());
        }
        if !matches!(r.audience, Audience::Server | Audience::Shared) {
            return bad(format!("unknown audience {}", r.audience.code()));
        }
        if r.networks.len() > MAX_NETWORKS || r.networks.iter().any(|n| n.len() > MAX_SERVICE) {
            return bad(format!(
                "at most {MAX_NETWORKS} networks of at most {MAX_SERVICE} bytes"
            ));
        }
        if r.battery_start.is_some_and(|b| b > 100) || r.battery_end.is_some_and(|b| b > 100) {
            return bad("a battery level is 0 to 100".into());
        }
        // The store keeps them as signed 64-bit numbers.
        if r.id > MAX_STORED || r.bytes > MAX_STORED {
            return bad(format!("an id and a volume are at most {MAX_STORED}"));
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn rec(id: u64, service: &str) -> UsageRecord {
        UsageRecord {
            id,
            service: service.into(),
            start_s: 9_000_000,
            end_s: 9_000_060,
            bytes: 10,
            audience: Audience::Server,
            status: None,
            battery_start: Some(50),
            battery_end: Some(49),
            networks: vec!["wlan".into()],
        }
    }

    #[test]
    fn preferences_decide_what_leaves_and_to_whom() {
        let mut prefs = Preferences::default();
        prefs.services.insert("video".into(), Preference::Private);
        prefs.services.insert("game".into(), Preference::Shared);
        let out = outgoing(&[rec(1, "video"), rec(2, "game"), rec(3, "maps")], &prefs);
        assert_eq!(out.withheld, [1]);
        let sent: Vec<_> = out
            .report
            .records
            .iter()
            .map(|r| (r.id, r.audience))
            .collect();
        assert_eq!(sent, [(2, Audience::Shared), (3, Audience::Server)]);
        assert!(out.report.records.iter().all(|r| r.service != "video"));

        prefs.default = Preference::Private;
        let out = outgoing(&[rec(3, "maps")], &prefs);
        assert_eq!(
            (out.withheld.as_slice(), out.report.records.len()),
            (&[3][..], 0)
        );
    }

    #[test]
    fn a_report_holds_one_batch_and_the_rest_wait() {
        let many: Vec<_> = (0..BATCH as u64 + 5).map(|i| rec(i, "game")).collect();
        let out = outgoing(&many, &Preferences::default());
        assert_eq!(out.report.records.len(), BATCH);
        assert!(out.withheld.is_empty());
        assert_eq!(out.report.records.last().unwrap().id, BATCH as u64 - 1);
        assert!(minicbor::to_vec(&out.report).unwrap().len() < MAX_REPORT_BYTES);
    }

    #[test]
    fn names_round_trip() {
        for p in [Preference::Private, Preference::Server, Preference::Shared] {
            assert_eq!(Preference::parse(p.name()), Some(p));
        }
        assert_eq!(Preference::parse("public"), None);
    }

    #[test]
    fn bad_reports_are_refused_with_the_record_named() {
        let now = 9_000_100;
        let ok = UsageReport {
            records: vec![rec(1, "game")],
        };
        assert_eq!(check_report(&ok, now), Ok(()));
        let with = |f: &dyn Fn(&mut UsageRecord)| {
            let mut r = rec(7, "game");
            f(&mut r);
            check_report(&UsageReport { records: vec![r] }, now)
        };
        for (f, says) in [
            (
                &(|r: &mut UsageRecord| r.service.clear()) as &dyn Fn(&mut UsageRecord),
                "service",
            ),
            (
                &|r: &mut UsageRecord| r.service = "x".repeat(MAX_SERVICE + 1),
                "service",
            ),
            (
                &|r: &mut UsageRecord| r.end_s = r.start_s - 1,
                "ends before",
            ),
            (
                &|r: &mut UsageRecord| r.start_s = now - MAX_AGE_S - 1,
                "days ago",
            ),
            (
                &|r: &mut UsageRecord| r.end_s = now + CLOCK_SKEW_S + 1,
                "future",
            ),
            (
                &|r: &mut UsageRecord| r.audience = Audience::Unknown(9),
                "audience",
            ),
            (
                &|r: &mut UsageRecord| r.networks = vec!["n".into(); MAX_NETWORKS + 1],
                "networks",
            ),
            (
                &|r: &mut UsageRecord| r.networks = vec!["n".repeat(MAX_SERVICE + 1)],
                "networks",
            ),
            (&|r: &mut UsageRecord| r.battery_end = Some(101), "battery"),
            (&|r: &mut UsageRecord| r.bytes = u64::MAX, "at most"),
            (
                &|r: &mut UsageRecord| r.battery_start = Some(101),
                "battery",
            ),
        ] {
            let err = with(f).unwrap_err();
            assert!(
                err.contains("usage record 7") && err.contains(says),
                "{err}"
            );
        }
        // At the bounds: taken.
        assert_eq!(with(&|r| r.start_s = now - MAX_AGE_S), Ok(()));
        assert_eq!(
            with(&|r| r.start_s = now - 29 * 86_400),
            Ok(()),
            "29 days old"
        );
        assert!(
            with(&|r| r.start_s = now - 31 * 86_400).is_err(),
            "31 days old"
        );
        assert_eq!(with(&|r| r.end_s = r.start_s), Ok(()), "a use of no time");
        assert_eq!(
            with(&|r| r.networks = vec!["n".into(); MAX_NETWORKS]),
            Ok(())
        );
        assert_eq!(
            with(&|r| r.networks = vec!["n".repeat(MAX_SERVICE)]),
            Ok(())
        );
        assert_eq!(with(&|r| r.battery_end = Some(100)), Ok(()));
        assert_eq!(with(&|r| r.battery_start = Some(100)), Ok(()));
        assert_eq!(
            with(&|r| (r.id, r.bytes) = (MAX_STORED, MAX_STORED)),
            Ok(())
        );
        let err = with(&|r| r.id = MAX_STORED + 1).unwrap_err();
        assert!(err.contains("an id and a volume are at most"), "{err}");
        let full = UsageReport {
            records: (0..MAX_RECORDS as u64).map(|i| rec(i, "g")).collect(),
        };
        assert_eq!(check_report(&full, now), Ok(()), "64 records");
        assert_eq!(with(&|r| r.end_s = now + CLOCK_SKEW_S), Ok(()));
        assert_eq!(with(&|r| r.service = "x".repeat(MAX_SERVICE)), Ok(()));
        let too_many = UsageReport {
            records: (0..=MAX_RECORDS as u64).map(|i| rec(i, "g")).collect(),
        };
        assert!(
            check_report(&too_many, now)
                .unwrap_err()
                .contains("at most 64")
        );
    }
}
