//! Reconnection delays: exponential backoff with full jitter (each delay drawn uniformly from
//! zero to the current ceiling), so PN GWs that lost the same server do not come back in step.

use std::time::Duration;

use cpns_crypto::MachineRng;

/// Exponential backoff with full jitter.
#[derive(Debug)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    ceiling: Duration,
    rng: MachineRng,
}

impl Backoff {
    /// Delays starting below `initial`, doubling up to `max`.
    pub fn new(initial: Duration, max: Duration, rng: MachineRng) -> Self {
        Self {
            initial,
            max,
            ceiling: initial,
            rng,
        }
    }

    /// The next delay: uniform in `[ceiling / 2, ceiling]`, then the ceiling doubles (capped).
    /// Half the ceiling is kept as a floor so a reconnecting PN GW never spins.
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self.ceiling;
        self.ceiling = (self.ceiling * 2).min(self.max);
        let half = ceiling / 2;
        let span = u64::try_from((ceiling - half).as_micros()).unwrap_or(u64::MAX);
        let jitter = if span == 0 {
            0
        } else {
            self.rng.u64() % (span + 1)
        };
        half + Duration::from_micros(jitter)
    }

    /// The connection worked: start again from the initial delay.
    pub fn reset(&mut self) {
        self.ceiling = self.initial;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_to_the_cap_with_jitter_and_reset() {
        let ms = Duration::from_millis;
        let mut b = Backoff::new(ms(100), ms(1000), MachineRng::from_seed_u64(1));
        let ceilings = [100, 200, 400, 800, 1000, 1000];
        let mut delays = Vec::new();
        for c in ceilings {
            let d = b.next_delay();
            assert!(
                d >= ms(c) / 2 && d <= ms(c),
                "{d:?} outside [{}, {c}] ms",
                c / 2
            );
            delays.push(d);
        }
        // Jitter: not simply the ceilings halved.
        assert!(delays.iter().zip(ceilings).any(|(d, c)| *d != ms(c) / 2));
        b.reset();
        let d = b.next_delay();
        assert!(d >= ms(50) && d <= ms(100));
        // Two PN GWs with other seeds pick other delays.
        let mut other = Backoff::new(ms(100), ms(1000), MachineRng::from_seed_u64(2));
        let mine: Vec<_> = (0..4).map(|_| b.next_delay()).collect();
        let theirs: Vec<_> = (0..4).map(|_| other.next_delay()).collect();
        assert_ne!(mine, theirs);
    }
}
