"""pgolf-train: placeholder until the verifier issue lands."""

import sys


def main() -> None:
    print("pgolf-train: not yet available", file=sys.stderr)
    sys.exit(2)
