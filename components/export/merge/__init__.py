"""Export stage 3, merging: LoRA (dense, MoE experts, embeddings, tokens) into the base, one tensor at a time."""
