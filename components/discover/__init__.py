"""The discover step: which tuning output a run promotes (``newest:PREFIX`` → the newest completed one not yet promoted)."""
