"""``python -m common.data make POPULATION --n N --out DIR [--seed S] [--size ...] [--dims 2|3] [--spacing 1|2]``."""

from __future__ import annotations

import argparse
import sys


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (the usage block is for --help)."""

    def error(self, message: str):  # type: ignore[override]
        print(f"error: {message} (see {self.prog} --help)", file=sys.stderr)
        raise SystemExit(2)


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m common.data", description="Built-in anatomy-grounded populations.")
    sub = p.add_subparsers(dest="command", required=True)
    m = sub.add_parser("make", help="write N cases and a datalist.json")
    m.add_argument("population", help="brain | cxr | mammo | oct")
    m.add_argument("--n", type=int, required=True, help="number of cases (> 0)")
    m.add_argument("--out", required=True, help="output folder (created; existing files of the same names are replaced)")
    m.add_argument("--seed", type=int, default=0, help="random seed (same seed, same bytes)")
    m.add_argument("--size", default=None, help="2D size: 256 or HxW (cxr default 128, mammo 160x128, oct 128)")
    m.add_argument("--dims", type=int, default=3, help="brain only: 3 (volumes) or 2 (axial slices)")
    m.add_argument("--spacing", type=int, default=2, help="brain only: 2 mm (80x112x80) or 1 mm (160x224x160)")
    m.add_argument("--no-progress", action="store_true", help="no progress bar")
    f = sub.add_parser("figure", help="write a PNG preview grid of a population")
    f.add_argument("population", help="brain | cxr | mammo | oct")
    f.add_argument("--out", required=True, help="PNG file to write")
    f.add_argument("--n", type=int, default=8, help="number of cases shown")
    f.add_argument("--seed", type=int, default=0)
    f.add_argument("--dims", type=int, default=3, help="brain only: 3 or 2")
    return p




def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse already printed its one-line usage error
        return int(e.code or 0)
    try:
        if args.command == "figure":
            from .figure import figure

            if args.n <= 0 or args.n > 64:
                raise ValueError(f"--n must be in 1..64 for a figure, got {args.n}")
            print(figure(args.population, args.out, n=args.n, seed=args.seed, dims=args.dims))
            return 0
        from .make import make

        path = make(args.population, args.n, args.out, seed=args.seed, size=args.size, dims=args.dims,
                    spacing=args.spacing, progress=not args.no_progress)
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
