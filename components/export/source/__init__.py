"""Export stage 1, reading: find the checkpoint in a tuning output, open its weights, refuse the unexportable."""
