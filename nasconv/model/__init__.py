"""The model: an architecture as data (arch), what it costs (cost), and per-device latency tables."""
