-- What the state machine needs to give a live keeper time to restart its
-- crashed PostgreSQL (postgres_restart_timeout):
-- - pg_start_failures: failed attempts in a row to start it, as the keeper
--   last reported them; the election starts without waiting out the
--   allowance once a live keeper says its server cannot start;
-- - pg_running_since: since when the keeper has reported it running
--   (NULL while down, or not known yet); a standby's lost stream counts
--   only from then, so a primary restart does not demote its standbys.
ALTER TABLE node ADD COLUMN pg_start_failures integer NOT NULL DEFAULT 0
    CHECK (pg_start_failures >= 0);
ALTER TABLE node ADD COLUMN pg_running_since timestamptz;
