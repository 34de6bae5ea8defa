#!/usr/bin/env python
"""Upload a bundle to its Hugging Face hub repo, for maintainers: exactly the files the index lists.

Usage: ``python ci/push_bundle.py NAME [--bundles-dir bundles] [--index model_zoo_index.json]
[--repo-id ORG/NAME] [--branch main] [--private] [--dry-run]``. Log in first (``hf auth login``) or set
``HF_TOKEN``; ``HF_ENDPOINT`` selects another hub.

What it does: checks that ``bundles/NAME`` matches the index (so what is pushed is what downloads will
check against; rebuild the index first otherwise), creates the repo if needed, commits the index's files
(removing files of an older version that the index no longer lists), and tags the commit with the
bundle's version. The tag is what ``python -m common.zoo download`` pins by default and what
``python -m monai.bundle download --source huggingface_hub --repo ORG/NAME --version V`` asks for.
A version tag never moves: pushing a version that is already tagged at other content is refused.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from common.zoo.download import get_entry, safe_relpath, verify_local  # noqa: E402
from common.zoo.errors import DownloadError, one_line  # noqa: E402
from common.zoo.hub import DEFAULT_HF_ORG  # noqa: E402
from common.zoo.index import DEFAULT_BUNDLES_DIR, ZooIndexError, load_index  # noqa: E402

KEEP_IN_REPO = {".gitattributes"}


def plan(index: dict, name: str, bundles_dir: Path, repo_id: str | None) -> tuple[str, str, list[str]]:
    """(repo_id, version, files to push) after checking the bundle on disk against the index."""
    entry = get_entry(index, name)
    if not (bundles_dir / name).is_dir():
        raise DownloadError(f"{bundles_dir / name}: bundle folder not found: pass --bundles-dir")
    problems = [p for p in verify_local(index, name, bundles_dir) if "published weights" not in p]
    if problems:
        raise DownloadError(
            f"{name}: the bundle differs from the index ({problems[0]}): run `python ci/build_index.py` and commit it first"
        )
    version = entry.get("version")
    if not version:
        raise DownloadError(f"{name}: no version in configs/metadata.json: set one, rebuild the index, push again")
    hf = (entry.get("sources") or {}).get("huggingface") or {}
    repo_id = repo_id or hf.get("repo_id") or f"{DEFAULT_HF_ORG}/{name}"
    files = [safe_relpath(name, f["path"]).as_posix() for f in entry.get("files") or []]
    return repo_id, str(version), files


def same_content(remote_file, local: Path) -> bool:
    """Whether a hub file (LFS sha256, else git blob sha1) holds the bytes of ``local``."""
    data = local.read_bytes()
    if remote_file.lfs is not None:
        return remote_file.lfs.sha256 == hashlib.sha256(data).hexdigest()
    return remote_file.blob_id == hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def push(name: str, bundles_dir: Path, repo_id: str, version: str, files: list[str], branch: str, private: bool) -> tuple[str, bool]:
    """Commit ``files`` to ``repo_id`` on ``branch`` and tag it ``version``: (commit sha, whether anything was pushed).

    A version already tagged with the same files is left alone; tagged with other files, it is refused.
    """
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi
    from huggingface_hub.hf_api import RepoFile

    api = HfApi()
    api.create_repo(repo_id, exist_ok=True, private=private)
    refs = api.list_repo_refs(repo_id)
    tagged = {t.name: t.target_commit for t in refs.tags}
    if version in tagged:
        remote = {
            f.path: f
            for f in api.list_repo_tree(repo_id, revision=tagged[version], recursive=True)
            if isinstance(f, RepoFile)
        }
        same = set(remote) - KEEP_IN_REPO == set(files) and all(
            same_content(remote[p], bundles_dir / name / p) for p in files
        )
        if same:
            return tagged[version], False
        raise DownloadError(
            f"{repo_id}: tag {version} already holds other files: bump the bundle's version instead of moving a "
            "published tag"
        )
    existing = set(api.list_repo_files(repo_id, revision=branch)) if any(b.name == branch for b in refs.branches) else set()
    ops: list = [CommitOperationAdd(path_in_repo=p, path_or_fileobj=str(bundles_dir / name / p)) for p in files]
    ops += [CommitOperationDelete(path_in_repo=p) for p in sorted(existing - set(files) - KEEP_IN_REPO)]
    info = api.create_commit(repo_id, ops, commit_message=f"{name} {version}", revision=branch)
    api.create_tag(repo_id, tag=version, revision=info.oid)
    return info.oid, True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", help="bundle folder name under --bundles-dir")
    parser.add_argument("--bundles-dir", type=Path, default=DEFAULT_BUNDLES_DIR)
    parser.add_argument("--index", type=Path, default=None, help="index file (default: the repo's model_zoo_index.json)")
    parser.add_argument("--repo-id", default=None, help=f"hub repo (default: metadata sources or {DEFAULT_HF_ORG}/NAME)")
    parser.add_argument("--branch", default="main")
    parser.add_argument("--private", action="store_true", help="create the repo private")
    parser.add_argument("--dry-run", action="store_true", help="check and list what would be pushed; upload nothing")
    args = parser.parse_args(argv)
    try:
        index = load_index(args.index)
        repo_id, version, files = plan(index, args.name, args.bundles_dir, args.repo_id)
        if args.dry_run:
            print(f"would push {args.name} {version} ({len(files)} file(s)) to {repo_id}@{args.branch}, tag {version}:")
            for p in files:
                print(f"  {p}")
            return 0
        commit, pushed = push(args.name, args.bundles_dir, repo_id, version, files, args.branch, args.private)
    except (DownloadError, ZooIndexError) as e:
        print(f"error: {one_line(e)}", file=sys.stderr)
        return 1
    except Exception as e:  # hub / auth / network errors from huggingface_hub: one line, non-zero
        print(f"error: push to the hub failed ({type(e).__name__}: {one_line(e)[:300]}): check `hf auth whoami` and HF_ENDPOINT", file=sys.stderr)
        return 1
    if not pushed:
        print(f"{args.name} {version} is already on {repo_id} (tag {version} at {commit}, same files): nothing pushed")
        return 0
    print(f"pushed {args.name} {version} to {repo_id}@{commit} (tag {version}, {len(files)} file(s))")
    return 0


if __name__ == "__main__":
    sys.exit(main())
