"""Storage: the Store protocol and its implementations."""
