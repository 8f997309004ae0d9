-- Answers to mutating requests, kept so that a retry of the same (sender, request id) gets the
-- same answer after a reconnect or a restart (docs/design.md §3 idempotency, §5). `request_id` holds the
-- 64-bit request id's bits as a signed integer.
CREATE TABLE replays (
    sender     TEXT    NOT NULL,
    request_id INTEGER NOT NULL,
    answer     BLOB    NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (sender, request_id)
) STRICT;

CREATE INDEX replays_age ON replays (created_at);
