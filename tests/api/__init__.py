"""Tests of batchq.api."""
