"""transformer_decoder."""
