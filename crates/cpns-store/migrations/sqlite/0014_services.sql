-- The service directory at the server (004 §5.5.5; docs/services.md). One row per service an
-- offerer published, found again by (offerer, service_id): a second publish updates it.
-- `description` is the canonical JSON of `cpns_service::ServiceDescription` (keywords
-- normalised); `scope_kind` 1 PN (`scope_pn`), 2 the offerer's user, 3 a service group
-- (`scope_group`), 4 public; `expires_at`: the end of the lease, after which the entry is not
-- shown (and may be purged).
CREATE TABLE services (
    dir_id        INTEGER NOT NULL PRIMARY KEY,
    offerer       TEXT    NOT NULL REFERENCES entities (id),
    owner         TEXT    NOT NULL,
    service_id    TEXT    NOT NULL,
    service_type  TEXT    NOT NULL,
    scope_kind    INTEGER NOT NULL CHECK (scope_kind BETWEEN 1 AND 4),
    scope_pn      BLOB    CHECK ((scope_kind = 1) = (scope_pn IS NOT NULL)),
    scope_group   TEXT    CHECK ((scope_kind = 3) = (scope_group IS NOT NULL)),
    keywords      TEXT    NOT NULL,
    description   BLOB    NOT NULL,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL,
    expires_at    INTEGER NOT NULL,
    UNIQUE (offerer, service_id)
) STRICT;
CREATE INDEX services_by_owner ON services (owner, scope_kind);
CREATE INDEX services_by_expiry ON services (expires_at);

-- The keywords, searched with FTS5: its rowid is the service's `dir_id`. The table keeps no copy
-- of its own (`content`) beyond the index; `services.keywords` is the text it indexes.
CREATE VIRTUAL TABLE services_fts USING fts5 (
    keywords,
    content = 'services',
    content_rowid = 'dir_id',
    tokenize = 'unicode61'
);
CREATE TRIGGER services_fts_insert AFTER INSERT ON services BEGIN
    INSERT INTO services_fts (rowid, keywords) VALUES (new.dir_id, new.keywords);
END;
CREATE TRIGGER services_fts_delete AFTER DELETE ON services BEGIN
    INSERT INTO services_fts (services_fts, rowid, keywords) VALUES ('delete', old.dir_id, old.keywords);
END;
CREATE TRIGGER services_fts_update AFTER UPDATE OF keywords ON services BEGIN
    INSERT INTO services_fts (services_fts, rowid, keywords) VALUES ('delete', old.dir_id, old.keywords);
    INSERT INTO services_fts (rowid, keywords) VALUES (new.dir_id, new.keywords);
END;
