-- A PNE's keys of the service groups it is a member of (docs/services.md, "Service groups";
-- 004 §5.5.7.2): the key of the newest epoch it holds, sealed under the device's storage key
-- (docs/security.md §4.10, label `cpns/v1/at-rest/service-group-key`), so a restarted PNE
-- opens content of its groups without pulling every key again. A row goes when the PNE leaves
-- the group, is expelled, or the group is deleted.
CREATE TABLE local_service_groups (
    group_id   BLOB    NOT NULL PRIMARY KEY,
    name       TEXT    NOT NULL,
    epoch      INTEGER NOT NULL,
    sealed_key BLOB    NOT NULL,
    stored_at  INTEGER NOT NULL
) WITHOUT ROWID;
