-- Dead letters inserted once: the writer names each one `<writer instance>-<message>-<n>`, so a
-- batch written again after its COMMIT's reply was lost (the commit happened, the writer could not
-- know) adds no second copy (INSERT … ON CONFLICT (message_key) DO NOTHING). Rows stored before
-- this migration keep NULL, which never conflicts.
ALTER TABLE dead_letters ADD COLUMN message_key text;
CREATE UNIQUE INDEX dead_letters_message_key_idx ON dead_letters (message_key);
