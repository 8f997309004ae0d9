//! Group content at the PN GW (docs/security.md §4.11): a member's Group Content is relayed,
//! unchanged, to each other member of the PN whose link proved it, and the sender is answered
//! how many. The PN GW cannot read it (it holds no group key) nor pass it off as another
//! member's (it holds no member's signing key); what it checks is only who may send: a proven
//! member, as itself, at a bounded rate.

use std::time::{Duration, Instant};

use cpns_wire::{Envelope, ErrorBody, ErrorCode, GroupContent, GroupContentSent, MsgKind};

use super::{Gateway, GatewayEvent, LinkId};
use crate::rate::TokenBucket;

/// Group Contents one link may send at once, by default ([`super::GatewayLimits`]).
pub const CONTENT_BURST: u32 = 32;
/// And then one per this interval, by default.
pub const CONTENT_EVERY: Duration = Duration::from_millis(100);

impl Gateway {
    pub(super) fn on_group_content(
        &mut self,
        now: Instant,
        link: LinkId,
        env: &Envelope,
        m: GroupContent,
    ) {
        if env.kind != MsgKind::Request {
            return;
        }
        if let Err(e) = self.may_send_content(now, link, &m) {
            return self.send_pan_response(link, env.msg_id, e);
        }
        let Some(pn) = self.pns.get(&m.pn_id) else {
            return;
        };
        let others: Vec<_> = pn
            .state
            .inventory
            .members
            .iter()
            .filter(|x| x.pne_id != m.sender)
            .filter_map(|x| self.proven_link_of(&x.pne_id))
            .collect();
        for to in &others {
            self.send_pan_notify(*to, m.clone());
        }
        let delivered = u32::try_from(others.len()).unwrap_or(u32::MAX);
        self.send_pan_response(
            link,
            env.msg_id,
            GroupContentSent {
                pn_id: m.pn_id,
                delivered,
            },
        );
        self.event(GatewayEvent::ContentRelayed {
            pn_id: m.pn_id,
            from: m.sender,
            delivered,
        });
    }

    /// A proven member of the PN, sending as itself, within its rate.
    fn may_send_content(
        &mut self,
        now: Instant,
        link: LinkId,
        m: &GroupContent,
    ) -> Result<(), ErrorBody> {
        let pne = self.proven_member_of(link, &m.pn_id, "send content to the PN")?;
        if m.sender != pne || m.certificate.pne_id != pne {
            return Err(ErrorBody::new(
                ErrorCode::Forbidden,
                "a member sends content only as itself",
            ));
        }
        let Some(l) = self.links.get_mut(&link) else {
            return Err(ErrorBody::new(ErrorCode::NotFound, "no such link"));
        };
        let (burst, every) = (self.cfg.limits.content_burst, self.cfg.limits.content_every);
        let bucket = l
            .content
            .get_or_insert_with(|| TokenBucket::new(now, burst, every));
        bucket.take(now).map_err(|wait| {
            ErrorBody::new(
                ErrorCode::Busy,
                format!(
                    "this PNE sends content faster than the PN GW relays it; try again in {} ms",
                    wait.as_millis().max(1)
                ),
            )
        })
    }
}
