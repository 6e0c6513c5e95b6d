-- Failed attempts in a row to start a node's PostgreSQL, as its keeper last
-- reported them: the state machine starts an election without waiting out
-- postgres_restart_timeout once a live keeper says its server cannot start.
ALTER TABLE node ADD COLUMN pg_start_failures integer NOT NULL DEFAULT 0
    CHECK (pg_start_failures >= 0);
