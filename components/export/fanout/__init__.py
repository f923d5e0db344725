"""The export fanned out over workers (the pipeline's export): plan, one worker per shard group, commit."""
