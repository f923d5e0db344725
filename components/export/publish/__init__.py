"""Export stage 4, publishing: shards written and hashed as streamed, staged and published atomically at DEST."""
