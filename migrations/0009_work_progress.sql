-- The clone or rewind a node's keeper last reported under way
-- (NodeActiveRequest.work), as JSON with the WorkProgress fields; NULL when
-- none is. Written by the locked heartbeat path only: a heartbeat carrying
-- work, or the first one after (a node with work stored skips the batch).
ALTER TABLE node ADD COLUMN work text;
