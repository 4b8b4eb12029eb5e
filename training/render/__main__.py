"""`python -m training.render {render-data|render-train|render-eval} ...`: the same as `vsr-train <subcommand>`."""

from __future__ import annotations

import sys

from training.cli import SUBCOMMANDS, main

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in SUBCOMMANDS:
        print(f"usage: python -m training.render {{{','.join(SUBCOMMANDS)}}} ...", file=sys.stderr)
        sys.exit(2)
    sys.exit(main(sys.argv[1:]))
