"""`python -m training.render {render-data|render-train} ...` until vsr-train wires both subcommands."""

from __future__ import annotations

import sys

from training.render.cli import main, train_main

COMMANDS = {"render-data": main, "render-train": train_main}

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        print(f"usage: python -m training.render {{{','.join(COMMANDS)}}} ...", file=sys.stderr)
        sys.exit(2)
    sys.exit(COMMANDS[sys.argv[1]](sys.argv[2:]))
