"""Tests of batchq.local."""
