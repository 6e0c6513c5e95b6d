-- The node's before_promotion hook refused the promotion it was asked
-- (kept while the node stays in the election: report_lsn, fast_forward):
-- the election prefers any other candidate.
ALTER TABLE node ADD COLUMN promotion_refused bool NOT NULL DEFAULT false;
