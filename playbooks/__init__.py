"""Playbooks: a runtime for durable LLM agents."""
