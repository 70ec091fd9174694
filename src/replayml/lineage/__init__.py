"""What a run was made from: data version, code version and environment."""
