-- Restarts of PostgreSQL asked through pgpilot (`restart`): the monitor
-- raises restart_requested, the keeper restarts PostgreSQL at rest and
-- reports the value it carried out in restart_done. pending_restart: the
-- settings the node's PostgreSQL last reported pending_restart in
-- pg_settings, comma-separated and sorted ('' when none).
ALTER TABLE node
    ADD COLUMN restart_requested bigint NOT NULL DEFAULT 0,
    ADD COLUMN restart_done bigint NOT NULL DEFAULT 0,
    ADD COLUMN pending_restart text NOT NULL DEFAULT '';
