-- Discovery decides visibility in the keyword index too (docs/services.md, "The directory's
-- store"): a popular keyword is in many entries, of which a viewer may see few, and reading them
-- all to keep a page of 51 made a discovery's cost grow with the directory.
--
-- The index now has four columns, each computed from the entry's scope (generated columns of
-- `services`, so nothing else writes them):
-- * `keywords`: every entry's keywords, as before;
-- * `scoped`: for an entry of a user, a PN or a group, one token naming it: `u`, `p` or `g`
--   followed by the hex of the owner's id, the PN id or the group id (hex: the tokenizer keeps
--   letters and digits only, and hex is exact, so no two scopes share a token); empty for a
--   public entry;
-- * `public_keywords`: a public entry's keywords; empty for the others;
-- * `public_mark`: `pub` for a public entry; empty for the others.
-- A discovery as a viewer with scope tokens T matches
-- `(keywords : (…) AND scoped : (T)) OR public_keywords : (…)`, or without keywords
-- `scoped : (T) OR public_mark : pub`: the scoped lists are short (one user's, one PN's), and
-- the public ones are read only for the keywords asked, so the index is read in directory-id
-- order and stops at the page. A column is matched only by its own terms, so no keyword is ever
-- read as a scope. The same predicate is still checked on each row the index gives.
ALTER TABLE services ADD COLUMN scoped TEXT GENERATED ALWAYS AS (
    CASE scope_kind
        WHEN 2 THEN 'u' || hex(owner)
        WHEN 1 THEN 'p' || hex(scope_pn)
        WHEN 3 THEN 'g' || hex(scope_group)
        ELSE ''
    END
) VIRTUAL;
ALTER TABLE services ADD COLUMN public_keywords TEXT GENERATED ALWAYS AS (
    CASE scope_kind WHEN 4 THEN keywords ELSE '' END
) VIRTUAL;
ALTER TABLE services ADD COLUMN public_mark TEXT GENERATED ALWAYS AS (
    CASE scope_kind WHEN 4 THEN 'pub' ELSE '' END
) VIRTUAL;

DROP TRIGGER services_fts_insert;
DROP TRIGGER services_fts_delete;
DROP TRIGGER services_fts_update;
DROP TABLE services_fts;

CREATE VIRTUAL TABLE services_fts USING fts5 (
    keywords,
    scoped,
    public_keywords,
    public_mark,
    content = 'services',
    content_rowid = 'dir_id',
    tokenize = 'unicode61'
);
CREATE TRIGGER services_fts_insert AFTER INSERT ON services BEGIN
    INSERT INTO services_fts (rowid, keywords, scoped, public_keywords, public_mark)
        VALUES (new.dir_id, new.keywords, new.scoped, new.public_keywords, new.public_mark);
END;
CREATE TRIGGER services_fts_delete AFTER DELETE ON services BEGIN
    INSERT INTO services_fts (services_fts, rowid, keywords, scoped, public_keywords, public_mark)
        VALUES ('delete', old.dir_id, old.keywords, old.scoped, old.public_keywords,
                old.public_mark);
END;
CREATE TRIGGER services_fts_update AFTER UPDATE ON services BEGIN
    INSERT INTO services_fts (services_fts, rowid, keywords, scoped, public_keywords, public_mark)
        VALUES ('delete', old.dir_id, old.keywords, old.scoped, old.public_keywords,
                old.public_mark);
    INSERT INTO services_fts (rowid, keywords, scoped, public_keywords, public_mark)
        VALUES (new.dir_id, new.keywords, new.scoped, new.public_keywords, new.public_mark);
END;
INSERT INTO services_fts (services_fts) VALUES ('rebuild');
