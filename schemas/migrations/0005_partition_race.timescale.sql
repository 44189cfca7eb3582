-- Nothing to do with TimescaleDB: chunks are created by the extension (see the plain variant).
SELECT 1;
