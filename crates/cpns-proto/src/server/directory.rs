//! What the server decides about the service directory (004 §5.5.5; docs/services.md), before
//! and after the store: whether a PNE may publish a description and what is kept of it, what a
//! discovery asks, how an entry is summarised, and which entries a device can consume. Pure
//! functions: the session's flow (`super::services`) reads the store and persists around them.

use cpns_service::{Scope, ServiceDescription};
use cpns_wire::{DeviceCapabilities, EntityId, ErrorBody, ErrorCode, PnId, ServiceSummary, UserId};

/// At most this many keywords in a discovery.
pub const MAX_ASKED_KEYWORDS: usize = 8;

/// Who may see an entry, as kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DirScope {
    /// The members of one PN.
    Pn(PnId),
    /// Every device of the offerer's user.
    User,
    /// The members of a service group.
    Group(String),
    /// Every authenticated device.
    Public,
}

/// A publish the server takes: what the directory keeps.
#[derive(Clone, Debug, PartialEq)]
pub struct Publish {
    /// The offerer's id for the service.
    pub service_id: String,
    /// Its type.
    pub service_type: String,
    /// Its keywords, normalised.
    pub keywords: Vec<String>,
    /// Who may see it.
    pub scope: DirScope,
    /// The description as kept: its canonical JSON.
    pub description: Vec<u8>,
    /// When its lease ends (Unix milliseconds).
    pub expires_at_ms: i64,
}

/// Most services one offerer keeps in the directory: a PNE cannot fill the store.
pub const MAX_OFFERED: u32 = 64;

/// Most watches one PNE keeps.
pub const MAX_WATCHES: u32 = 16;

/// Most watchers one publish tells (by watch id): a keyword many watch cannot make a publish
/// unbounded work.
pub const MAX_TOLD: u32 = 1024;

/// Most entries one discovery answer lists; more follow by paging.
pub const PAGE: u32 = 50;

/// What a directory request asks of the store besides the asker's view
/// ([`super::Load::Directory`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DirAsk {
    /// How many watches the asker keeps (a watch).
    Watching,
    /// How many services the asker offers besides `service_id` (a publish).
    Offered {
        /// The service published.
        service_id: String,
    },
    /// The entries a discovery finds, as the asker may see them, by directory id.
    Discover {
        /// Normalised keywords; none: any entry.
        keywords: Vec<String>,
        /// Every keyword must match (else any one).
        all: bool,
        /// Only this type.
        service_type: Option<String>,
        /// Unix milliseconds: entries whose lease ended by then are not read.
        now_ms: i64,
        /// At most this many.
        limit: u32,
        /// Only entries with a greater directory id.
        after: u64,
    },
    /// One entry, if the asker may see it.
    Retrieve {
        /// Its directory id.
        dir_id: u64,
        /// Unix milliseconds: an entry whose lease ended by then is not read.
        now_ms: i64,
    },
}

/// The asker as the directory sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirViewer {
    /// Its user.
    pub owner: UserId,
    /// The PNs it is an authenticated member of.
    pub pns: Vec<PnId>,
    /// The service groups it is a member of.
    pub groups: Vec<String>,
}

/// A directory entry as read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirEntry {
    /// Its directory id.
    pub dir_id: u64,
    /// Who offers it.
    pub offerer: EntityId,
    /// The offerer's user.
    pub owner: UserId,
    /// The description as kept (canonical JSON).
    pub description: Vec<u8>,
    /// When its lease ends (Unix milliseconds).
    pub expires_at_ms: i64,
}

/// The answer to [`super::Load::Directory`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DirectoryLoaded {
    /// The asker; `None` if it is not enrolled.
    pub viewer: Option<DirViewer>,
    /// Its capabilities of record.
    pub capabilities: Option<DeviceCapabilities>,
    /// What [`DirAsk`] named that the asker may see, by directory id.
    pub entries: Vec<DirEntry>,
    /// With [`DirAsk::Offered`]: how many services it offers besides that one.
    pub offered: u32,
    /// With [`DirAsk::Watching`]: how many watches it keeps.
    pub watches: u32,
}

/// A watch a publish may match, with what telling its watcher needs (the driver reads it
/// after storing the publish; `cpns_store::ServerStore::watch_candidates`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Watcher {
    /// The watch.
    pub watch_id: u64,
    /// The watching PNE.
    pub watcher: EntityId,
    /// Its user.
    pub owner: UserId,
    /// The PN whose SK_PNE seals the match.
    pub pn_id: PnId,
    /// The watcher's SK_PNE there.
    pub session_key: cpns_crypto::SessionKey,
    /// The PN GW serving that PN.
    pub gateway: EntityId,
    /// Normalised keywords; none: every entry.
    pub keywords: Vec<String>,
    /// Every keyword must match.
    pub all: bool,
    /// Only this type.
    pub service_type: Option<String>,
    /// The PNs the watcher is an authenticated member of.
    pub pns: Vec<PnId>,
    /// The service groups it is a member of.
    pub groups: Vec<String>,
}

/// Whether `w` is told of the entry `p` that `owner`'s device published: it matches the
/// watch's terms, and the watcher may see it (the scope, as discovery decides it).
pub fn watch_sees(w: &Watcher, p: &Publish, owner: &UserId) -> bool {
    let has = |k: &String| p.keywords.contains(k);
    let words = w.keywords.is_empty()
        || if w.all {
            w.keywords.iter().all(has)
        } else {
            w.keywords.iter().any(has)
        };
    let typed = w.service_type.as_ref().is_none_or(|t| *t == p.service_type);
    let visible = match &p.scope {
        DirScope::Public => true,
        DirScope::User => w.owner == *owner,
        DirScope::Pn(pn) => w.pns.contains(pn),
        DirScope::Group(g) => w.groups.contains(g),
    };
    words && typed && visible
}

/// A description as the directory reads it.
///
/// # Errors
/// `bad_request` with the description's fault.
pub fn parse(description: &[u8]) -> Result<ServiceDescription, ErrorBody> {
    cpns_service::parse(description)
        .map_err(|e| ErrorBody::new(ErrorCode::BadRequest, e.to_string()))
}

/// A PNE member of the PNs `member_of` and of the service groups `groups` publishes `d` at
/// `now_ms` (Unix milliseconds): what the directory keeps, or the refusal to answer it with. A PNE
/// publishes in a PN or a group only as one of its members.
///
/// # Errors
/// `forbidden` for a PN or a group it is not a member of.
pub fn publish(
    d: ServiceDescription,
    member_of: &[PnId],
    groups: &[String],
    now_ms: i64,
) -> Result<Publish, ErrorBody> {
    let scope = match &d.scope {
        Scope::Pn { pn_id } if member_of.contains(pn_id) => DirScope::Pn(*pn_id),
        Scope::Pn { pn_id } => {
            return Err(ErrorBody::new(
                ErrorCode::Forbidden,
                format!("only a member of PN {pn_id} publishes in it"),
            ));
        }
        Scope::User => DirScope::User,
        Scope::Group { group_id } => {
            // Kept as the group id's canonical text, as viewers' groups are named.
            let canonical = group_id
                .parse::<cpns_wire::GroupId>()
                .ok()
                .map(|g| g.to_string())
                .filter(|g| groups.contains(g));
            let Some(g) = canonical else {
                return Err(ErrorBody::new(
                    ErrorCode::Forbidden,
                    format!("only a member of service group {group_id} publishes in it"),
                ));
            };
            DirScope::Group(g)
        }
        Scope::Public => DirScope::Public,
    };
    Ok(Publish {
        expires_at_ms: now_ms.saturating_add(i64::from(d.lease_s) * 1000),
        description: d.to_json(),
        service_id: d.service_id,
        service_type: d.service_type,
        keywords: d.keywords,
        scope,
    })
}

/// The keywords a discovery or a watch asks for, normalised (none: any entry).
///
/// # Errors
/// `bad_request`: a keyword that is no keyword, or more than [`MAX_ASKED_KEYWORDS`].
pub fn asked_keywords(keywords: &[String]) -> Result<Vec<String>, ErrorBody> {
    if keywords.is_empty() {
        return Ok(Vec::new());
    }
    if keywords.len() > MAX_ASKED_KEYWORDS {
        return Err(ErrorBody::new(
            ErrorCode::BadRequest,
            format!("a discovery asks for at most {MAX_ASKED_KEYWORDS} keywords"),
        ));
    }
    cpns_service::normalised_keywords(keywords)
        .map_err(|e| ErrorBody::new(ErrorCode::BadRequest, e.to_string()))
}

/// A kept entry as discovery lists it; `None` if what is kept is not a description (a store
/// the server did not write).
pub fn summary(
    dir_id: u64,
    offerer: &EntityId,
    owner: &UserId,
    kept: &[u8],
) -> Option<(ServiceSummary, ServiceDescription)> {
    let d = cpns_service::parse(kept).ok()?;
    let s = ServiceSummary {
        dir_id,
        offerer: offerer.clone(),
        owner: owner.clone(),
        service_id: d.service_id.clone(),
        service_type: d.service_type.clone(),
        name: d.name.clone(),
        keywords: d.keywords.clone(),
    };
    Some((s, d))
}

/// Whether a device with `caps` can consume the service `d` describes (`fits_me`).
pub fn fits(d: &ServiceDescription, caps: &DeviceCapabilities) -> bool {
    d.requires.fits(caps)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    const NOW: i64 = 1_800_000_000_000;

    fn publish(d: &[u8], member_of: &[PnId], now_ms: i64) -> Result<Publish, ErrorBody> {
        super::publish(parse(d)?, member_of, &[], now_ms)
    }

    fn doc(scope: &str) -> Vec<u8> {
        format!(
            r#"{{"service_id":"renderer","name":"TV","type":"media.renderer","version":"1",
                "keywords":["Video"],"scope":{scope},"delivery":["push"],"lease_s":60,
                "requires":{{"has_ui":true}}}}"#
        )
        .into_bytes()
    }

    fn pn(b: u8) -> PnId {
        PnId::from_bytes([b; 16])
    }

    #[test]
    fn a_member_publishes_in_its_pn_and_anyone_for_its_user_or_everyone() {
        let home = pn(1);
        let scope = format!(r#"{{"kind":"pn","pn_id":"{home}"}}"#);
        let p = publish(&doc(&scope), &[pn(2), home], NOW).unwrap();
        assert_eq!(p.scope, DirScope::Pn(home));
        assert_eq!(p.keywords, ["video"]);
        assert_eq!(p.expires_at_ms, NOW + 60_000);
        assert_eq!(
            (p.service_id.as_str(), p.service_type.as_str()),
            ("renderer", "media.renderer")
        );
        // What is kept is the description, normalised, and reads back.
        assert_eq!(
            cpns_service::parse(&p.description).unwrap().keywords,
            ["video"]
        );
        let e = publish(&doc(&scope), &[pn(2)], NOW).unwrap_err();
        assert_eq!(e.code, ErrorCode::Forbidden);
        assert!(e.reason.contains(&home.to_string()), "{}", e.reason);
        assert_eq!(
            publish(&doc(r#"{"kind":"user"}"#), &[], NOW).unwrap().scope,
            DirScope::User
        );
        assert_eq!(
            publish(&doc(r#"{"kind":"public"}"#), &[], NOW)
                .unwrap()
                .scope,
            DirScope::Public
        );
        let e = publish(&doc(r#"{"kind":"group","group_id":"family"}"#), &[], NOW).unwrap_err();
        assert_eq!(e.code, ErrorCode::Forbidden);
        // A member of the group publishes in it, the id kept canonical.
        let g = "0A".repeat(16);
        let scope = format!(r#"{{"kind":"group","group_id":"{g}"}}"#);
        let mine = vec!["0a".repeat(16)];
        let p = super::publish(parse(&doc(&scope)).unwrap(), &[], &mine, NOW).unwrap();
        assert_eq!(p.scope, DirScope::Group("0a".repeat(16)));
        let e = super::publish(parse(&doc(&scope)).unwrap(), &[], &[], NOW).unwrap_err();
        assert_eq!(e.code, ErrorCode::Forbidden);
        let e = publish(b"{}", &[], NOW).unwrap_err();
        assert_eq!(e.code, ErrorCode::BadRequest);
        assert!(
            e.reason.contains("not a service description"),
            "{}",
            e.reason
        );
    }

    #[test]
    fn a_discovery_asks_for_a_few_keywords() {
        let ask = |k: &[&str]| k.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(asked_keywords(&ask(&[])).unwrap(), Vec::<String>::new());
        assert_eq!(
            asked_keywords(&ask(&[" Video ", "video", "TV"])).unwrap(),
            ["video", "tv"]
        );
        assert_eq!(
            asked_keywords(&ask(&["two words"])).unwrap_err().code,
            ErrorCode::BadRequest
        );
        let nine: Vec<String> = (0..MAX_ASKED_KEYWORDS + 1)
            .map(|i| format!("k{i}"))
            .collect();
        let refs: Vec<&str> = nine.iter().map(String::as_str).collect();
        assert_eq!(
            asked_keywords(&ask(&refs)).unwrap_err().code,
            ErrorCode::BadRequest
        );
        let eight = &refs[..MAX_ASKED_KEYWORDS];
        assert_eq!(
            asked_keywords(&ask(eight)).unwrap().len(),
            MAX_ASKED_KEYWORDS
        );
    }

    #[test]
    fn an_entry_is_summarised_from_what_is_kept_and_filtered_by_what_the_device_can_do() {
        let p = publish(&doc(r#"{"kind":"user"}"#), &[], NOW).unwrap();
        let tv = EntityId::new("tv").unwrap();
        let alice = UserId::new("alice").unwrap();
        let (s, d) = summary(7, &tv, &alice, &p.description).unwrap();
        assert_eq!(
            (s.dir_id, s.name.as_str(), s.keywords.clone()),
            (7, "TV", vec!["video".to_string()])
        );
        assert_eq!((&s.offerer, &s.owner), (&tv, &alice));
        assert!(summary(7, &tv, &alice, b"garbage").is_none());
        let with_ui = DeviceCapabilities {
            has_ui: true,
            ..DeviceCapabilities::default()
        };
        assert!(fits(&d, &with_ui));
        assert!(!fits(&d, &DeviceCapabilities::default()));
    }
}
