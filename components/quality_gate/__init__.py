"""The quality gate: the candidate against the serving model on an eval set (tune2serve eval)."""
