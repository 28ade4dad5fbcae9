-- Dead letters are bounded (issue 11): the payload column keeps a prefix of the message (see
-- BASEWATCH_INGEST_DEAD_LETTER_PAYLOAD_BYTES), payload_sha256 stays the hash of the whole
-- message, and payload_bytes is the whole message's size (NULL on rows written before this
-- migration, whose payload is complete: read it as coalesce(payload_bytes, length(payload))).
-- A row with suppressed > 0 is the summary of a topic's dead letters over the rate limit
-- (BASEWATCH_INGEST_DEAD_LETTERS_PER_MINUTE): that many messages were counted, not stored; its
-- payload is a sample (the latest one's prefix). Both columns are nullable or defaulted so that
-- an ingester of the previous release, still running while this migrates, keeps inserting.
ALTER TABLE dead_letters ADD COLUMN payload_bytes bigint;
ALTER TABLE dead_letters ADD COLUMN suppressed bigint NOT NULL DEFAULT 0;
