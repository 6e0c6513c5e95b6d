-- PostgreSQL parameters kept for a formation (set-parameter): every
-- keeper writes them into pgpilot.conf and reloads. parameters_version
-- rises with each change; a node's parameters_applied is the version its
-- keeper last wrote.
CREATE TABLE formation_parameter (
    formation text NOT NULL REFERENCES formation(name) ON DELETE CASCADE,
    name text NOT NULL,
    value text NOT NULL,
    PRIMARY KEY (formation, name)
);
ALTER TABLE formation ADD COLUMN parameters_version bigint NOT NULL DEFAULT 0;
ALTER TABLE node ADD COLUMN parameters_applied bigint NOT NULL DEFAULT 0;
