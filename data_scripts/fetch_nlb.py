"""Download a Neural Latents Benchmark dandiset (pinned version) with the DANDI client.

    python data_scripts/fetch_nlb.py --name mc_maze_small [--cache DIR] [--dry-run]

Files land in ``<cache>/dandi/<dandiset>/sub-*/...nwb``, where ``mini_decoders.data.realdata.load``
and ``mini-decoders`` commands find them. The DANDI client checks every asset's digest and skips
assets already present. ``--dry-run`` only prints what would be fetched (no network).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mini_decoders.data.registry import DandiEntry, cache_dir, fetch_dandi, get_entry, names
from mini_decoders.errors import MiniDecodersError


def describe(path: Path) -> str:
    """What is inside one NWB file (the package's describer when it exists, else just the size)."""
    try:
        from mini_decoders.data.nwb import describe_nwb
    except ImportError:
        return f"{path} ({path.stat().st_size / 1e6:.1f} MB)"
    try:
        return describe_nwb(path)
    except MiniDecodersError as error:
        return f"{path}: {error}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", required=True, choices=names(DandiEntry), help="NLB dataset")
    parser.add_argument("--cache", default=None,
                        help="cache folder (default: $MINI_DECODERS_DATA or ~/.cache/mini_decoders)")
    parser.add_argument("--dry-run", action="store_true", help="print what would be fetched; download nothing")
    args = parser.parse_args(argv)
    entry: DandiEntry = get_entry(args.name)
    cache = Path(args.cache).expanduser() if args.cache else cache_dir()
    print(f"{entry.name}: {entry.description}")
    print(f"  dandiset  {entry.url}  ({entry.doi})")
    print(f"  assets    {entry.asset_pattern}" + (f"  ({entry.size_note})" if entry.size_note else ""))
    print(f"  into      {entry.local_dir(cache)}")
    print(f"  licence   {entry.licence}")
    print(f"  cite      {entry.citation}")
    try:
        present = fetch_dandi(args.name, cache, dry_run=True)
        if args.dry_run:
            print(f"dry run: would run dandi download {entry.url} -o {entry.local_dir(cache).parent}; "
                  f"{len(present)} matching file(s) already present")
            for path in present:
                print(f"  present: {path}")
            return 0
        paths = fetch_dandi(args.name, cache)
    except MiniDecodersError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    for path in paths:
        print(describe(path))
    return 0


if __name__ == "__main__":
    sys.exit(main())
