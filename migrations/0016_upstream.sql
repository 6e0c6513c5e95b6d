-- A cascading standby (set-upstream): the name of the standby it streams
-- from while that one can serve (NULL: the primary).
ALTER TABLE node ADD COLUMN upstream text;
