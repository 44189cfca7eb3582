-- Accounts, sessions, API tokens and invitations (issue 12). Secrets are never stored: passwords as
-- argon2id PHC strings, session ids, tokens and activation codes as SHA-256 digests of high-entropy
-- random values, so a copy of the database opens no session and activates no account.

CREATE TABLE accounts (
    id             integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    username       text NOT NULL UNIQUE CHECK (username ~ '^[a-z0-9][a-z0-9._@-]{2,63}$'),
    role           text NOT NULL CHECK (role IN ('household', 'operator', 'admin')),
    password_hash  text,                  -- NULL until the account is activated
    created_at     timestamptz NOT NULL DEFAULT now(),
    activated_at   timestamptz,
    disabled_at    timestamptz,
    -- Login throttling, kept here so that every replica sees it.
    failed_logins  integer NOT NULL DEFAULT 0,
    locked_until   timestamptz
);

-- Which households a household account may see (a resident may hold several flats).
CREATE TABLE account_households (
    account_id    integer NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    household_id  integer NOT NULL REFERENCES households (id),
    PRIMARY KEY (account_id, household_id)
);
CREATE INDEX account_households_household_idx ON account_households (household_id);

-- One-time activation codes: `headend account invite --household CODE` (a new household account
-- chooses its username and password) or `headend account create` (an account made by an admin sets
-- its password).
CREATE TABLE account_invites (
    code_hash     bytea PRIMARY KEY,
    household_id  integer REFERENCES households (id),
    account_id    integer REFERENCES accounts (id) ON DELETE CASCADE,
    created_by    text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    expires_at    timestamptz NOT NULL,
    used_at       timestamptz,
    CHECK ((household_id IS NULL) <> (account_id IS NULL))
);

CREATE TABLE web_sessions (
    id_hash       bytea PRIMARY KEY,
    account_id    integer NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    csrf_token    text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    last_seen_at  timestamptz NOT NULL DEFAULT now(),
    expires_at    timestamptz NOT NULL
);
CREATE INDEX web_sessions_account_idx ON web_sessions (account_id);
CREATE INDEX web_sessions_expires_idx ON web_sessions (expires_at);

CREATE TABLE api_tokens (
    id            integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    account_id    integer NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    name          text NOT NULL,
    token_hash    bytea NOT NULL UNIQUE,
    created_at    timestamptz NOT NULL DEFAULT now(),
    expires_at    timestamptz,
    last_used_at  timestamptz,
    revoked_at    timestamptz,
    UNIQUE (account_id, name)
);

-- Who logged in, failed, was locked out, activated, created or revoked what.
CREATE TABLE auth_events (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at          timestamptz NOT NULL DEFAULT now(),
    account_id  integer REFERENCES accounts (id) ON DELETE SET NULL,
    username    text,
    event       text NOT NULL,
    client      text,
    detail      text
);
CREATE INDEX auth_events_at_idx ON auth_events (at);

-- Operator commands are attributed to the account that asked (requested_by = its username), with
-- the free text it gave (a ticket number, a reason) as the note.
ALTER TABLE meter_commands ADD COLUMN account_id integer REFERENCES accounts (id),
                           ADD COLUMN note text;
