//! The service directory (table `services`, its FTS5 index `services_fts`; migration 14,
//! docs/services.md). Visibility is decided in the query itself, so an entry a viewer may not
//! see never leaves the store for it.

use rusqlite::types::Value;
use rusqlite::{Connection, Row, params, params_from_iter};

use super::codec;
use crate::{
    DirectoryAsk, DirectoryView, Result, ServiceEntry, ServiceQuery, ServiceScope, ServiceViewer,
    StoreError, UnixMillis, WatchCandidate, WatchRecord,
};

const COLUMNS: &str = "s.dir_id, s.offerer, s.owner, s.service_id, s.service_type, \
                       s.scope_kind, s.scope_pn, s.scope_group, s.keywords, s.description, \
                       s.updated_at, s.expires_at";

fn scope_columns(scope: &ServiceScope) -> (i64, Option<Vec<u8>>, Option<String>) {
    match scope {
        ServiceScope::Pn(pn) => (1, Some(pn.as_bytes().to_vec()), None),
        ServiceScope::User => (2, None, None),
        ServiceScope::Group(g) => (3, None, Some(g.clone())),
        ServiceScope::Public => (4, None, None),
    }
}

fn decode(row: &Row<'_>) -> Result<ServiceEntry> {
    let kind: i64 = row.get("scope_kind")?;
    let scope = match kind {
        1 => ServiceScope::Pn(codec::pn_id(row, "scope_pn")?),
        2 => ServiceScope::User,
        3 => ServiceScope::Group(row.get("scope_group")?),
        4 => ServiceScope::Public,
        other => {
            return Err(StoreError::corrupt(
                "scope_kind",
                format!("{other} is no scope"),
            ));
        }
    };
    let keywords: String = row.get("keywords")?;
    let dir_id: i64 = row.get("dir_id")?;
    Ok(ServiceEntry {
        dir_id: u64::try_from(dir_id).map_err(|_| StoreError::corrupt("dir_id", "negative"))?,
        offerer: codec::id(row, "offerer")?,
        owner: codec::id(row, "owner")?,
        service_id: row.get("service_id")?,
        service_type: row.get("service_type")?,
        keywords: keywords.split(' ').map(str::to_string).collect(),
        scope,
        description: row.get("description")?,
        updated_at: row.get("updated_at")?,
        expires_at: row.get("expires_at")?,
    })
}

pub(super) fn publish(conn: &Connection, e: &ServiceEntry) -> Result<u64> {
    let known = codec::optional(
        conn,
        "SELECT 1 FROM entities WHERE id = ?",
        [e.offerer.as_str()],
        |_| Ok(()),
    )?;
    known.ok_or_else(|| StoreError::not_found(format!("entity {}", e.offerer)))?;
    if e.keywords.is_empty() || e.keywords.iter().any(|k| k.is_empty() || k.contains(' ')) {
        return Err(StoreError::conflict(
            "a service's keywords are one word each, at least one",
        ));
    }
    let (kind, pn, group) = scope_columns(&e.scope);
    let dir_id: i64 = conn
        .prepare_cached(
            "INSERT INTO services (offerer, owner, service_id, service_type, scope_kind, \
             scope_pn, scope_group, keywords, terms, pairs, description, created_at, \
             updated_at, expires_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) \
             ON CONFLICT (offerer, service_id) DO UPDATE SET \
             owner = excluded.owner, service_type = excluded.service_type, \
             scope_kind = excluded.scope_kind, scope_pn = excluded.scope_pn, \
             scope_group = excluded.scope_group, keywords = excluded.keywords, \
             terms = excluded.terms, pairs = excluded.pairs, \
             description = excluded.description, updated_at = excluded.updated_at, \
             expires_at = excluded.expires_at \
             RETURNING dir_id",
        )?
        .query_row(
            params![
                e.offerer.as_str(),
                e.owner.as_str(),
                e.service_id,
                e.service_type,
                kind,
                pn,
                group,
                e.keywords.join(" "),
                keyword_terms(&e.keywords),
                keyword_pairs(&e.keywords),
                e.description,
                e.updated_at,
                e.updated_at,
                e.expires_at
            ],
            |r| r.get(0),
        )?;
    u64::try_from(dir_id).map_err(|_| StoreError::corrupt("dir_id", "negative"))
}

pub(super) fn unpublish(
    conn: &Connection,
    offerer: &cpns_wire::EntityId,
    service_id: &str,
) -> Result<bool> {
    let n = codec::exec(
        conn,
        "DELETE FROM services WHERE offerer = ? AND service_id = ?",
        params![offerer.as_str(), service_id],
    )?;
    Ok(n > 0)
}

/// The visibility predicate on the row `s` and its parameters: public, the viewer's user's, its
/// PNs', its groups'; not expired; its offerer not recorded offline.
fn visible(viewer: &ServiceViewer, now: UnixMillis, sql: &mut String, args: &mut Vec<Value>) {
    sql.push_str(" (s.scope_kind = 4 OR (s.scope_kind = 2 AND s.owner = ?)");
    args.push(Value::Text(viewer.user.to_string()));
    if !viewer.pns.is_empty() {
        sql.push_str(" OR (s.scope_kind = 1 AND s.scope_pn IN (");
        sql.push_str(&vec!["?"; viewer.pns.len()].join(", "));
        sql.push_str("))");
        args.extend(
            viewer
                .pns
                .iter()
                .map(|p| Value::Blob(p.as_bytes().to_vec())),
        );
    }
    if !viewer.groups.is_empty() {
        sql.push_str(" OR (s.scope_kind = 3 AND s.scope_group IN (");
        sql.push_str(&vec!["?"; viewer.groups.len()].join(", "));
        sql.push_str("))");
        args.extend(viewer.groups.iter().map(|g| Value::Text(g.clone())));
    }
    sql.push_str(") AND s.expires_at > ?");
    args.push(Value::Integer(now));
    // An offerer the status hub recorded offline is gone: its entries wait for it (004 §5.5.5).
    // One never reported is shown: nothing says it is gone.
    sql.push_str(
        " AND NOT EXISTS (SELECT 1 FROM entities AS o \
         WHERE o.id = s.offerer AND o.status_code = ?)",
    );
    args.push(Value::Integer(i64::from(cpns_wire::Status::Offline.code())));
}

/// The `scoped` tokens of the user-, PN- and group-scoped entries `viewer` may see (migration
/// 17): each the exact name of a scope.
fn scope_tokens(viewer: &ServiceViewer) -> Vec<String> {
    let mut tokens = vec![format!("u{}", hex(viewer.user.as_str().as_bytes()))];
    tokens.extend(viewer.pns.iter().map(|p| format!("p{}", hex(p.as_bytes()))));
    tokens.extend(
        viewer
            .groups
            .iter()
            .map(|g| format!("g{}", hex(g.as_bytes()))),
    );
    tokens
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// The entries each of `offerers` publishes that `asker` may see now, by offerer (004 §5.5.10:
/// what a PN inventory shows of its members' services); nothing if `asker` is not enrolled.
pub(super) fn offered_to(
    conn: &Connection,
    asker: &cpns_wire::EntityId,
    offerers: &[cpns_wire::EntityId],
    now: UnixMillis,
) -> Result<Vec<ServiceEntry>> {
    let Some((viewer, _)) = viewer_of(conn, asker)? else {
        return Ok(Vec::new());
    };
    if offerers.is_empty() {
        return Ok(Vec::new());
    }
    let mut sql = format!("SELECT {COLUMNS} FROM services AS s WHERE s.offerer IN (");
    sql.push_str(&vec!["?"; offerers.len()].join(", "));
    sql.push_str(") AND");
    let mut args: Vec<Value> = offerers
        .iter()
        .map(|o| Value::Text(o.to_string()))
        .collect();
    visible(&viewer, now, &mut sql, &mut args);
    sql.push_str(" ORDER BY s.offerer, s.dir_id");
    codec::all(conn, &sql, params_from_iter(args), decode)
}

/// The asker as a viewer, with its capabilities of record; `None` if it is not enrolled.
fn viewer_of(
    conn: &Connection,
    asker: &cpns_wire::EntityId,
) -> Result<Option<(ServiceViewer, Option<cpns_wire::DeviceCapabilities>)>> {
    let found = codec::optional(
        conn,
        "SELECT owner, capabilities FROM entities WHERE id = ?",
        [asker.as_str()],
        |row| {
            Ok((
                codec::id(row, "owner")?,
                codec::capabilities(row, "capabilities")?,
            ))
        },
    )?;
    let Some((user, capabilities)) = found else {
        return Ok(None);
    };
    let pns = codec::all(
        conn,
        "SELECT p.pn_id FROM pn_members AS m JOIN pns AS p ON p.seq = m.pn_seq \
         WHERE m.pne_id = ? AND m.authenticated = 1 ORDER BY p.seq",
        [asker.as_str()],
        |row| codec::pn_id(row, "pn_id"),
    )?;
    let groups = super::groups::groups_of(conn, asker)?
        .iter()
        .map(ToString::to_string)
        .collect();
    let viewer = ServiceViewer { user, pns, groups };
    Ok(Some((viewer, capabilities)))
}

/// What `asker`'s directory request reads (run inside one read transaction).
pub(super) fn view(
    conn: &Connection,
    asker: &cpns_wire::EntityId,
    ask: &DirectoryAsk,
) -> Result<DirectoryView> {
    let Some((viewer, capabilities)) = viewer_of(conn, asker)? else {
        return Ok(DirectoryView::default());
    };
    let mut offered = 0;
    let mut watches = 0;
    let entries = match ask {
        DirectoryAsk::Watching => {
            watches = watch_count(conn, asker)?;
            Vec::new()
        }
        DirectoryAsk::Offered { service_id } => {
            let n: i64 = conn
                .prepare_cached(
                    "SELECT count(*) FROM services WHERE offerer = ? AND service_id <> ?",
                )?
                .query_row(params![asker.as_str(), service_id], |r| r.get(0))?;
            offered = u32::try_from(n).unwrap_or(u32::MAX);
            Vec::new()
        }
        DirectoryAsk::Discover(search) => discover(conn, &search.as_viewer(viewer.clone()))?,
        DirectoryAsk::Retrieve { dir_id, now } => {
            one(conn, *dir_id, &viewer, *now)?.into_iter().collect()
        }
    };
    Ok(DirectoryView {
        viewer: Some(viewer),
        capabilities,
        entries,
        offered,
        watches,
    })
}

/// A keyword's token in the index (migration 24): the hex of its text, so the whole keyword is
/// one token whatever its punctuation, and matches only itself.
fn term(keyword: &str) -> String {
    hex(keyword.as_bytes())
}

/// An entry's `terms` column: each keyword's token.
pub(super) fn keyword_terms(keywords: &[String]) -> String {
    keywords
        .iter()
        .map(|k| term(k))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The token of two keywords together (migration 24): the first 8 bytes of SHA-256 of the two
/// in byte order with a zero byte between (a keyword holds no control character), in hex. The
/// same whichever is named first.
fn pair(a: &str, b: &str) -> String {
    use sha2::{Digest, Sha256};
    let (first, second) = if a <= b { (a, b) } else { (b, a) };
    let digest = Sha256::new()
        .chain_update(first.as_bytes())
        .chain_update([0])
        .chain_update(second.as_bytes())
        .finalize();
    hex(&digest[..8])
}

/// An entry's `pairs` column: the token of each pair of its keywords (k(k-1)/2 of them).
pub(super) fn keyword_pairs(keywords: &[String]) -> String {
    let mut out = Vec::new();
    for (i, a) in keywords.iter().enumerate() {
        for b in &keywords[i + 1..] {
            out.push(pair(a, b));
        }
    }
    out.join(" ")
}

/// Tokens as FTS5 strings joined by `op`. A token is hex or a scope name, letters and digits
/// only, so none can be read as FTS5 syntax whatever the keyword was.
fn joined(tokens: impl IntoIterator<Item = String>, op: &str) -> String {
    tokens
        .into_iter()
        .map(|t| format!("\"{t}\""))
        .collect::<Vec<_>>()
        .join(op)
}

/// The FTS5 query of a discovery (migrations 17 and 24): its keywords (all of them, or any) in
/// an entry of one of the viewer's scopes, or in a public entry; without keywords, any entry of
/// those. All of two or more keywords in a public entry are found through the entry's pairs
/// (each keyword with the next), a list only as long as the entries having both.
fn match_expression(q: &ServiceQuery) -> String {
    let scoped = format!("scoped : ({})", joined(scope_tokens(&q.viewer), " OR "));
    if q.keywords.is_empty() {
        return format!("{scoped} OR public_mark : \"pub\"");
    }
    let op = if q.all { " AND " } else { " OR " };
    let terms = joined(q.keywords.iter().map(|k| term(k)), op);
    let public = if q.all && q.keywords.len() > 1 {
        let pairs = joined(q.keywords.windows(2).map(|w| pair(&w[0], &w[1])), " AND ");
        format!("public_pairs : ({pairs}) AND public_terms : ({terms})")
    } else {
        format!("public_terms : ({terms})")
    };
    format!("(terms : ({terms}) AND {scoped}) OR ({public})")
}

/// The index is read in directory-id order and stops at the page: each row it gives is checked
/// against the same visibility on the table, and the type.
/// One step of merging the directory's index into one segment (FTS5's incremental
/// optimize): about `pages` pages of merged index written; `start` begins a merge of every
/// segment, later steps go on with it. Whether the step did work (false: nothing was left to
/// merge).
pub(super) fn merge_step(conn: &Connection, pages: u32, start: bool) -> Result<bool> {
    let pages = i64::from(pages.max(1));
    let rank = if start { -pages } else { pages };
    let before = conn.total_changes();
    conn.execute(
        "INSERT INTO services_fts (services_fts, rank) VALUES ('merge', ?)",
        [rank],
    )?;
    // FTS5 counts a step that merged anything as two or more changes.
    Ok(conn.total_changes() - before >= 2)
}

pub(super) fn discover(conn: &Connection, q: &ServiceQuery) -> Result<Vec<ServiceEntry>> {
    let mut sql = format!(
        "SELECT {COLUMNS} FROM services_fts AS f JOIN services AS s ON s.dir_id = f.rowid \
         WHERE services_fts MATCH ? AND f.rowid > ? AND"
    );
    let mut args: Vec<Value> = vec![
        Value::Text(match_expression(q)),
        Value::Integer(i64::try_from(q.after).unwrap_or(i64::MAX)),
    ];
    visible(&q.viewer, q.now, &mut sql, &mut args);
    if let Some(t) = &q.service_type {
        sql.push_str(" AND s.service_type = ?");
        args.push(Value::Text(t.clone()));
    }
    sql.push_str(" ORDER BY f.rowid LIMIT ?");
    args.push(Value::Integer(i64::from(q.limit)));
    codec::all(conn, &sql, params_from_iter(args), decode)
}

pub(super) fn one(
    conn: &Connection,
    dir_id: u64,
    viewer: &ServiceViewer,
    now: UnixMillis,
) -> Result<Option<ServiceEntry>> {
    let mut sql = format!("SELECT {COLUMNS} FROM services AS s WHERE s.dir_id = ? AND");
    let mut args = vec![Value::Integer(i64::try_from(dir_id).unwrap_or(-1))];
    visible(viewer, now, &mut sql, &mut args);
    codec::optional(conn, &sql, params_from_iter(args), decode)
}

pub(super) fn add_watch(conn: &Connection, w: &WatchRecord) -> Result<u64> {
    let known = codec::optional(
        conn,
        "SELECT 1 FROM entities WHERE id = ?",
        [w.watcher.as_str()],
        |_| Ok(()),
    )?;
    known.ok_or_else(|| StoreError::not_found(format!("entity {}", w.watcher)))?;
    if w.keywords.iter().any(|k| k.is_empty() || k.contains(' ')) {
        return Err(StoreError::conflict("a watch's keywords are one word each"));
    }
    let id: i64 = conn
        .prepare_cached(
            "INSERT INTO service_watches (watcher, owner, pn_id, keywords, all_keywords, \
             service_type, created_at) VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING watch_id",
        )?
        .query_row(
            params![
                w.watcher.as_str(),
                w.owner.as_str(),
                w.pn_id.as_bytes().as_slice(),
                w.keywords.join(" "),
                i64::from(w.all),
                w.service_type,
                w.created_at
            ],
            |r| r.get(0),
        )?;
    let mut insert = conn.prepare_cached(
        "INSERT OR IGNORE INTO service_watch_keywords (keyword, watch_id) VALUES (?, ?)",
    )?;
    for k in &w.keywords {
        insert.execute(params![k, id])?;
    }
    u64::try_from(id).map_err(|_| StoreError::corrupt("watch_id", "negative"))
}

pub(super) fn remove_watch(
    conn: &Connection,
    watcher: &cpns_wire::EntityId,
    watch_id: u64,
) -> Result<bool> {
    let Ok(id) = i64::try_from(watch_id) else {
        return Ok(false);
    };
    let n = codec::exec(
        conn,
        "DELETE FROM service_watches WHERE watch_id = ? AND watcher = ?",
        params![id, watcher.as_str()],
    )?;
    if n > 0 {
        codec::exec(
            conn,
            "DELETE FROM service_watch_keywords WHERE watch_id = ?",
            [id],
        )?;
    }
    Ok(n > 0)
}

/// How many watches `watcher` keeps.
fn watch_count(conn: &Connection, watcher: &cpns_wire::EntityId) -> Result<u32> {
    let n: i64 = conn
        .prepare_cached("SELECT count(*) FROM service_watches WHERE watcher = ?")?
        .query_row([watcher.as_str()], |r| r.get(0))?;
    Ok(u32::try_from(n).unwrap_or(u32::MAX))
}

pub(super) fn watch_candidates(
    conn: &Connection,
    keywords: &[String],
    offerer: &cpns_wire::EntityId,
    limit: u32,
) -> Result<Vec<WatchCandidate>> {
    let mut sql = String::from(
        "SELECT w.watch_id, w.watcher, w.owner, w.pn_id, w.keywords, w.all_keywords, \
         w.service_type, w.created_at, p.gateway, m.sealed_session_key \
         FROM service_watches AS w \
         JOIN pns AS p ON p.pn_id = w.pn_id \
         JOIN pn_members AS m ON m.pn_seq = p.seq AND m.pne_id = w.watcher \
         WHERE m.authenticated = 1 AND m.sealed_session_key IS NOT NULL AND w.watcher <> ? \
         AND (w.keywords = ''",
    );
    let mut args: Vec<Value> = vec![Value::Text(offerer.to_string())];
    if !keywords.is_empty() {
        sql.push_str(
            " OR w.watch_id IN (SELECT watch_id FROM service_watch_keywords WHERE keyword IN (",
        );
        sql.push_str(&vec!["?"; keywords.len()].join(", "));
        sql.push_str("))");
        args.extend(keywords.iter().map(|k| Value::Text(k.clone())));
    }
    sql.push_str(") ORDER BY w.watch_id LIMIT ?");
    args.push(Value::Integer(i64::from(limit)));
    let mut found = codec::all(conn, &sql, params_from_iter(args), |row| {
        let keywords: String = row.get("keywords")?;
        let id: i64 = row.get("watch_id")?;
        let all: i64 = row.get("all_keywords")?;
        Ok(WatchCandidate {
            watch: WatchRecord {
                watch_id: u64::try_from(id)
                    .map_err(|_| StoreError::corrupt("watch_id", "negative"))?,
                watcher: codec::id(row, "watcher")?,
                owner: codec::id(row, "owner")?,
                pn_id: codec::pn_id(row, "pn_id")?,
                keywords: keywords
                    .split(' ')
                    .filter(|k| !k.is_empty())
                    .map(str::to_string)
                    .collect(),
                all: all != 0,
                service_type: row.get("service_type")?,
                created_at: row.get("created_at")?,
            },
            gateway: codec::id(row, "gateway")?,
            sealed_session_key: row.get("sealed_session_key")?,
            pns: Vec::new(),
            groups: Vec::new(),
        })
    })?;
    // The PNs each watcher is an authenticated member of.
    let mut pns_of = conn.prepare_cached(
        "SELECT p.pn_id FROM pn_members AS m JOIN pns AS p ON p.seq = m.pn_seq \
         WHERE m.pne_id = ? AND m.authenticated = 1 ORDER BY p.seq",
    )?;
    for c in &mut found {
        let rows = pns_of.query_map([c.watch.watcher.as_str()], |row| {
            Ok(codec::pn_id(row, "pn_id"))
        })?;
        for pn in rows {
            c.pns.push(pn??);
        }
        c.groups = super::groups::groups_of(conn, &c.watch.watcher)?
            .iter()
            .map(ToString::to_string)
            .collect();
    }
    Ok(found)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn words(w: &[&str]) -> Vec<String> {
        w.iter().map(|s| (*s).to_owned()).collect()
    }

    /// The tokens are as docs/services.md gives them, so another implementation of the store
    /// can read the same index: a keyword's hex, and a pair's first 8 bytes of SHA-256 of the
    /// two in byte order with a zero byte between (`renderer\0video`, computed elsewhere).
    #[test]
    fn tokens_are_the_documented_ones_in_either_order() {
        assert_eq!(keyword_terms(&words(&["tv", "4k"])), "7476 346b");
        assert_eq!(pair("video", "renderer"), "115e46d27d051801");
        assert_eq!(pair("renderer", "video"), "115e46d27d051801");
        assert_eq!(
            keyword_pairs(&words(&["a", "b", "c"])).split(' ').count(),
            3
        );
        assert_eq!(keyword_pairs(&words(&["a"])), "");
    }

    /// All of two keywords or more is asked of the public entries through their pairs; one
    /// keyword, or any of several, through the keywords themselves.
    #[test]
    fn pairs_are_asked_only_for_all_of_several_keywords() {
        let q = |k: &[&str], all| ServiceQuery {
            keywords: words(k),
            all,
            service_type: None,
            viewer: ServiceViewer {
                user: cpns_wire::UserId::new("alice").unwrap(),
                pns: Vec::new(),
                groups: Vec::new(),
            },
            now: 0,
            limit: 10,
            after: 0,
        };
        let pairs = |q: &ServiceQuery| match_expression(q).contains("public_pairs");
        assert!(pairs(&q(&["video", "renderer"], true)));
        assert!(pairs(&q(&["a", "b", "c"], true)));
        assert!(!pairs(&q(&["video"], true)));
        assert!(!pairs(&q(&["video", "renderer"], false)));
        assert!(!pairs(&q(&[], true)));
    }
}
