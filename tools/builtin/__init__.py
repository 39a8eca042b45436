"""The built-in tools: ``shell``, ``python``, ``web_fetch``, ``read_file``, ``write_file``,
``list_files``."""

from tools.builtin.files import list_files, read_file, write_file
from tools.builtin.python import python
from tools.builtin.shell import shell
from tools.builtin.web_fetch import web_fetch

BUILTIN_TOOLS = (shell, python, web_fetch, read_file, write_file, list_files)

__all__ = [
    "BUILTIN_TOOLS",
    "list_files",
    "python",
    "read_file",
    "shell",
    "web_fetch",
    "write_file",
]
