"""Tests of batchq.inputs."""
