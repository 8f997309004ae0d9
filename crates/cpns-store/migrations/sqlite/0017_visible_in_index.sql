-- Discovery decides visibility in the keyword index too (docs/services.md, "The directory's
-- store"): a popular keyword is in many entries, of which a viewer may see few, and reading them
-- all to keep a page of 51 made a discovery's cost grow with the directory. Each entry now has a
-- `vis` token naming who may see it, computed from its scope: `pub`, `u` and the hex of its
-- owner's id, `p` and the hex of its PN id, `g` and the hex of its group's id (hex: the tokenizer
-- keeps letters and digits only, and hex is exact, so no two scopes share a token). The index
-- holds it in a column of its own, so no keyword is ever read as one; a discovery matches
-- `keywords : (...) AND vis : (pub OR u… OR p… …)` and reads the index in directory-id order,
-- stopping at its page. The same predicate is still checked on each row it returns.
ALTER TABLE services ADD COLUMN vis TEXT GENERATED ALWAYS AS (
    CASE scope_kind
        WHEN 4 THEN 'pub'
        WHEN 2 THEN 'u' || hex(owner)
        WHEN 1 THEN 'p' || hex(scope_pn)
        ELSE 'g' || hex(scope_group)
    END
) VIRTUAL;

DROP TRIGGER services_fts_insert;
DROP TRIGGER services_fts_delete;
DROP TRIGGER services_fts_update;
DROP TABLE services_fts;

CREATE VIRTUAL TABLE services_fts USING fts5 (
    keywords,
    vis,
    content = 'services',
    content_rowid = 'dir_id',
    tokenize = 'unicode61'
);
CREATE TRIGGER services_fts_insert AFTER INSERT ON services BEGIN
    INSERT INTO services_fts (rowid, keywords, vis) VALUES (new.dir_id, new.keywords, new.vis);
END;
CREATE TRIGGER services_fts_delete AFTER DELETE ON services BEGIN
    INSERT INTO services_fts (services_fts, rowid, keywords, vis)
        VALUES ('delete', old.dir_id, old.keywords, old.vis);
END;
CREATE TRIGGER services_fts_update AFTER UPDATE ON services BEGIN
    INSERT INTO services_fts (services_fts, rowid, keywords, vis)
        VALUES ('delete', old.dir_id, old.keywords, old.vis);
    INSERT INTO services_fts (rowid, keywords, vis) VALUES (new.dir_id, new.keywords, new.vis);
END;
INSERT INTO services_fts (services_fts) VALUES ('rebuild');
