//! The replay window of a secure session (docs/security.md §4.8, "Each call once"): a PNE
//! numbers its Secure Requests under one SK_PNE 1, 2, 3, … (the request id), and the server
//! runs each number at most once. It keeps the highest number it took, `top`, and a 64-bit map
//! of which of the 64 numbers ending at `top` it took (bit `i` for `top - i`), so requests that
//! overtook each other on the way are still taken, while a number taken already, or older than
//! the window, is refused. The window is kept with the member's SK_PNE and starts again when a
//! registration replaces it.

/// How many numbers back from the highest the window remembers.
pub const WIDTH: u64 = 64;

/// One secure session's replay window: `top` and the map of taken numbers ending at it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReplayWindow {
    /// The highest number taken (0: none yet).
    pub top: u64,
    /// Bit `i` set: number `top - i` was taken.
    pub seen: u64,
}

/// What the window says of a number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Not taken: it may run once.
    Fresh,
    /// Taken already.
    Taken,
    /// Older than the window: it cannot be told from one taken.
    TooOld,
    /// Not a number: numbers start at 1.
    Zero,
}

impl ReplayWindow {
    /// What the window says of `n`.
    pub fn check(&self, n: u64) -> Verdict {
        if n == 0 {
            return Verdict::Zero;
        }
        if n > self.top {
            return Verdict::Fresh;
        }
        let back = self.top - n;
        if back >= WIDTH {
            Verdict::TooOld
        } else if self.seen & (1 << back) != 0 {
            Verdict::Taken
        } else {
            Verdict::Fresh
        }
    }

    /// Takes `n` (a [`Verdict::Fresh`] number).
    pub fn take(&mut self, n: u64) {
        if n > self.top {
            let shift = n - self.top;
            self.seen = if shift >= WIDTH {
                0
            } else {
                self.seen << shift
            };
            self.seen |= 1;
            self.top = n;
        } else if self.top - n < WIDTH {
            self.seen |= 1 << (self.top - n);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_number_once_in_any_order_within_the_window() {
        let mut w = ReplayWindow::default();
        assert_eq!(w.check(0), Verdict::Zero);
        for n in [1, 2, 5, 3] {
            assert_eq!(w.check(n), Verdict::Fresh, "{n}");
            w.take(n);
            assert_eq!(w.check(n), Verdict::Taken, "{n}");
        }
        assert_eq!((w.top, w.seen), (5, 0b11101));
        assert_eq!(w.check(4), Verdict::Fresh);
        assert_eq!(w.check(6), Verdict::Fresh);
        // 64 back from the top is out of the window, 63 back is in it.
        w.take(70);
        assert_eq!(w.top, 70);
        assert_eq!(w.check(6), Verdict::TooOld);
        assert_eq!(w.check(7), Verdict::Fresh);
        w.take(7);
        assert_eq!(w.check(7), Verdict::Taken);
        assert_eq!(w.seen, 1 | 1 << 63);
        // A jump beyond the window forgets it all but the new top.
        w.take(70 + WIDTH);
        assert_eq!((w.top, w.seen), (70 + WIDTH, 1));
        assert_eq!(w.check(70 + 1), Verdict::Fresh);
        assert_eq!(w.check(70), Verdict::TooOld);
        // Taking a number older than the window changes nothing, right at its edge too.
        let before = w;
        w.take(3);
        assert_eq!(w, before);
        w.take(w.top - WIDTH);
        assert_eq!(w, before);
        w.take(w.top - WIDTH + 1);
        assert_eq!(w.seen, 1 | 1 << 63);
        // The highest number: no overflow.
        w.take(u64::MAX);
        assert_eq!(w.check(u64::MAX), Verdict::Taken);
        assert_eq!(w.check(u64::MAX - 1), Verdict::Fresh);
    }
}
