//! Forwarding between PNs across two PN GW sessions (docs/services.md, "Forwarding between
//! PNs"): the session of the source's PN GW hands the route to the targets' PN GW's session
//! as mail (a letter that no session picks up in time says that PN GW has none), and from then
//! on the two hand each other the session's chunks, acknowledgements and ends through their
//! **relay inboxes**: a bounded channel per session, made the first time it takes part in a
//! forward (an idle session has none), found by its PN GW's id (what is relayed before the
//! targets' session made its inbox, a control sent at once, goes as mail after the route's
//! letter, in order). Nothing here reads what it
//! carries; each machine checks what its own PN GW sends, and what it hands the other is
//! bounded per forward (a window of chunks, acknowledgements at chunk ends, bounded resumes), so
//! an inbox does not fill; if one does, the forward ends at the sender.
//!
//! A session that ends parks its forwards with its deliveries from outside (`outbound.rs`,
//! "Parked") for its PN GW's next session: what is relayed to them meanwhile is held there
//! ([`cpns_proto::server::KeptOutbound::hold`]), including the letters left in its inbox; past
//! their grace, each forward's other side is told it ended. With neither an inbox nor a
//! parking for the PN GW, a letter goes as mail, and a forward whose mail no session takes in
//! time ends at the sender.

use std::time::Instant;

use cpns_proto::server::{Relayed, ServerSession};
use cpns_store::ServerStore;
use cpns_wire::{DeliveryId, DeliveryRoute, EntityId};
use tokio::sync::mpsc;

use super::mailroom::{PICKUP, PeerMsg};
use super::{ServerNode, SessionEnd};

/// Letters one relay inbox holds: well past what the forwards of one session may have in
/// flight at once ([`cpns_proto::server::MAX_FORWARDS`] on each side, each a window of chunks
/// and a bounded number of acknowledgements).
const INBOX: usize = 4096;

/// What one session hands another of a forwarded session.
#[derive(Debug)]
pub(super) struct Letter {
    session: DeliveryId,
    msg: Relayed,
}

/// Where a session's relay letters are posted.
pub(super) type Inbox = mpsc::Sender<Box<Letter>>;

/// A session's relay inbox: where it reads, and the sender it registered (to take it back
/// only if it is still its own).
pub(super) struct RelayInbox {
    rx: mpsc::Receiver<Box<Letter>>,
    tx: Inbox,
}

/// The next letter of `inbox`; never, without one. A closure, not an `async fn`: it adds a
/// pointer to the session's future, which every idle session holds (ARCHITECTURE decision 22).
pub(super) fn next_letter(
    inbox: &mut Option<Box<RelayInbox>>,
) -> impl std::future::Future<Output = Option<(DeliveryId, Relayed)>> + '_ {
    std::future::poll_fn(move |cx| match inbox {
        Some(i) => i.rx.poll_recv(cx).map(|l| l.map(|l| (l.session, l.msg))),
        None => std::task::Poll::Pending,
    })
}

impl<S: ServerStore + Clone> ServerNode<S> {
    /// This session's relay inbox, made and registered under its PN GW if it has none.
    pub(super) fn inbox(&self, end: &mut SessionEnd) -> Option<Inbox> {
        let gw = end.gateway.clone()?;
        if let Some(i) = &end.relay {
            return Some(i.tx.clone());
        }
        let (tx, rx) = mpsc::channel(INBOX);
        self.office.relays().insert(gw, tx.clone());
        end.relay = Some(Box::new(RelayInbox { rx, tx: tx.clone() }));
        Some(tx)
    }

    /// [`cpns_proto::server::ServerOutput::Forward`]: the route goes to the session of
    /// `gateway` as mail; if none takes it in time, this session is told the forward ended.
    pub(super) fn forward(
        &self,
        session: &mut ServerSession,
        end: &mut SessionEnd,
        gateway: EntityId,
        route: DeliveryRoute,
    ) {
        let id = route.session;
        let (Some(me), Some(back)) = (end.gateway.clone(), self.inbox(end)) else {
            return session.forward_ended(id, "this session has no PN GW".into());
        };
        let letter = PeerMsg::Forward {
            from: me,
            route: Box::new(route),
        };
        self.post_for_forward(session, back, gateway, id, letter);
    }

    /// Posts `letter` of forward `id` for the session of `gateway`; if the mailroom is full,
    /// or no session takes it in time, the forward ends here (told through `back`).
    fn post_for_forward(
        &self,
        session: &mut ServerSession,
        back: Inbox,
        gateway: EntityId,
        id: DeliveryId,
        letter: PeerMsg,
    ) {
        let now = Instant::now();
        let Ok(letter) = self.room().post(now, &gateway, now + PICKUP, letter) else {
            let why = format!("{gateway}: too much mail between PN GWs waiting");
            return session.forward_ended(id, why);
        };
        self.office.ring();
        let office = self.office.clone();
        tokio::spawn(async move {
            tokio::time::sleep(PICKUP).await;
            if office.room().withdraw(&gateway, letter) {
                let msg = Relayed::Ended(format!("{gateway} has no session with the server"));
                let _ = back.try_send(Box::new(Letter { session: id, msg }));
            }
        });
    }

    /// The route of a session another session forwards here, from mail.
    pub(super) fn forwarded_here(
        &self,
        session: &mut ServerSession,
        end: &mut SessionEnd,
        from: EntityId,
        route: DeliveryRoute,
    ) {
        // Made before the machine relays anything back.
        let _ = self.inbox(end);
        session.forward_in(from, route);
    }

    /// [`cpns_proto::server::ServerOutput::Relay`]: posted in the inbox of `gateway`'s
    /// session. A session with no inbox yet (the route's letter not taken: a control sent at
    /// once) gets it as mail, after the route; if none takes it in time, or the inbox is full
    /// or gone, the forward ends here.
    pub(super) fn relay(
        &self,
        session: &mut ServerSession,
        end: &mut SessionEnd,
        gateway: &EntityId,
        id: DeliveryId,
        msg: Relayed,
    ) {
        match self.office.hand_over(gateway, id, msg) {
            Ok(()) => {}
            Err(NotTaken::Full) => {
                session.forward_ended(id, format!("{gateway}: its relay inbox is full"));
            }
            Err(NotTaken::NoSession(msg)) => {
                self.relay_by_mail(session, end, gateway.clone(), id, msg);
            }
        }
    }

    fn relay_by_mail(
        &self,
        session: &mut ServerSession,
        end: &mut SessionEnd,
        gateway: EntityId,
        id: DeliveryId,
        msg: Relayed,
    ) {
        let Some(back) = self.inbox(end) else {
            return session.forward_ended(id, "this session has no PN GW".into());
        };
        let letter = PeerMsg::Relay { session: id, msg };
        self.post_for_forward(session, back, gateway, id, letter);
    }

    /// The session ends: the deliveries from outside it was sending and the forwards it
    /// relayed are parked for its PN GW's next session, its inbox is taken back (unless a
    /// newer session of its PN GW registered its own), and the letters left in it are held
    /// for the forwards parked.
    pub(super) fn end_relays(&self, session: &mut ServerSession, end: &mut SessionEnd) {
        let kept = session.end_deliveries(std::time::Instant::now());
        if let Some(gw) = kept.gateway().cloned()
            && !kept.is_empty()
        {
            let sending = end.outbound.take_sending();
            self.park_outbound(gw, kept, sending);
        }
        while let Some(out) = session.poll_output() {
            if let cpns_proto::server::ServerOutput::Relay {
                gateway,
                session: id,
                msg,
            } = out
            {
                let _ = self.office.hand_over(&gateway, id, msg);
            }
        }
        if let (Some(gw), Some(mut inbox)) = (&end.gateway, end.relay.take()) {
            {
                let mut relays = self.office.relays();
                if relays.get(gw).is_some_and(|tx| tx.same_channel(&inbox.tx)) {
                    relays.remove(gw);
                }
            }
            // Posted before it was taken back: for the forwards parked now.
            inbox.rx.close();
            while let Ok(letter) = inbox.rx.try_recv() {
                let _ = self.office.hand_over(gw, letter.session, letter.msg);
            }
        }
    }
}

/// Why a letter was not handed over ([`super::mailroom::Office::hand_over`]).
pub(super) enum NotTaken {
    /// The session's relay inbox is full.
    Full,
    /// No session of that PN GW has an inbox, and none parked that forward: the letter back.
    NoSession(Relayed),
}

impl super::mailroom::Office {
    /// Hands `msg` of forward `id` to the session of PN GW `gateway`: into its relay inbox,
    /// or, with that PN GW away, to what is parked for it.
    pub(super) fn hand_over(
        &self,
        gateway: &EntityId,
        id: DeliveryId,
        msg: Relayed,
    ) -> Result<(), NotTaken> {
        let inbox = self.relays().get(gateway).cloned();
        let msg = match inbox {
            Some(i) => match i.try_send(Box::new(Letter { session: id, msg })) {
                Ok(()) => return Ok(()),
                Err(mpsc::error::TrySendError::Full(_)) => return Err(NotTaken::Full),
                Err(mpsc::error::TrySendError::Closed(letter)) => letter.msg,
            },
            None => msg,
        };
        match self.parked().get_mut(gateway) {
            Some(p) => p.kept.hold(id, msg).map_err(NotTaken::NoSession),
            None => Err(NotTaken::NoSession(msg)),
        }
    }
}
