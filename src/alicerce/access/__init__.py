"""Who may call the server: API keys with scopes and collections, and the audit log."""
