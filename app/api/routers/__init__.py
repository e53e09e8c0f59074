"""The LB's own HTTP routes: membership (/add, /rm, /rep), status, metrics, and the documented catch-all."""
