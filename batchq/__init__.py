"""batchq."""
