//! A PN's lifetime at its PN GW (beyond the documents; docs/pn-lifecycle.md, "Lifetime and
//! member limit"): a PN this PN GW establishes with a lifetime expires then, and the PN GW
//! releases it as its owner would (000 §6.6.5), telling every member. The end is kept as a
//! Unix time in the local store, so it holds across restarts; the driver gives the wall clock
//! ([`Gateway::set_wall_clock`]), as it gives `now`.

use std::time::{Duration, Instant};

use super::{Gateway, GatewayEvent};

impl Gateway {
    /// The wall clock (Unix milliseconds) at `now`. The driver calls it before
    /// [`Gateway::restore`] and whenever it likes; without it no PN expires.
    pub fn set_wall_clock(&mut self, now: Instant, unix_ms: i64) {
        self.wall = Some((now, unix_ms));
    }

    /// The Unix time at `at`, by the wall clock given.
    fn unix_at(&self, at: Instant) -> Option<i64> {
        let (base, unix) = self.wall?;
        let ms = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        Some(match at.checked_duration_since(base) {
            Some(after) => unix.saturating_add(ms(after)),
            None => unix.saturating_sub(ms(base.duration_since(at))),
        })
    }

    /// The instant of Unix time `unix_ms`, by the wall clock given (a past one as it was).
    pub(super) fn instant_of(&self, unix_ms: i64) -> Option<Instant> {
        let (base, unix) = self.wall?;
        let delta = unix_ms.saturating_sub(unix);
        let d = Duration::from_millis(delta.unsigned_abs());
        if delta >= 0 {
            base.checked_add(d)
        } else {
            Some(base.checked_sub(d).unwrap_or(base))
        }
    }

    /// When a PN established at `now` expires, by this PN GW's setting.
    pub(super) fn expiry_of_new_pn(&self, now: Instant) -> Option<i64> {
        let lifetime = self.cfg.pn_lifetime_s?;
        Some(
            self.unix_at(now)?
                .saturating_add(i64::from(lifetime) * 1000),
        )
    }

    /// PNs whose lifetime ended: each is released (event [`GatewayEvent::PnExpired`] once,
    /// then the release's own events). A release that cannot start now (no session with the
    /// server, another change of the PN running, every flow slot taken) is tried again a
    /// little later; one that fails is tried again once its flow ended.
    pub(super) fn expiry_timeouts(&mut self, now: Instant) {
        let mut due = Vec::new();
        while let Some(&(at, pn_id)) = self.expiries.first()
            && at <= now
        {
            self.expiries.pop_first();
            if self.pns.contains_key(&pn_id) {
                due.push(pn_id);
            }
        }
        let retry = self.cfg.timeouts.flow / 10;
        for pn_id in due {
            let told = self.pns.get(&pn_id).is_some_and(|pn| pn.expiry_told);
            if !told {
                if let Some(pn) = self.pns.get_mut(&pn_id) {
                    pn.expiry_told = true;
                }
                self.event(GatewayEvent::PnExpired { pn_id });
            }
            let next = if self.releases.running(&pn_id) || self.release_expired(now, pn_id).is_err()
            {
                now + retry
            } else {
                // The release's own deadline ends it either way; look again after it.
                now + self.cfg.timeouts.flow + retry
            };
            self.expiries.insert((next, pn_id));
        }
    }

    /// When to look at expiries next.
    pub(super) fn expiry_deadlines(&self) -> impl Iterator<Item = Instant> + '_ {
        self.expiries.first().map(|(at, _)| *at).into_iter()
    }
}
