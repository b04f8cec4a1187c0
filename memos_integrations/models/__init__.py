"""Local model runtime (kept import-light: torch/transformers load only when a model does)."""
