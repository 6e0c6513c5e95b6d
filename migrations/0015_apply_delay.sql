-- A node's apply delay (recovery_min_apply_delay as a standby), in
-- milliseconds; 0: not delayed. Set at registration (the keeper's
-- apply_delay) and by SetNodeSettings. A delayed standby is never promoted
-- nor counted for synchronous commit: the decision core sets its
-- candidate priority to 0 and its replication quorum off with the delay,
-- and the constraint keeps any other writer from storing otherwise.
-- (0014 is another change's number.)
ALTER TABLE node
    ADD COLUMN apply_delay_ms bigint NOT NULL DEFAULT 0,
    ADD CONSTRAINT node_apply_delay_ms_range
        CHECK (apply_delay_ms BETWEEN 0 AND 2147483647),
    ADD CONSTRAINT node_delayed_never_candidate
        CHECK (apply_delay_ms = 0 OR (candidate_priority = 0 AND NOT replication_quorum));
