-- Service watches at the server (004 §5.5.5 "advertise"; docs/services.md): a PNE asks to be
-- told of entries published from now on that match. `pn_id` is the PN whose SK_PNE sealed the
-- watch; the matches are sealed to the watcher under that same key, so a watch ends with the
-- watcher's membership of that PN (the join below finds no key). `keywords` are normalised and
-- separated by one space ('' watches every entry); `all_keywords` 1: every one must match.
CREATE TABLE service_watches (
    watch_id     INTEGER NOT NULL PRIMARY KEY,
    watcher      TEXT    NOT NULL REFERENCES entities (id),
    owner        TEXT    NOT NULL,
    pn_id        BLOB    NOT NULL CHECK (length(pn_id) = 16),
    keywords     TEXT    NOT NULL,
    all_keywords INTEGER NOT NULL CHECK (all_keywords IN (0, 1)),
    service_type TEXT,
    created_at   INTEGER NOT NULL
) STRICT;
CREATE INDEX service_watches_by_watcher ON service_watches (watcher);

-- Each keyword of a watch, so a publish finds the watches its keywords may match without reading
-- every watch. A watch of every entry has no row here.
CREATE TABLE service_watch_keywords (
    keyword  TEXT    NOT NULL,
    watch_id INTEGER NOT NULL,
    PRIMARY KEY (keyword, watch_id)
) STRICT, WITHOUT ROWID;
-- The watches of every entry, which every publish reads.
CREATE INDEX service_watches_of_any ON service_watches (watch_id) WHERE keywords = '';
