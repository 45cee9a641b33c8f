"""One way to write JSON text (and optionally a file) for every ``to_json`` in the package."""
from __future__ import annotations

import json

__all__ = ["dump_json"]


def dump_json(data, path=None) -> str:
    """``data`` as indented JSON text; also written (with a final newline) to ``path`` when given."""
    text = json.dumps(data, indent=1)
    if path is not None:
        with open(path, "w") as f:
            f.write(text + "\n")
    return text
