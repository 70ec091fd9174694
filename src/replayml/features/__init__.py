"""Point-in-time feature builders, registered by name (see `builders.py`)."""
