-- Users of the API and the CSM pages, their sessions and personal API tokens, the sign-in
-- throttle and the audit log (issue 15 item 2). Owned by the composition root
-- (basewatch.users, basewatch.auth); nothing is published: no other package reads them.
-- Secrets are never stored: a password as its Argon2 hash, a session id and a token as their
-- sha256.

CREATE TABLE users (
    user_id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    username        text NOT NULL UNIQUE CHECK (username ~ '^[a-z0-9_.-]{1,64}$'),
    display_name    text NOT NULL DEFAULT '',
    email           text,
    role            text NOT NULL CHECK (role IN ('admin', 'manager', 'csm')),
    -- a csm sees the accounts whose csm_id is theirs; only a csm has one
    csm_id          text REFERENCES csms (csm_id),
    password_hash   text NOT NULL CHECK (password_hash LIKE '$argon2%'),
    disabled        boolean NOT NULL DEFAULT false,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    last_signin_at  timestamptz,
    CHECK ((role = 'csm') = (csm_id IS NOT NULL))
);

-- failed sign-ins per username given (whether or not such a user exists, so that the lockout
-- does not tell who exists); a success or a password reset deletes the row
CREATE TABLE signin_throttle (
    username        text PRIMARY KEY,
    failures        integer NOT NULL CHECK (failures >= 0),
    last_failure_at timestamptz NOT NULL,
    locked_until    timestamptz
);

CREATE TABLE sessions (
    session_hash  bytea PRIMARY KEY CHECK (octet_length(session_hash) = 32),
    user_id       bigint NOT NULL REFERENCES users (user_id),
    created_at    timestamptz NOT NULL,
    expires_at    timestamptz NOT NULL,  -- the fixed maximum age
    last_seen_at  timestamptz NOT NULL,  -- the idle timeout counts from here
    ended_at      timestamptz            -- signed out, or the user disabled
);
CREATE INDEX sessions_user_idx ON sessions (user_id);

CREATE TABLE api_tokens (
    token_id      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    token_hash    bytea NOT NULL UNIQUE CHECK (octet_length(token_hash) = 32),
    hint          text NOT NULL,         -- the token's first characters, to recognise it
    name          text NOT NULL CHECK (name <> ''),
    user_id       bigint NOT NULL REFERENCES users (user_id),
    created_at    timestamptz NOT NULL DEFAULT now(),
    last_used_at  timestamptz,
    revoked_at    timestamptz
);
CREATE INDEX api_tokens_user_idx ON api_tokens (user_id);

CREATE TABLE audit_log (
    audit_id       bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at             timestamptz NOT NULL DEFAULT now(),
    actor_user_id  bigint REFERENCES users (user_id),  -- NULL: the CLI or the service token
    actor          text NOT NULL,   -- the username, or the CLI's --by / login name
    action         text NOT NULL,   -- alert.ack, user.create, session.signin, ...
    target         text NOT NULL DEFAULT '',
    details        jsonb NOT NULL DEFAULT '{}'::jsonb,
    source         text NOT NULL CHECK (source IN ('api', 'page', 'cli'))
);
CREATE INDEX audit_log_at_idx ON audit_log (at);
CREATE INDEX audit_log_target_idx ON audit_log (target, at);
