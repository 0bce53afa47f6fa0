"""Fakes and shared contract tests for Alicerce's protocols (used by the test suite)."""
