"""Fetch every small real recording of the registry into the cache, verified by sha256.

    python data_scripts/fetch_small.py [--cache DIR] [--name NAME ...]

Files already in the cache that verify are used in place (a read-only, pre-filled cache works);
missing or corrupt ones are downloaded from the commit-pinned raw GitHub URLs. Prints a table
of name, files, size and licence.
"""

from __future__ import annotations

import argparse
import sys

from mini_decoders.data.registry import DataEntry, cache_dir, fetch, get_entry, names
from mini_decoders.errors import MiniDecodersError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", nargs="*", choices=names(DataEntry), default=names(DataEntry),
                        help="datasets to fetch (default: all small ones)")
    parser.add_argument("--cache", default=None,
                        help="cache folder (default: $MINI_DECODERS_DATA or ~/.cache/mini_decoders)")
    parser.add_argument("--timeout", type=float, default=30, help="seconds per connection/read")
    parser.add_argument("--retries", type=int, default=3, help="extra attempts after a network failure")
    args = parser.parse_args(argv)
    rows = []
    try:
        for name in args.name:
            entry = get_entry(name)
            paths = fetch(name, args.cache, timeout=args.timeout, retries=args.retries, progress=True)
            rows.append((name, str(len(paths)), f"{entry.size / 1e6:.2f} MB", entry.licence))
    except MiniDecodersError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"cache: {args.cache or cache_dir()}")
    header = ("name", "files", "size", "licence")
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, tuple("-" * w for w in widths), *rows]:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
