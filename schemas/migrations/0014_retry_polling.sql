-- An operator may lift a meter's authentication cool-down (`collect.auth_cooldown`) once its
-- password or keys are put right: the command `retry_polling`, audited in meter_commands like the
-- others, sets cooldown_lifted_at, and the scheduler calls the meter at its next round (one is
-- requested at once). A refusal after that cools it down again.
ALTER TABLE meter_poll_status ADD COLUMN cooldown_lifted_at timestamptz;
ALTER TABLE meter_commands DROP CONSTRAINT meter_commands_command_check;
ALTER TABLE meter_commands ADD CONSTRAINT meter_commands_command_check
    CHECK (command IN ('disconnect', 'reconnect', 'clock_sync', 'retry_polling'));
