-- Polling replicas share the fleet through leases on a fixed number of buckets (collect.lease_buckets):
-- a meter belongs to the bucket of a stable hash of its cell (transformer), so one cell is polled by
-- one replica and its session limit holds across replicas. Rows of poll_leases are created by the
-- pollers themselves (INSERT … ON CONFLICT DO NOTHING for buckets 0..n-1).
CREATE TABLE poll_leases (
    bucket     integer PRIMARY KEY CHECK (bucket >= 0),
    holder     text,
    expires_at timestamptz NOT NULL DEFAULT '-infinity',
    -- Handed back by a live poller to rebalance (not by a graceful stop): the next holder takes the
    -- bucket over from where the database says its meters stand rather than polling them again.
    handed_over boolean NOT NULL DEFAULT false
);
CREATE INDEX poll_leases_holder_idx ON poll_leases (holder);

-- Every live poller's heartbeat: the fair share of buckets is ceil(buckets / live pollers).
CREATE TABLE poll_pollers (
    holder     text PRIMARY KEY,
    started_at timestamptz NOT NULL DEFAULT now(),
    seen_until timestamptz NOT NULL
);
