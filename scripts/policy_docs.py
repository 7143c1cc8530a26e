"""Rewrite the hyper-parameter table of docs/policies/README.md from the policies' own declarations.

Usage: python scripts/policy_docs.py [--check]

The table sits between the markers <!-- params:begin --> and <!-- params:end -->. With --check, nothing is written
and the exit status is 1 when the table is stale (tests/test_docs.py and tests/policies/test_contract.py run the
same check).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from hardbatch.policies.registry import hyper_parameter_table

DOC = Path(__file__).resolve().parents[1] / "docs" / "policies" / "README.md"
MARKERS = ("<!-- params:begin -->", "<!-- params:end -->")


def rendered(text: str) -> str:
    """``text`` with the table between the markers replaced by the current one."""
    head, rest = text.split(MARKERS[0], 1)
    tail = rest.split(MARKERS[1], 1)[1]
    return f"{head}{MARKERS[0]}\n{hyper_parameter_table()}\n{MARKERS[1]}{tail}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the table is stale; write nothing")
    args = parser.parse_args()
    text = DOC.read_text()
    new = rendered(text)
    if args.check:
        if new != text:
            print(f"{DOC}: the hyper-parameter table is stale; run python scripts/policy_docs.py", file=sys.stderr)
            return 1
        return 0
    DOC.write_text(new)
    print(f"wrote the hyper-parameter table of {DOC}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
