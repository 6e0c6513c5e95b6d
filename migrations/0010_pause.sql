-- A paused formation: the monitor starts no failover in it until an
-- operator resumes it (an election already under way, an operator's
-- switchover and the standby rules go on). Who paused it and when; NULL
-- when it is not paused.
ALTER TABLE formation
    ADD COLUMN paused_by text,
    ADD COLUMN paused_at timestamptz;
