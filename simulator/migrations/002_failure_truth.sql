-- Issue 13: a failure's ground truth says which failure mode it was, whether it was foreseeable
-- (its precursor visible at least a day of running before it) and how early its precursor was
-- visible, in hours of the calendar and in running hours (NULL: never visible, or not a
-- failure). Rows of other kinds leave them empty; rows stored before keep them so.
ALTER TABLE ground_truth ADD COLUMN IF NOT EXISTS mode text NOT NULL DEFAULT '';
ALTER TABLE ground_truth ADD COLUMN IF NOT EXISTS foreseeable boolean;
ALTER TABLE ground_truth ADD COLUMN IF NOT EXISTS lead_hours numeric;
ALTER TABLE ground_truth ADD COLUMN IF NOT EXISTS lead_running_hours numeric;
