#!/usr/bin/env python3
"""Print the proxy's configuration table (markdown), as pasted into README.md.

Run: ``.venv/bin/python scripts/config_table.py``. tests/unit/test_readme_config.py fails when the
README's copy differs, so after changing proxy/config.py paste this output over the old table.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from proxy.config import settings_table


def main() -> None:
    """Print the table."""
    print(settings_table())


if __name__ == "__main__":
    main()
