-- The monitor's durable state: formations, nodes (what each keeper last
-- reported and the goal assigned to it) and the event log of goal changes.

CREATE TABLE formation (
    name                 text PRIMARY KEY,
    number_sync_standbys integer NOT NULL DEFAULT 0 CHECK (number_sync_standbys >= 0),
    created_at           timestamptz NOT NULL DEFAULT now()
);

INSERT INTO formation (name) VALUES ('default');

CREATE TABLE node (
    node_id                bigserial PRIMARY KEY,
    formation              text NOT NULL REFERENCES formation (name),
    group_id               integer NOT NULL DEFAULT 0,
    name                   text NOT NULL,
    host                   text NOT NULL,
    port                   integer NOT NULL CHECK (port BETWEEN 1 AND 65535),
    system_identifier      bigint NOT NULL DEFAULT 0,
    candidate_priority     integer NOT NULL DEFAULT 50 CHECK (candidate_priority BETWEEN 0 AND 100),
    replication_quorum     boolean NOT NULL DEFAULT true,
    reported_state         text NOT NULL DEFAULT 'init',
    goal_state             text NOT NULL DEFAULT 'init',
    pg_running             boolean NOT NULL DEFAULT false,
    -- pg_lsn as a number of bytes
    lsn                    bigint NOT NULL DEFAULT 0,
    timeline               integer NOT NULL DEFAULT 0,
    wal_receiver_streaming boolean NOT NULL DEFAULT false,
    stream_lost_at         timestamptz,
    pg_down_since          timestamptz,
    last_heartbeat         timestamptz,
    health                 text NOT NULL DEFAULT 'unknown',
    health_changed_at      timestamptz,
    heartbeat_interval_ms  bigint NOT NULL DEFAULT 1000,
    fence_timeout_ms       bigint NOT NULL DEFAULT 0,
    wal_sender_timeout_ms  bigint NOT NULL DEFAULT 0,
    -- what the node was last told as a primary: the standbys it counts
    -- (application names) and how many must stream for it to keep serving
    fence_set              text[] NOT NULL DEFAULT '{}',
    fence_required         integer NOT NULL DEFAULT 0,
    goal_changed_at        timestamptz NOT NULL DEFAULT now(),
    registered_at          timestamptz NOT NULL DEFAULT now(),
    UNIQUE (formation, name),
    UNIQUE (host, port)
);

CREATE INDEX node_group ON node (formation, group_id);

CREATE TABLE event (
    event_id       bigserial PRIMARY KEY,
    at             timestamptz NOT NULL DEFAULT clock_timestamp(),
    formation      text NOT NULL,
    group_id       integer NOT NULL,
    node_id        bigint NOT NULL,
    node_name      text NOT NULL,
    reported_state text NOT NULL,
    goal_from      text NOT NULL,
    goal_to        text NOT NULL,
    reason         text NOT NULL
);

CREATE INDEX event_formation ON event (formation, event_id DESC);
