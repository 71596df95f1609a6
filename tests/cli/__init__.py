"""Tests of batchq.cli."""
