"""Agents: AI agents from the program, and the human agent ``user``."""
