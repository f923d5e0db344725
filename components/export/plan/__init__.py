"""Export stage 2, planning: every file, tensor and config value decided from headers before a byte is written."""
