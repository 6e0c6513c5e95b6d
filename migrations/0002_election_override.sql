-- An operator's explicit permission to finish an election that the
-- promotion rule blocks (a double fault), accepting that acknowledged
-- commits may be lost. It applies to the outage during which it was given.
ALTER TABLE formation ADD COLUMN election_forced_at timestamptz;
