#!/usr/bin/env bash
# Release step (docs/release.md), not run by CI: fail when the notebooks point at a tag that does not exist.
# Every notebook's Colab badge and install cell name v<version> (pyproject.toml, written by
# scripts/sync_notebooks.py); until `git tag v<version>` exists (and is pushed), those links and installs fail
# for every learner. Exit 0: the tag exists; 1: it is missing (or the notebooks are out of sync).
set -euo pipefail
cd "$(dirname "$0")/.."
version="$(sed -n 's/^version *= *"\(.*\)"/\1/p' pyproject.toml | head -n 1)"
if [ -z "$version" ]; then
  echo "release check: no version = \"...\" in pyproject.toml" >&2
  exit 1
fi
tag="v$version"
# the install cell's "...@v0.1.0" and the badge's ".../blob/v0.1.0/...", not v0.1.01
tag_re="(@|/blob/)${tag//./\\.}([^0-9A-Za-z.]|$)"
pointing=$( (grep -lE "$tag_re" notebooks/[0-9][0-9]_*.ipynb 2>/dev/null || true) | wc -l | tr -d ' ')
if [ "$pointing" = 0 ]; then
  echo "release check: no notebook points at $tag: run python scripts/sync_notebooks.py first" >&2
  exit 1
fi
if [ -z "$(git tag --list "$tag")" ]; then
  echo "release check: $pointing notebooks point at $tag (Colab badges and install cells), but git has no tag $tag:" \
       "git tag $tag && git push origin $tag (after committing the synced notebooks)" >&2
  exit 1
fi
echo "release check: $tag exists; $pointing notebooks point at it (push it too: git push origin $tag)"
