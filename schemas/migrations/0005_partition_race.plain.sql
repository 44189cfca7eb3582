-- headend_ensure_partition raced: two writers creating the same day both passed the existence check
-- (the catalog snapshot is not refreshed by taking an advisory lock), and the second CREATE failed
-- with 42P07, which refused a whole batch. Creating is now idempotent under concurrency.

CREATE OR REPLACE FUNCTION headend_ensure_partition(day date) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    part text := format('readings_p%s', to_char(day, 'YYYYMMDD'));
BEGIN
    IF to_regclass(part) IS NOT NULL THEN
        RETURN false;
    END IF;
    PERFORM pg_advisory_xact_lock(hashtext('headend_ensure_partition'));
    BEGIN
        EXECUTE format(
            'CREATE TABLE %I PARTITION OF readings FOR VALUES FROM (%L) TO (%L)',
            part,
            (day::timestamp AT TIME ZONE 'UTC'),
            ((day + 1)::timestamp AT TIME ZONE 'UTC'));
    EXCEPTION WHEN duplicate_table THEN
        RETURN false;
    END;
    RETURN true;
END;
$$;
