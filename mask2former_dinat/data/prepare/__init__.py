"""One-off conversions of downloaded datasets into the files the registered datasets read
(what the datasets/prepare_*.py scripts run)."""
