"""tune2serve's five steps (export, validate, deploy, smoke_test, verify_traffic) and
what they share (checkpoint, vertex, errors). Importing this package is cheap: heavy
libraries (torch, aiplatform, transformers) are imported inside the steps that use them."""
