-- DLMS push replay protection that survives a restart and holds across push-listener replicas:
-- the highest invocation counter accepted from each meter's ciphered DataNotifications. A push is
-- stored only when it raises this value (one conditional upsert, so two replicas that receive the
-- same frame cannot both accept it); a replayed or reordered-older frame is refused.
CREATE TABLE dlms_push_counters (
    meter_id    integer PRIMARY KEY REFERENCES meters (id),
    highest     bigint NOT NULL CHECK (highest >= 0),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
