-- Several monitors share this database. Each running monitor process has a
-- row here (a fresh id per start), refreshed while it holds or seeks the
-- lease; show-state lists them.
CREATE TABLE monitor_instance (
    monitor_id text PRIMARY KEY,
    url text NOT NULL,
    started_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    last_seen timestamptz NOT NULL DEFAULT clock_timestamp()
);

-- The lease on the background duties (health checks of every node, the
-- periodic evaluation, retention): one holder at a time. Every write a
-- duty makes first takes this row FOR SHARE with its token, so a monitor
-- whose lease was taken over cannot write any more, and a takeover waits
-- until the old holder's writes in flight have committed.
CREATE TABLE monitor_lease (
    duty text PRIMARY KEY,
    holder text NOT NULL,
    token bigint NOT NULL,
    acquired_at timestamptz NOT NULL,
    expires_at timestamptz NOT NULL
);

-- Retention: the lease holder deletes events older than event_retention.
CREATE INDEX event_at ON event (at);
