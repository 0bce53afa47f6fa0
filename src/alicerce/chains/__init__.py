"""Chains: retrieval-augmented answers, chat, and the prompting techniques."""
