-- Delivered air per asset and UTC day, the documented interface through which nrr bills metered
-- usage from telemetry (nrr reads this view, never the telemetry table's layout).
-- Volume is the time integral of flow_m3_min: each reading's flow holds until the next reading
-- of the same asset, capped at 120 minutes so a silent gap counts as no delivery, not as flow.
CREATE VIEW usage_daily AS
SELECT asset_id,
       (date_trunc('day', time AT TIME ZONE 'UTC'))::date AS day,
       sum(flow_m3_min * least(minutes_to_next, 120.0)) AS volume_m3,
       count(*) AS readings
FROM (
    SELECT asset_id, time, (metrics ->> 'flow_m3_min')::double precision AS flow_m3_min,
           coalesce(extract(epoch FROM lead(time) OVER w - time) / 60.0, 0.0) AS minutes_to_next
    FROM telemetry
    WHERE metrics ? 'flow_m3_min'
    WINDOW w AS (PARTITION BY asset_id ORDER BY time)
) AS readings
GROUP BY asset_id, day;
