-- Keywords are matched whole, and an entry's keyword pairs are in the index (docs/services.md,
-- "The directory's store").
--
-- Until now the index tokenized keywords as text (`unicode61`): `video-renderer` was found by
-- `video`, while a watch (`service_watch_keywords`) is told only of the keywords it names. And a
-- discovery that asks for two keywords both had to read the public list of each to the end when
-- few entries have both: two mid-popular keywords are each in thousands of public entries.
--
-- Two columns, written by the store with each entry (`services::keyword_terms`,
-- `services::keyword_pairs`), and for the entries already kept by this migration through the
-- same functions (registered on the connection while migrations run):
-- * `terms`: one token per keyword, the hex of its normalised text, so a keyword is one exact
--   token whatever its punctuation (the tokenizer keeps letters and digits only);
-- * `pairs`: one token per pair of keywords, the first 8 bytes of SHA-256 of the two (in byte
--   order, a zero byte between) in hex. An entry with k keywords has k(k-1)/2 (at most 496).
-- The index's columns: `terms` (every entry's), `scoped` (as in migration 17), `public_terms`,
-- `public_pairs` (a public entry's; empty for the others) and `public_mark`. A discovery of
-- keywords all asked matches a public entry by its pairs (`public_pairs`, a list as short as the
-- entries having both) and its terms (`public_terms`, read only where the pairs point), and a
-- scoped one by `terms` within the viewer's scope tokens.
DROP TRIGGER services_fts_insert;
DROP TRIGGER services_fts_delete;
DROP TRIGGER services_fts_update;
DROP TABLE services_fts;

ALTER TABLE services ADD COLUMN terms TEXT NOT NULL DEFAULT '';
ALTER TABLE services ADD COLUMN pairs TEXT NOT NULL DEFAULT '';
UPDATE services SET terms = cpns_keyword_terms(keywords), pairs = cpns_keyword_pairs(keywords);
ALTER TABLE services DROP COLUMN public_keywords;
ALTER TABLE services ADD COLUMN public_terms TEXT GENERATED ALWAYS AS (
    CASE scope_kind WHEN 4 THEN terms ELSE '' END
) VIRTUAL;
ALTER TABLE services ADD COLUMN public_pairs TEXT GENERATED ALWAYS AS (
    CASE scope_kind WHEN 4 THEN pairs ELSE '' END
) VIRTUAL;

-- Tokens are rowid lists with their column (`detail=column`): no query here needs positions.
CREATE VIRTUAL TABLE services_fts USING fts5 (
    terms,
    scoped,
    public_terms,
    public_pairs,
    public_mark,
    content = 'services',
    content_rowid = 'dir_id',
    tokenize = 'unicode61',
    detail = 'column'
);
CREATE TRIGGER services_fts_insert AFTER INSERT ON services BEGIN
    INSERT INTO services_fts (rowid, terms, scoped, public_terms, public_pairs, public_mark)
        VALUES (new.dir_id, new.terms, new.scoped, new.public_terms, new.public_pairs,
                new.public_mark);
END;
CREATE TRIGGER services_fts_delete AFTER DELETE ON services BEGIN
    INSERT INTO services_fts (services_fts, rowid, terms, scoped, public_terms, public_pairs,
                              public_mark)
        VALUES ('delete', old.dir_id, old.terms, old.scoped, old.public_terms, old.public_pairs,
                old.public_mark);
END;
CREATE TRIGGER services_fts_update AFTER UPDATE ON services BEGIN
    INSERT INTO services_fts (services_fts, rowid, terms, scoped, public_terms, public_pairs,
                              public_mark)
        VALUES ('delete', old.dir_id, old.terms, old.scoped, old.public_terms, old.public_pairs,
                old.public_mark);
    INSERT INTO services_fts (rowid, terms, scoped, public_terms, public_pairs, public_mark)
        VALUES (new.dir_id, new.terms, new.scoped, new.public_terms, new.public_pairs,
                new.public_mark);
END;
-- Fewer segments to read: each level's segments are merged once two are there (FTS5's default
-- waits for four), and the index rebuilt from the entries kept is merged into one.
INSERT INTO services_fts (services_fts, rank) VALUES ('automerge', 2);
INSERT INTO services_fts (services_fts) VALUES ('rebuild');
INSERT INTO services_fts (services_fts) VALUES ('optimize');
