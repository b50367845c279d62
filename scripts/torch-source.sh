#!/usr/bin/env bash
# Print (one per line) the pip/uv arguments that make torch's CPU build (`torch==X+cpu`, pinned by
# the locks) findable: every configured pip find-links folder, and the PyTorch CPU index
# ($TORCH_INDEX) unless one of those folders already holds the wheel. The index is left out
# then because a machine that ships the wheel on disk may not reach it.
#   torch-source.sh VERSION     e.g. 2.13.0+cpu
set -euo pipefail
version=${1:?usage: torch-source.sh TORCH_VERSION}
PY=${PYTHON:-$(command -v python3.11 || command -v python3)}
index=${TORCH_INDEX:-https://download.pytorch.org/whl/cpu}
links="$("$PY" -m pip config get global.find-links 2>/dev/null || true) ${PIP_FIND_LINKS:-}"
seen=" "
for dir in $links; do
  dir=${dir#file://}
  [ -d "$dir" ] || continue
  case "$seen" in *" $dir "*) continue ;; esac
  seen="$seen$dir "
  printf -- '--find-links\n%s\n' "$dir"
  if compgen -G "$dir/torch-${version}-cp311-*.whl" > /dev/null; then
    index=""
  fi
done
if [ -n "$index" ]; then
  printf -- '--extra-index-url\n%s\n' "$index"
fi
