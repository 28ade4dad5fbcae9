-- Delivered air per asset and UTC day over a range of days: the interface nrr bills metered
-- usage through. The usage_daily view of 003 computes each reading's duration with a window
-- function over an asset's whole history, so no time condition reaches telemetry through it
-- (every use read, and on TimescaleDB decompressed, all of it). This function reads only the
-- days asked for plus two hours after them (a reading's flow holds until the next reading,
-- capped at 120 minutes), and gives the same figures as the view for those days: a reading
-- whose next reading lies beyond that margin holds 120 minutes, the last reading of an asset
-- none. `asset_ids` NULL means every asset.
CREATE FUNCTION usage_daily_between(from_day date, through_day date, asset_ids text[] DEFAULT NULL)
RETURNS TABLE (asset_id text, day date, volume_m3 double precision, readings bigint)
LANGUAGE sql STABLE AS $$
SELECT r.asset_id,
       (date_trunc('day', r.time AT TIME ZONE 'UTC'))::date AS day,
       sum(r.flow_m3_min * least(r.minutes_to_next, 120.0)) AS volume_m3,
       count(*) AS readings
FROM (
    SELECT t.asset_id, t.time, (t.metrics ->> 'flow_m3_min')::double precision AS flow_m3_min,
           coalesce(
               extract(epoch FROM lead(t.time) OVER w - t.time) / 60.0,
               CASE WHEN EXISTS (SELECT 1 FROM telemetry n
                                 WHERE n.asset_id = t.asset_id AND n.time > t.time
                                   AND n.metrics ? 'flow_m3_min')
                    THEN 120.0 ELSE 0.0 END
           ) AS minutes_to_next
    FROM telemetry t
    WHERE t.metrics ? 'flow_m3_min'
      AND t.time >= (from_day::timestamp AT TIME ZONE 'UTC')
      AND t.time < ((through_day + 1)::timestamp AT TIME ZONE 'UTC') + INTERVAL '2 hours'
      AND (asset_ids IS NULL OR t.asset_id = ANY (asset_ids))
    WINDOW w AS (PARTITION BY t.asset_id ORDER BY t.time)
) r
WHERE r.time < ((through_day + 1)::timestamp AT TIME ZONE 'UTC')
GROUP BY r.asset_id, (date_trunc('day', r.time AT TIME ZONE 'UTC'))::date
$$;
