"""The `.pb` playbook language: Markdown + Python programs parsed into plain records."""

from playbooks.language.metadata import callable_name, is_begin_trigger, render_description
from playbooks.language.model import AgentSpec, PlaybookSpec, Program, PythonBlock, Step
from playbooks.language.parser import ProgramError, format_structure, load_program, parse_text

__all__ = [
    "AgentSpec",
    "PlaybookSpec",
    "Program",
    "ProgramError",
    "PythonBlock",
    "Step",
    "callable_name",
    "format_structure",
    "is_begin_trigger",
    "load_program",
    "parse_text",
    "render_description",
]
