-- Service groups (004 §5.5.9, §5.5.7.2; docs/services.md, "Service groups"): a group of PNEs,
-- across PNs and users, owned by the user of the PNE that made it, with a key of its own moved
-- to a new epoch on every membership change. Only the current epoch's key is kept, sealed at
-- rest under the server's master key (docs/security.md §4.7); it is deleted with the group.
CREATE TABLE service_groups (
    group_id     BLOB    NOT NULL PRIMARY KEY CHECK (length(group_id) = 16),
    name         TEXT    NOT NULL,
    owner        TEXT    NOT NULL,
    creator      TEXT    NOT NULL REFERENCES entities (id),
    open_to_user INTEGER NOT NULL CHECK (open_to_user IN (0, 1)),
    epoch        INTEGER NOT NULL CHECK (epoch >= 1),
    sealed_key   BLOB    NOT NULL,
    created_at   INTEGER NOT NULL
) STRICT, WITHOUT ROWID;

-- Its members. `pn_id` is the PN whose SK_PNE the member's request was sealed under when it
-- joined: its pushes (key copies, content) are sealed under that same key, so a member that left
-- that PN hears nothing more until it joins the group again.
CREATE TABLE service_group_members (
    group_id  BLOB    NOT NULL REFERENCES service_groups (group_id) ON DELETE CASCADE,
    entity    TEXT    NOT NULL,
    owner     TEXT    NOT NULL,
    pn_id     BLOB    NOT NULL CHECK (length(pn_id) = 16),
    joined_at INTEGER NOT NULL,
    PRIMARY KEY (group_id, entity)
) STRICT, WITHOUT ROWID;
CREATE INDEX service_group_members_by_entity ON service_group_members (entity, group_id);

-- Invitations waiting for the invitee's answer, until `expires_at`.
CREATE TABLE service_group_invites (
    group_id   BLOB    NOT NULL REFERENCES service_groups (group_id) ON DELETE CASCADE,
    invitee    TEXT    NOT NULL,
    inviter    TEXT    NOT NULL,
    expires_at INTEGER NOT NULL,
    PRIMARY KEY (group_id, invitee)
) STRICT, WITHOUT ROWID;
