-- What an election about a primary must still count from its earlier fence
-- sets: members that left the set (or the primary itself, while none of its
-- standbys may hold its commits yet), the smallest quorum in force since,
-- and the LSN its current set must reach before they are dropped
-- (NULL: nothing pending). See fsm::fence_update.
ALTER TABLE node ADD COLUMN fence_pending text[] NOT NULL DEFAULT '{}';
ALTER TABLE node ADD COLUMN fence_pending_required integer NOT NULL DEFAULT 0;
ALTER TABLE node ADD COLUMN fence_cover_lsn bigint;
