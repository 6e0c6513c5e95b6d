-- Permanent replication slots declared on a formation (create-slot): a
-- JSON array of {name, kind, plugin, database}. Every keeper keeps them
-- (the primary creates them, standbys copy them and move them forward).
ALTER TABLE formation ADD COLUMN permanent_slots jsonb NOT NULL DEFAULT '[]';
-- Where a node holds each permanent slot, as its keeper last reported
-- (a JSON array; a primary's entries carry each logical slot's state
-- file, hex-encoded, for its standbys to copy). NULL: never reported.
ALTER TABLE node ADD COLUMN slots jsonb;
