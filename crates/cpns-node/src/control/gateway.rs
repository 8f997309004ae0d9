//! The PN GW's verbs on its control socket, its owner's (docs/control-api.md, "PN GW"): its
//! PNs and who confirmed their group keys, release, invite, expel (000 §6.6.2-6.6.5), a PN GW-
//! initiated establishment (000 §6.6.1.2), and its own capabilities (004 §5.5.1). Each verb
//! is a command of the running PN GW ([`GatewayHandle`]).

use cpns_control::{ApiError, Capabilities, Event, Outcome, Request, Response, Role, Targets};
use cpns_proto::gateway::EstablishTargets;
use cpns_proto::gateway::Outcome as GwOutcome;
use cpns_wire::ErrorCode;
use tokio::sync::mpsc;

use super::pne::{hello, one_pn, pns};
use super::{Answer, api_error};
use crate::NodeError;
use crate::gateway::{GatewayGroupAsk, GatewayHandle};

/// Answers the control verbs of a running PN GW.
#[derive(Clone, Debug)]
pub struct GatewayApi {
    handle: GatewayHandle,
}

impl GatewayApi {
    /// The verbs of the PN GW `handle` runs.
    pub fn new(handle: GatewayHandle) -> Self {
        Self { handle }
    }

    /// Answers one request.
    pub async fn answer(&self, request: Request) -> Answer {
        let h = &self.handle;
        let answered = match request {
            Request::Hello {} => Ok(hello(Role::Gateway, Some(h.id().clone()))),
            Request::Traffic {} => {
                let [wan_frames_in, wan_bytes_in, wan_frames_out, wan_bytes_out] =
                    h.wan_traffic().read();
                Ok(Response::Traffic {
                    wan_frames_in,
                    wan_bytes_in,
                    wan_frames_out,
                    wan_bytes_out,
                })
            }
            Request::Show {} => h
                .inventory()
                .await
                .map(|i| Response::Show { pns: pns(&i) })
                .map_err(api_error),
            Request::Members { pn_id } => self.members(pn_id).await,
            Request::Release { pn_id } => h
                .release(pn_id)
                .await
                .map(|r| Response::Release {
                    pn_id: r.pn_id,
                    notified: Some(r.notified),
                })
                .map_err(api_error),
            Request::Expel { pn_id, pne } => h
                .expel(pn_id, pne.clone())
                .await
                .map(|r| Response::Expel {
                    pn_id: r.pn_id,
                    pne,
                    notified: Some(r.notified),
                    epoch: r.epoch,
                })
                .map_err(api_error),
            Request::Invite { pn_id, pne } => match h.invite(pn_id, pne.clone()).await {
                Ok(_) => Ok(Response::Invite {
                    pn_id,
                    pne,
                    accepted: true,
                }),
                Err(NodeError::Rejected(e)) if e.code == ErrorCode::Declined => {
                    Ok(Response::Invite {
                        pn_id,
                        pne,
                        accepted: false,
                    })
                }
                Err(e) => Err(api_error(e)),
            },
            Request::Establish { with, wait } => return self.establish(with, wait).await,
            r @ (Request::GroupCreate { .. }
            | Request::GroupInvite { .. }
            | Request::GroupExpel { .. }
            | Request::GroupDelete { .. }
            | Request::GroupMembers { .. }) => self.group(r).await,
            Request::Caps { entity, live } => {
                if entity.as_ref().is_some_and(|e| e != h.id()) || live {
                    return ApiError::bad_request(
                        "a PN GW answers with its own capabilities: name no entity, ask no live",
                    )
                    .into();
                }
                h.capabilities(None)
                    .await
                    .map(|c| Response::Caps {
                        entity: h.id().clone(),
                        live: false,
                        capabilities: Capabilities::from(&c),
                    })
                    .map_err(api_error)
            }
            Request::CapsSet { capabilities } => match capabilities.to_device() {
                Ok(c) => h
                    .capabilities(Some(c))
                    .await
                    .map(|c| Response::CapsSet {
                        entity: h.id().clone(),
                        capabilities: Capabilities::from(&c),
                    })
                    .map_err(api_error),
                Err(why) => Err(ApiError::bad_request(why)),
            },
            r @ (Request::Query { .. }
            | Request::ContentsSet { .. }
            | Request::InventorySubscribe { .. }
            | Request::InventoryFollow { .. }
            | Request::Setup { .. }
            | Request::Register { .. }
            | Request::Join { .. }
            | Request::Leave { .. }
            | Request::AnswerInvitation { .. }
            | Request::Events {}
            | Request::Status { .. }
            | Request::StatusSet { .. }
            | Request::Subscribe { .. }
            | Request::UsageRecord { .. }
            | Request::UsagePrefs {}
            | Request::UsagePrefSet { .. }
            | Request::UsageSummary {}
            | Request::UsageSend {}
            | Request::Usage { .. }
            | Request::Charging { .. }
            | Request::DirectoryMerge { .. }
            | Request::Send { .. }
            | Request::ServicePublish { .. }
            | Request::ServiceUnpublish { .. }
            | Request::ServiceDiscover { .. }
            | Request::ServiceRetrieve { .. }
            | Request::ServiceWatch { .. }
            | Request::ServiceUnwatch { .. }
            | Request::GroupAnswer { .. }
            | Request::GroupJoin { .. }
            | Request::GroupLeave { .. }
            | Request::GroupKey { .. }
            | Request::Groups {}
            | Request::GroupSend { .. }
            | Request::Deliver { .. }
            | Request::DeliveryControl { .. }
            | Request::DeliveryRequest { .. }
            | Request::MessageSend { .. }) => Err(Role::Gateway.refusal(&r)),
        };
        answered.into()
    }

    /// A service group verb of the owner (004 §5.5.9), of the groups its user owns.
    async fn group(&self, request: Request) -> Result<Response, ApiError> {
        let ask = match &request {
            Request::GroupCreate {
                name,
                open_to_user,
                owning,
            } => {
                let Some(owning) = owning.clone() else {
                    return Err(ApiError::bad_request(
                        "a PN GW makes a group for a device of its owner: name it as `owning`",
                    ));
                };
                GatewayGroupAsk::Create(name.clone(), *open_to_user, owning)
            }
            Request::GroupInvite { group_id, pne } => {
                GatewayGroupAsk::Invite(*group_id, pne.clone())
            }
            Request::GroupExpel { group_id, pne } => GatewayGroupAsk::Expel(*group_id, pne.clone()),
            Request::GroupDelete { group_id } => GatewayGroupAsk::Delete(*group_id),
            Request::GroupMembers { group_id } => GatewayGroupAsk::Members(*group_id),
            other => return Err(Role::Gateway.refusal(other)),
        };
        let outcome = self.handle.group(ask).await.map_err(api_error)?;
        Ok(match (request, outcome) {
            (Request::GroupCreate { .. }, GwOutcome::GroupDone { group_id, epoch }) => {
                Response::GroupCreate { group_id, epoch }
            }
            (Request::GroupInvite { pne, .. }, GwOutcome::GroupDone { group_id, .. }) => {
                Response::GroupInvite { group_id, pne }
            }
            (Request::GroupExpel { pne, .. }, GwOutcome::GroupDone { group_id, epoch }) => {
                Response::GroupExpel {
                    group_id,
                    pne,
                    epoch,
                }
            }
            (Request::GroupDelete { .. }, GwOutcome::GroupDone { group_id, .. }) => {
                Response::GroupDelete { group_id }
            }
            (Request::GroupMembers { .. }, GwOutcome::GroupMembers(m)) => Response::GroupMembers {
                group_id: m.group_id,
                name: m.name,
                epoch: m.epoch,
                members: m.members.into_iter().map(Into::into).collect(),
            },
            _ => {
                return Err(ApiError::internal(
                    "the PN GW's machine ended a group request with another outcome",
                ));
            }
        })
    }

    /// One PN, with its current group key epoch and who confirmed holding it.
    async fn members(&self, pn_id: cpns_wire::PnId) -> Result<Response, ApiError> {
        let held = self.handle.inventory().await.map_err(api_error)?;
        let mut pn = one_pn(&held, pn_id)?;
        if let Some(c) = self.handle.confirmations(pn_id).await.map_err(api_error)? {
            pn.epoch = c.epoch;
            pn.confirmed = Some(c.confirmed);
        }
        Ok(Response::Members { pns: vec![pn] })
    }

    /// 000 §6.6.1.2: starts the establishment and answers at once; with `wait`, the
    /// connection then gets its `completed` event.
    async fn establish(&self, with: Targets, wait: bool) -> Answer {
        let targets = match with {
            Targets::All => EstablishTargets::All,
            Targets::List(pnes) => EstablishTargets::Invite(pnes),
            Targets::OneToOne => {
                return ApiError::bad_request(
                    "a PN GW establishes with \"all\" or a list of PNEs (000 §6.6.1.2)",
                )
                .into();
            }
        };
        let started = match self.handle.establish(targets).await {
            Ok(s) => s,
            Err(e) => return api_error(e).into(),
        };
        let first = Response::Establish {
            command: started.id.0,
            pn_id: started.pn_id,
        };
        if !wait {
            return Answer::One(Ok(first));
        }
        let (tx, rx) = mpsc::channel(1);
        let command = started.id.0;
        tokio::spawn(async move {
            let (outcome, error) = match started.completed().await {
                Ok(inventory) => (
                    Some(Outcome::Established {
                        pn: (&inventory).into(),
                    }),
                    None,
                ),
                Err(e) => (None, Some(api_error(e))),
            };
            let _ = tx
                .send(Event::Completed {
                    command,
                    flow: super::events::flow_name(cpns_proto::Flow::PnEstablishment).into(),
                    outcome,
                    error,
                })
                .await;
        });
        Answer::Stream(first, rx)
    }
}
