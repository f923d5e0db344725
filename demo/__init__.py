"""The demo models `tune2serve run` makes on the spot: tiny real base models (Llama/Qwen2 + a trained BPE tokenizer) and the tuned LoRA adapter."""
