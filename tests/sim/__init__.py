"""Tests of batchq.sim."""
