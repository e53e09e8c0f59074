"""Data plane, the hot path: request -> key -> ring -> pooled upstream call -> response."""
