//! Connection slots for a listener that faces an attacker (issue 6, "Bounded resources").
//!
//! A connection starts *unauthenticated* and holds one of a small number of such slots; it
//! moves to the larger pool of *authenticated* slots once its peer proved who it is (the PN
//! GW's EUKey on the WAN, a proven PNE on the PAN). When every unauthenticated slot is taken, a
//! new connection evicts the oldest unauthenticated one rather than wait behind it, so idle or
//! trickling connections cannot keep authenticated peers out; each also has a short deadline
//! of its own. Authenticated connections never lose their slot to a newcomer.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

/// The slots of one listener.
#[derive(Debug, Clone)]
pub struct Admission {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    unauth: Arc<Semaphore>,
    auth: Arc<Semaphore>,
    /// Unauthenticated connections, oldest first, with the token that ends each.
    waiting: Mutex<BTreeMap<u64, CancellationToken>>,
    next: Mutex<u64>,
}

/// An unauthenticated connection's slot. Its token is cancelled when a newcomer evicts it.
#[derive(Debug)]
pub struct Unauthenticated {
    admission: Admission,
    seq: u64,
    evicted: CancellationToken,
    _permit: OwnedSemaphorePermit,
}

/// An authenticated connection's slot.
#[derive(Debug)]
pub struct Authenticated {
    _permit: OwnedSemaphorePermit,
}

impl Admission {
    /// `unauthenticated` slots for peers still proving themselves, `authenticated` for the rest.
    pub fn new(unauthenticated: usize, authenticated: usize) -> Self {
        Self {
            inner: Arc::new(Inner {
                unauth: Arc::new(Semaphore::new(unauthenticated.max(1))),
                auth: Arc::new(Semaphore::new(authenticated)),
                waiting: Mutex::new(BTreeMap::new()),
                next: Mutex::new(0),
            }),
        }
    }

    /// A slot for a new connection, evicting the oldest unauthenticated connection when all
    /// are taken (it gives its slot back as it ends).
    pub async fn admit(&self) -> Unauthenticated {
        let permit = match self.inner.unauth.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                self.evict_oldest();
                match self.inner.unauth.clone().acquire_owned().await {
                    Ok(p) => p,
                    // The semaphore is never closed.
                    Err(_) => unreachable!("admission semaphore closed"),
                }
            }
        };
        let seq = {
            let mut n = self.inner.next.lock().unwrap_or_else(|e| e.into_inner());
            *n += 1;
            *n
        };
        let evicted = CancellationToken::new();
        self.waiting().insert(seq, evicted.clone());
        Unauthenticated {
            admission: self.clone(),
            seq,
            evicted,
            _permit: permit,
        }
    }

    /// Free unauthenticated and authenticated slots now.
    pub fn available(&self) -> (usize, usize) {
        (
            self.inner.unauth.available_permits(),
            self.inner.auth.available_permits(),
        )
    }

    fn waiting(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, CancellationToken>> {
        self.inner.waiting.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn evict_oldest(&self) {
        let oldest = self.waiting().pop_first();
        if let Some((_, token)) = oldest {
            token.cancel();
        }
    }
}

impl Unauthenticated {
    /// Cancelled when a newcomer evicted this connection: it must end.
    pub fn evicted(&self) -> &CancellationToken {
        &self.evicted
    }

    /// The peer proved who it is: trade this slot for an authenticated one, or `None` when all
    /// authenticated slots are taken (the connection is then refused as busy).
    pub fn authenticate(self) -> Option<Authenticated> {
        let permit = self.admission.inner.auth.clone().try_acquire_owned().ok()?;
        Some(Authenticated { _permit: permit })
    }
}

impl Drop for Unauthenticated {
    fn drop(&mut self) {
        self.admission.waiting().remove(&self.seq);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_newcomer_evicts_the_oldest_unauthenticated() {
        let a = Admission::new(2, 1);
        let first = a.admit().await;
        let second = a.admit().await;
        assert_eq!(a.available(), (0, 1));
        // The third must not wait for the idle ones: it evicts the oldest, which then ends.
        let evicted = first.evicted().clone();
        let third = tokio::spawn({
            let a = a.clone();
            async move { a.admit().await }
        });
        evicted.cancelled().await;
        assert!(!second.evicted().is_cancelled());
        drop(first);
        let third = third.await.unwrap();
        assert!(!third.evicted().is_cancelled());
        // Authenticated slots are separate and never evicted.
        let authed = second.authenticate().expect("a free authenticated slot");
        assert_eq!(a.available(), (1, 0));
        let fourth = a.admit().await;
        assert!(
            fourth.authenticate().is_none(),
            "no authenticated slot left: refused"
        );
        drop(authed);
        drop(third);
        assert_eq!(a.available(), (2, 1));
    }
}
