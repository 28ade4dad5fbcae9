-- Trained models (component failure, asset anomaly, account health): one row per model name
-- and training cut-off. A model trained "until" T saw only rollups, events and contracts
-- before T. Scoring uses the latest row of each name; the nightly retrain adds a row and
-- keeps the last few.
CREATE TABLE signal_models (
    name          text        NOT NULL,
    trained_until timestamptz NOT NULL,
    trained_at    timestamptz NOT NULL DEFAULT now(),
    summary       jsonb       NOT NULL DEFAULT '{}',
    blob          bytea       NOT NULL,
    PRIMARY KEY (name, trained_until)
);
