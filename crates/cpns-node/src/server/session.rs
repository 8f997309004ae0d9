//! One PN GW session: the [`ServerSession`] machine's loop over its connection. Frames,
//! deadlines, mail from other sessions and the status hub's notifications go in; what the
//! machine outputs is carried out here — frames queued, loads and effects on the store of
//! record (a failed one ends only the flow that asked), what the status hub must publish,
//! events to whoever runs the server.

use std::sync::Arc;
use std::time::Instant;

use cpns_proto::ProtoError;
use cpns_proto::server::{Publish, ServerOutput, ServerSession};
use cpns_proto::status::Subscription;
use cpns_store::ServerStore;
use cpns_wire::EntityId;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;
use tracing::{debug, info, warn};

use super::{ServerNode, SessionEnd, Signal};
use crate::admission::{Authenticated, Unauthenticated};
use crate::clock::{cancelled, sleep_until};
use crate::error::NodeError;
use crate::frames::{FrameError, FramedConn};
use crate::status_hub::{MAILBOX_LIMIT, Mailbox, Subscriber};
use crate::trace::report;
use crate::{clock, server_store};

impl<S: ServerStore + Clone> ServerNode<S> {
    /// The session machine over an established connection, until it or the server ends;
    /// then every forward through it ends at its other session too.
    pub(super) async fn run_session<T: AsyncRead + AsyncWrite + Unpin>(
        &self,
        conn: Box<FramedConn<T>>,
        exporter: [u8; 32],
        slot: Unauthenticated,
        stop: watch::Receiver<Signal>,
        end: &mut SessionEnd,
    ) -> Result<(), NodeError> {
        // In a box of its own, made once: the session's future holds a pointer to it.
        let mut session = Box::new(ServerSession::new(
            std::sync::Arc::clone(&self.proto),
            exporter,
            Instant::now(),
            cpns_crypto::MachineRng::os(),
        ));
        session.set_wall_clock(Instant::now(), clock::unix_millis());
        let result = self.session_loop(&mut session, conn, slot, stop, end).await;
        self.end_relays(&mut session, end);
        result
    }

    /// The session machine's loop, until its connection or the server ends.
    async fn session_loop<T: AsyncRead + AsyncWrite + Unpin>(
        &self,
        session: &mut ServerSession,
        mut conn: Box<FramedConn<T>>,
        slot: Unauthenticated,
        mut stop: watch::Receiver<Signal>,
        end: &mut SessionEnd,
    ) -> Result<(), NodeError> {
        let mut slot = Slot::Unauthenticated(slot);
        loop {
            if !Box::pin(self.drain(session, &mut conn, end)).await? {
                conn.close().await;
                return Ok(());
            }
            if let Slot::Unauthenticated(_) = &slot
                && let Some(gw) = session.gateway().cloned()
            {
                let Slot::Unauthenticated(s) = std::mem::replace(&mut slot, Slot::Gone) else {
                    return Err(NodeError::Ended("session slot lost".into()));
                };
                let Some(authed) = s.authenticate() else {
                    warn!(%gw, "refusing an authenticated PN GW: every session slot is taken");
                    return Err(NodeError::Ended("every session slot is taken".into()));
                };
                info!(%gw, "PN GW session authenticated");
                slot = Slot::Authenticated(authed);
                end.gateway = Some(gw.clone());
                // What its last session was sending from outside goes on here.
                self.unpark_outbound(session, end, &gw);
                // A mailbox only for a session with someone to notify (an idle session's
                // memory, ARCHITECTURE decision 22).
                self.reach(end, vec![(gw, true)]);
                conn.set_max_frame(self.cfg.proto.max_frame);
            }
            let deadline = session.poll_timeout().map(tokio::time::Instant::from_std);
            let evicted = match &slot {
                Slot::Unauthenticated(s) => Some(s.evicted().clone()),
                _ => None,
            };
            let mailbox = end.mailbox.clone();
            // While more than half of what the PN GW may leave unread waits for it, what other
            // sessions relay here (forwarded chunks) waits in the relay inbox: backpressure on
            // the forwards, not a cut-off; the connection is read and written meanwhile.
            let congested = conn.queued() > self.cfg.max_queued / 2;
            let drain_to = congested.then_some(self.cfg.max_queued / 2);
            tokio::select! {
                frame = conn.next_frame_or_drained(drain_to) => match frame {
                    None => {}
                    Some(Ok(mut frame)) => {
                        let handled = session.handle_frame(Instant::now(), &mut frame);
                        if let Err(e @ ProtoError::UnsupportedVersion { .. }) = &handled {
                            debug!(error = %e, "dropped a frame of another protocol version");
                        } else if let Err(e) = handled {
                            warn!(error = %e, "closing session: undecodable frame");
                            return Err(e.into());
                        }
                    }
                    Some(Err(FrameError::Closed)) => return Ok(()),
                    Some(Err(e @ (FrameError::Io(_) | FrameError::Truncated))) => {
                        debug!(error = %e, "connection lost");
                        return Err(e.into());
                    }
                    Some(Err(e)) => {
                        warn!(error = %e, "closing session");
                        return Err(e.into());
                    }
                },
                () = sleep_until(deadline) => session.handle_timeout(Instant::now()),
                Some(notes) = take_mail(mailbox) => {
                    for n in notes {
                        if let Subscriber::Entity(to) = n.to {
                            session.notify(to, n.notification);
                        }
                    }
                }
                Some((id, msg)) = super::relay::next_letter(&mut end.relay), if !congested => {
                    session.relayed(id, msg);
                }
                () = cancelled(evicted) => {
                    return Err(NodeError::Ended(
                        "evicted: a newer connection needed the slot".into(),
                    ));
                }
                changed = stop.changed() => {
                    if changed.is_err() || stop.borrow().stop {
                        return Ok(());
                    }
                    self.deliver_mail(session, end);
                }
            }
        }
    }

    /// Carries out everything the session asks; false once it asked to close.
    async fn drain<T: AsyncRead + AsyncWrite + Unpin>(
        &self,
        session: &mut ServerSession,
        conn: &mut FramedConn<T>,
        end: &mut SessionEnd,
    ) -> Result<bool, NodeError> {
        while let Some(out) = session.poll_output() {
            match out {
                ServerOutput::Transmit { frame, trace } => {
                    if self.trace.is_some() {
                        let peer = session
                            .gateway()
                            .map_or_else(|| "gateway".to_string(), |g| g.to_string());
                        report(&self.trace, "server", &peer, &trace);
                    }
                    conn.queue(&frame)?;
                }
                ServerOutput::Load { token, load } => {
                    conn.write_now()?;
                    let loaded = Box::pin(server_store::load(
                        &self.store,
                        &self.master,
                        &self.keys,
                        &load,
                    ))
                    .await;
                    // A failed read ends the flow that asked, not the session.
                    if let Err(e) = &loaded {
                        warn!(error = %e, load = load.name(), "load failed");
                    }
                    session.handle_loaded(Instant::now(), token, loaded)?;
                }
                ServerOutput::Persist { token, effect } => {
                    conn.write_now()?;
                    let result =
                        Box::pin(server_store::persist(&self.store, &self.master, effect)).await;
                    if let Err(e) = &result {
                        warn!(error = %e, "persist failed");
                    }
                    session.handle_persisted(Instant::now(), token, result)?;
                }
                ServerOutput::Publish(p) => self.publish(end, p),
                ServerOutput::DeliveryStarted { ask, result } => {
                    // Its asker was told it timed out: it does not go ahead behind its back.
                    if let Some(late) = end.outbound.started(ask, result) {
                        session.abandon_delivery(late);
                    }
                }
                ServerOutput::ReadContent {
                    session: id,
                    offset,
                    len,
                } => {
                    // What waits for the PN GW goes out first: its socket paces the reads, so
                    // deliveries from outside never fill the queue a PN GW may leave unread.
                    if conn.queued() > self.cfg.max_queued / 2 {
                        // A PN GW that does not read within a flow's time is cut off: the
                        // session does not wait on it for ever.
                        let wait = self.cfg.proto.timeouts.flow;
                        tokio::time::timeout(wait, conn.flush())
                            .await
                            .map_err(|_| {
                                NodeError::Ended("the PN GW did not read what it was sent".into())
                            })??;
                    } else {
                        conn.write_now()?;
                    }
                    let read = end.outbound.read(id, offset, len).await;
                    session.handle_content_read(id, offset, read);
                }
                ServerOutput::Event(e) => {
                    end.outbound.tell(&e);
                    if let cpns_proto::server::ServerEvent::InventoryChanged {
                        owner,
                        pn_id,
                        pne,
                        change,
                    } = &e
                    {
                        // Nobody following is no error.
                        let _ = self.office.inventory.send(super::InventoryNote {
                            owner: owner.clone(),
                            pn_id: *pn_id,
                            pne: pne.clone(),
                            change: *change,
                        });
                    }
                    debug!(event = ?e, "server");
                    if let Some(tx) = &self.events
                        && tx.try_send(e).is_err()
                    {
                        debug!("server event dropped: the consumer is not keeping up");
                    }
                }
                ServerOutput::AskGateway {
                    gateway,
                    ask,
                    request,
                } => self.ask_peer(session, gateway, ask, request),
                ServerOutput::GatewayAnswer { ask, answer } => {
                    let reply = self.room().replies.remove(&ask);
                    if let Some((_, reply)) = reply {
                        let _ = reply.send(answer);
                    }
                }
                ServerOutput::CapabilitiesAnswered { ask, result } => {
                    let reply = self.room().caps_replies.remove(&ask);
                    if let Some((_, reply)) = reply {
                        let _ = reply.send(result);
                    }
                }
                ServerOutput::Notice {
                    gateway,
                    to,
                    notice,
                } => self.post_notice(&gateway, to, notice),
                ServerOutput::Forward { gateway, route } => {
                    self.forward(session, end, gateway, route)
                }
                ServerOutput::Relay {
                    gateway,
                    session: id,
                    msg,
                } => self.relay(session, end, &gateway, id, msg),
                ServerOutput::Close { reason } => {
                    debug!(%reason, "closing session");
                    return Ok(false);
                }
            }
        }
        Ok(true)
    }

    /// Carries out what the session's machine says the status hub must do, once the effect it
    /// follows is stored (docs/device-status.md, "Fan-out").
    fn publish(&self, end: &mut SessionEnd, p: Publish) {
        match p {
            Publish::Changed(states) => {
                for state in states {
                    self.hub.publish(state);
                }
            }
            Publish::Subscribed {
                subscription,
                states,
            } => {
                let subscription = Subscription {
                    id: subscription.id,
                    subscriber: Subscriber::Entity(subscription.subscriber),
                    watched: subscription.watched,
                    policy: subscription.policy,
                };
                // The snapshot was made by the machine from the same records.
                let _ = self.hub.subscribe(Instant::now(), subscription, states);
            }
            Publish::Unsubscribed { subscriber, id } => {
                self.hub.unsubscribe(&Subscriber::Entity(subscriber), id);
            }
            Publish::Reach { entity, here } => self.reach(end, vec![(entity, here)]),
        }
    }

    /// Attaches the entities this session reaches (its PN GW, PNEs it reported online or that
    /// subscribed through it) that hold subscriptions to its mailbox, made when first needed;
    /// detaches those it no longer reaches.
    fn reach(&self, end: &mut SessionEnd, reach: Vec<(EntityId, bool)>) {
        for (entity, here) in reach {
            let who = Subscriber::Entity(entity.clone());
            if here {
                if self.hub.count_of(&who) == 0 {
                    continue;
                }
                let mailbox = end
                    .mailbox
                    .get_or_insert_with(|| Mailbox::new(MAILBOX_LIMIT));
                self.hub.attach(who, mailbox);
                end.attached.insert(entity);
            } else if let Some(mailbox) = &end.mailbox {
                self.hub.detach(&who, mailbox);
                end.attached.remove(&entity);
            }
        }
    }
}

/// The notifications waiting in `mailbox`; never without one.
async fn take_mail(mailbox: Option<Arc<Mailbox>>) -> Option<Vec<crate::status_hub::Pending>> {
    match mailbox {
        Some(m) => m.take().await,
        None => std::future::pending().await,
    }
}

/// The connection slot a session holds (kept for its `Drop`, which gives the slot back).
pub(super) enum Slot {
    Unauthenticated(Unauthenticated),
    Authenticated(#[allow(dead_code)] Authenticated),
    Gone,
}
