-- When the keeper built the last heartbeat folded into the node
-- (NodeActiveRequest.keeper_boot_id and sent_at_ns): a heartbeat from the
-- same boot sent no later is older than what the node row holds and is
-- answered without being folded in. NULL: not said (older keepers).
ALTER TABLE node ADD COLUMN keeper_boot_id text, ADD COLUMN keeper_sent_ns bigint;
