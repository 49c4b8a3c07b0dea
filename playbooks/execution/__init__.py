"""Execution: streamed code, statement by statement, with every await journaled."""

from .executor import PlaybookReturn, StreamingPythonExecutor

__all__ = ["PlaybookReturn", "StreamingPythonExecutor"]
