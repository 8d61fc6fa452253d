"""meta_arch."""
