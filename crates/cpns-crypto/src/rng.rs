//! The randomness given to a protocol machine (docs/design.md §2, sans-IO): every rand_X, key, nonce and
//! request id a machine makes comes from the [`MachineRng`] it was built with, never from the
//! operating system directly. Runtimes give each machine [`MachineRng::os`]; tests give
//! [`MachineRng::seeded`], so a run (and any failure a simulation finds) replays exactly from
//! its seed.
//!
//! The seeded generator is ChaCha20 (RustCrypto `chacha20`), keyed by the 32-byte seed: a real
//! CSPRNG, deterministic only because its key is known. It must never be used outside tests.

use core::fmt;

pub use rand_core::{CryptoRng, Rng};
use rand_core::{SeedableRng, UnwrapErr};

use crate::keys::RAND_LEN;

/// A boxed cryptographically secure generator owned by one machine.
pub struct MachineRng {
    inner: Box<dyn CryptoRng + Send>,
    seeded: bool,
}

impl fmt::Debug for MachineRng {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.seeded {
            "MachineRng(seeded)"
        } else {
            "MachineRng(os)"
        })
    }
}

impl MachineRng {
    /// The operating system's CSPRNG (`getrandom`). A failing OS generator is unrecoverable on
    /// the platforms served, and panics rather than hand out predictable values.
    pub fn os() -> Self {
        Self {
            inner: Box::new(UnwrapErr(getrandom::SysRng)),
            seeded: false,
        }
    }

    /// A ChaCha20 generator keyed by `seed`: the same seed gives the same values. For tests and
    /// simulations only.
    pub fn seeded(seed: [u8; 32]) -> Self {
        Self {
            inner: Box::new(chacha20::ChaCha20Rng::from_seed(seed)),
            seeded: true,
        }
    }

    /// [`MachineRng::seeded`] with the seed expanded from a number (tests name seeds this way).
    pub fn from_seed_u64(seed: u64) -> Self {
        Self {
            inner: Box::new(chacha20::ChaCha20Rng::seed_from_u64(seed)),
            seeded: true,
        }
    }

    /// A child generator for another machine, seeded from this one: deterministic when this one
    /// is, and from the OS when this one is.
    pub fn fork(&mut self) -> Self {
        if self.seeded {
            Self::seeded(self.array())
        } else {
            Self::os()
        }
    }

    /// The generator itself, for the functions of this crate that take one.
    pub fn get(&mut self) -> &mut (dyn CryptoRng + Send) {
        &mut *self.inner
    }

    /// `N` random bytes.
    pub fn array<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        self.inner.fill_bytes(&mut out);
        out
    }

    /// A random 64-bit number (request ids).
    pub fn u64(&mut self) -> u64 {
        self.inner.next_u64()
    }

    /// A fresh `rand_X` (000 §6.6.1.1 steps 1, 3, 5).
    pub fn rand(&mut self) -> crate::Rand {
        crate::Rand(self.array::<RAND_LEN>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_values() {
        let mut a = MachineRng::from_seed_u64(7);
        let mut b = MachineRng::from_seed_u64(7);
        let mut c = MachineRng::from_seed_u64(8);
        let (x, y, z) = (a.array::<32>(), b.array::<32>(), c.array::<32>());
        assert_eq!(x, y);
        assert_ne!(x, z);
        assert_eq!(a.u64(), b.u64());
        assert_eq!(a.rand(), b.rand());
        assert_eq!(a.fork().array::<16>(), b.fork().array::<16>());
    }

    #[test]
    fn seeded_is_chacha20_keyed_by_the_seed() {
        // RFC 8439 §2.3.2 style check: the first block of ChaCha20 under an all-zero key and
        // nonce starts with 76 b8 e0 ad (RFC 7539 test vector 2.4.2 / A.1 #1).
        let mut r = MachineRng::seeded([0; 32]);
        let first: [u8; 4] = r.array();
        assert_eq!(first, [0x76, 0xb8, 0xe0, 0xad]);
    }

    #[test]
    fn os_values_differ_and_debug_says_which() {
        let mut a = MachineRng::os();
        assert_ne!(a.array::<16>(), a.array::<16>());
        assert_eq!(format!("{a:?}"), "MachineRng(os)");
        assert_eq!(
            format!("{:?}", MachineRng::from_seed_u64(1)),
            "MachineRng(seeded)"
        );
        let mut f = a.fork();
        assert_eq!(format!("{f:?}"), "MachineRng(os)");
        assert_ne!(f.u64(), f.u64());
    }
}
