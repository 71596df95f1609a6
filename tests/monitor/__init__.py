"""Tests of batchq.monitor."""
