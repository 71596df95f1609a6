"""Tests of batchq.results."""
