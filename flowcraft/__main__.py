"""``python -m flowcraft``: the ``flowcraft`` command."""

from __future__ import annotations

from flowcraft.cli import main

if __name__ == "__main__":
    main()
