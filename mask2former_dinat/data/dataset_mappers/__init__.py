"""dataset_mappers."""
