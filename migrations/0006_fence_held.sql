-- The number of standbys a primary's keeper said its lease requires to
-- stream (NodeActiveRequest.fence_required_held), as of its last
-- heartbeat. The monitor stores the fence set it sends, but a reply can be
-- lost: a keeper that last said it holds 0 (no standby to count) may not
-- fence at all, so no election can rely on its fence until it says
-- otherwise. NULL: not reported (a keeper that does not say, or a node off
-- the primary side).
ALTER TABLE node ADD COLUMN fence_held_required integer;
