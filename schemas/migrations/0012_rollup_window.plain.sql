-- Nothing to do on plain PostgreSQL: its rollup is refreshed hour by hour from rollup_pending,
-- however old the hour (see the TimescaleDB variant).
SELECT 1;
