"""pgolf-verify: placeholder until the verifier issue lands."""

import sys


def main() -> None:
    print("pgolf-verify: not yet available", file=sys.stderr)
    sys.exit(2)
