"""``python -m common.zoo list | info NAME | download NAME | verify [NAME]``: the zoo catalogue from the shell.

Every failure prints one ``error: ...`` line (what went wrong and the fix) and exits 1; nothing half-written
is left under the destination folder. Network settings are huggingface_hub's: ``HF_ENDPOINT`` (hub or
mirror), ``HF_HUB_OFFLINE=1`` (cache only), ``HF_HOME`` / ``HF_HUB_CACHE`` (where the cache lives),
``HF_HUB_DISABLE_PROGRESS_BARS=1``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from common.zoo.download import (
    DEFAULT_DIR,
    SOURCES,
    check_version,
    download_bundle,
    download_published,
    get_entry,
    unchecked_published,
    verify_local,
    with_dependencies,
)
from common.zoo.errors import DownloadError, one_line
from common.zoo.hub import hub_source
from common.zoo.index import ZooIndexError, load_index
from common.zoo.published import published_weights


def human(n: int | None) -> str:
    """Bytes as a short human-readable size ('unknown' for None)."""
    if n is None:
        return "unknown"
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def bundle_size(entry: dict[str, Any]) -> int:
    return sum(int(f.get("size") or 0) for f in entry.get("files") or [])


def cmd_list(index: dict[str, Any], args: argparse.Namespace) -> int:
    bundles = index["bundles"]
    if args.json:
        rows = [
            {"name": n, "version": e.get("version"), "files": len(e.get("files") or []), "size": bundle_size(e),
             "task": e.get("task"), "published_weights": len(published_weights(n, e))}
            for n, e in sorted(bundles.items())
        ]
        print(json.dumps(rows, indent=2))
        return 0
    if not bundles:
        print("the index lists no bundles yet (rebuild it with `python ci/build_index.py`)")
        return 0
    width = max(len(n) for n in bundles)
    print(f"{'name':<{width}}  {'version':<8}  {'files':>5}  {'size':>9}  {'paper':>5}  task")
    for n, e in sorted(bundles.items()):
        paper = len(published_weights(n, e))
        print(
            f"{n:<{width}}  {str(e.get('version')):<8}  {len(e.get('files') or []):>5}  {human(bundle_size(e)):>9}  "
            f"{paper or '-':>5}  {e.get('task') or ''}"
        )
    return 0


def cmd_info(index: dict[str, Any], args: argparse.Namespace) -> int:
    entry = get_entry(index, args.name)
    published = published_weights(args.name, entry)
    if args.json:
        print(json.dumps({**entry, "published_weights": published}, indent=2, sort_keys=True))
        return 0
    repo_id, revision = hub_source(args.name, entry)
    print(f"{args.name} {entry.get('version')}: {entry.get('task') or ''}")
    if entry.get("description"):
        print(f"  {entry['description']}")
    print(f"  depends on: {', '.join(entry.get('depends_on') or []) or '-'}")
    print(f"  huggingface: {repo_id}@{revision}")
    print(f"  url: {(entry.get('sources') or {}).get('url') or '-'}")
    files = entry.get("files") or []
    print(f"  files ({len(files)}, {human(bundle_size(entry))}):")
    for f in files:
        print(f"    {f['path']}  {human(f.get('size'))}  sha256 {f.get('sha256')}")
    if published:
        print(f"  published weights ({len(published)}; `download {args.name} --published`):")
        for row in published:
            sha = row.get("sha256") or "unknown (needs --allow-unknown-hash)"
            other = f"  {row['hash_type']} {row['hash_val']}" if row.get("hash_val") and row.get("hash_type") != "sha256" else ""
            print(f"    {row['path']}  {human(row.get('size'))}  sha256 {sha}{other}")
            print(f"      {row['url']}  (for {row.get('config') or '-'})")
    return 0


def pipeline_path(name: str) -> Path:
    """A pipeline config: a path to a .json file, or a name in ./pipelines (then in the repository's pipelines/)."""
    if name.endswith(".json"):
        return Path(name)
    local = Path("pipelines") / f"{name}.json"
    return local if local.is_file() else Path(__file__).resolve().parents[2] / "pipelines" / f"{name}.json"


def cmd_download(index: dict[str, Any], args: argparse.Namespace) -> int:
    if bool(args.name) == bool(args.pipeline):
        raise DownloadError("give a bundle name or --pipeline NAME (not both)")
    if args.pipeline:
        from common.pipelines.steps import PipelineError, pipeline_bundles

        try:
            bundles = pipeline_bundles(pipeline_path(args.pipeline))
        except PipelineError as err:
            raise DownloadError(str(err)) from None
        print(f"pipeline {args.pipeline} needs: {', '.join(bundles)}")
        for name in bundles:
            get_entry(index, name)  # every name known before anything is fetched
        for name in bundles:
            one = argparse.Namespace(**{**vars(args), "name": name, "pipeline": None})
            cmd_download(index, one)
        return 0
    entry = get_entry(index, args.name)
    check_version(args.name, entry, args.version)
    if args.published:
        out = download_published(
            index, args.name, dest_root=args.dir, allow_unknown_hash=args.allow_unknown_hash, force=args.force
        )
        for path, sha in out.unknown_hashes.items():
            print(f"{args.name}/{path}: sha256 {sha} (the index has none: record it in large_files.yml)")
        print(
            f"{args.name}: published weights in {out.bundle_dir}: {len(out.downloaded)} downloaded, "
            f"{len(out.up_to_date)} already present"
        )
        return 0
    names = [args.name] if args.no_deps else with_dependencies(index, args.name)
    for name in names:
        out = download_bundle(
            index,
            name,
            dest_root=args.dir,
            source=args.source,
            version=args.version if name == args.name else None,
            force=args.force,
        )
        print(
            f"{name} {out.version}: {len(out.downloaded) + len(out.up_to_date)} file(s) in {out.bundle_dir} "
            f"({len(out.downloaded)} new, {len(out.up_to_date)} already present), sha256 OK"
        )
    return 0


def cmd_verify(index: dict[str, Any], args: argparse.Namespace) -> int:
    names = [args.name] if args.name else sorted(index["bundles"])
    if args.name:
        get_entry(index, args.name)
    if not Path(args.dir).is_dir():
        raise DownloadError(f"{args.dir}: folder not found: pass --dir, the folder that holds the downloaded bundles")
    failed = 0
    for name in names:
        bundle_dir = Path(args.dir) / name
        if not bundle_dir.is_dir():
            if args.name:
                print(f"{name}: not downloaded ({bundle_dir} does not exist)")
                failed += 1
            else:
                print(f"{name}: not downloaded")
            continue
        problems = verify_local(index, name, args.dir)
        n_files = len(index["bundles"][name].get("files") or [])
        if problems:
            failed += 1
            print(f"{name}: {len(problems)} problem(s): " + "; ".join(problems[:5]) + (" ..." if len(problems) > 5 else ""))
        else:
            print(f"{name}: {n_files} file(s) match the index")
        for path, sha in unchecked_published(index, name, args.dir).items():
            print(f"{name}/{path}: published weights present, sha256 {sha} (unknown to the index)")
    if failed:
        print(f"error: {failed} bundle(s) do not match the index: run `python -m common.zoo download NAME --force`", file=sys.stderr)
        return 1
    return 0


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--index", type=Path, default=argparse.SUPPRESS, help="index file (default: the repo's model_zoo_index.json)")
    parser = argparse.ArgumentParser(
        prog="python -m common.zoo", description="List, inspect, download and verify the zoo's bundles.", parents=[common]
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="{list,info,download,verify}")
    p = sub.add_parser("list", parents=[common], help="bundles of the index")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p = sub.add_parser("info", parents=[common], help="one bundle: files, sha256, sources, published weights")
    p.add_argument("name")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p = sub.add_parser("download", parents=[common], help="download a bundle (and what it depends on), checked")
    p.add_argument("name", nargs="?", default=None)
    p.add_argument("--pipeline", default=None, help="download every bundle a pipeline (pipelines/NAME.json) uses")
    p.add_argument("--version", default=None, help="bundle version (must be the one the index lists)")
    p.add_argument("--source", choices=SOURCES, default="huggingface", help="where from (default: huggingface)")
    p.add_argument("--dir", type=Path, default=DEFAULT_DIR, help="folder of bundles to write into (default: ./bundles)")
    p.add_argument("--published", action="store_true", help="download the bundle's published (paper) weights instead")
    p.add_argument("--allow-unknown-hash", action="store_true", help="accept files whose sha256 the index does not know")
    p.add_argument("--force", action="store_true", help="overwrite files that differ from the index")
    p.add_argument("--no-deps", action="store_true", help="skip the bundles listed in depends_on")
    p = sub.add_parser("verify", parents=[common], help="check downloaded bundles against the index")
    p.add_argument("name", nargs="?", default=None)
    p.add_argument("--dir", type=Path, default=DEFAULT_DIR, help="folder of bundles to check (default: ./bundles)")
    return parser


COMMANDS = {"list": cmd_list, "info": cmd_info, "download": cmd_download, "verify": cmd_verify}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        index = load_index(getattr(args, "index", None))
        return COMMANDS[args.command](index, args)
    except (DownloadError, ZooIndexError) as e:
        print(f"error: {one_line(e)}", file=sys.stderr)
        return 1
    except OSError as e:  # disk full, permissions: still one line
        print(f"error: {one_line(e)}: check the destination folder and free space", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("error: interrupted: no partially downloaded file was kept; run the command again", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
