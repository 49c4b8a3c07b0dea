"""The `.pb` playbook language: Markdown + Python programs parsed into plain records."""

from playbooks.language.model import AgentSpec, PlaybookSpec, Program, PythonBlock, Step
from playbooks.language.parser import ProgramError, format_structure, load_program, parse_text

__all__ = [
    "AgentSpec",
    "PlaybookSpec",
    "Program",
    "ProgramError",
    "PythonBlock",
    "Step",
    "format_structure",
    "load_program",
    "parse_text",
]
