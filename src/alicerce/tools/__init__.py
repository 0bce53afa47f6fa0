"""Tools agents call (docs/agents.md)."""
