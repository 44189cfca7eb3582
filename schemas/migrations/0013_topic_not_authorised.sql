-- The dead-letter reason for a payload naming another meter than its topic is `topic_not_authorised`
-- (it was `topic_mismatch`): a meter may publish only its own readings. Earlier rows take the new
-- name, so one reason counts them all.
UPDATE dead_letters SET reason = 'topic_not_authorised' WHERE reason = 'topic_mismatch';
