"""One place that talks to Vertex AI: client set-up (cloud or local stack), the one
retry policy, the one translator from API errors to ours, resource-name value objects."""
