-- The kind of every event beside its text: the stable snake_case name of
-- the reason for a goal change (fsm::Reason::kind, e.g. 'planned_failover',
-- 'primary_unhealthy') or of the wait recorded without one
-- ('election_stuck'). Programs read the kind, people read the text.
-- Events written before this column existed keep kind NULL: their kind is
-- not known, only their text.
ALTER TABLE event ADD COLUMN kind text;
