"""The ``batchq`` command line: ``main`` builds the parser from the command modules and runs
the chosen command; ``common`` holds what every command shares (settings from flags, the store,
printing); each other module is one family of commands and registers its own arguments.

May import everything in ``batchq``; ``common`` imports no command module, and no command
module imports another. Nothing imports the CLI but ``batchq.__main__`` and the console script.
"""

from __future__ import annotations

__all__: list[str] = []
