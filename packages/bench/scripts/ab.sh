#!/usr/bin/env bash
# Runs one benchmark command in two bench bundles, alternating old, new, new, old, so that drifts of
# the machine fall on both: the A/B behind RESULTS.md's "same call" comparisons.
#
#   scripts/ab.sh OLD_DIST NEW_DIST OUT_DIR [--timeout S] -- node cli.mjs --no-peers
#
# Each run executes in its bundle's folder (Dawn's `webgpu` linked next to it from WEBGPU_DIR,
# default .gpu/node_modules/webgpu); `{json}` in the command becomes OUT_DIR/<i>-<old|new>.json, and
# the output goes to OUT_DIR/<i>-<old|new>.log.
set -u
if [ $# -lt 5 ]; then
  sed -n '2,10p' "$0" >&2
  exit 2
fi
old=$(cd "$1" && pwd) new=$(cd "$2" && pwd) out=$3
shift 3
limit=300
if [ "$1" = --timeout ]; then limit=$2; shift 2; fi
[ "$1" = -- ] && shift
mkdir -p "$out"
out=$(cd "$out" && pwd)
webgpu=$(cd "${WEBGPU_DIR:-.gpu/node_modules/webgpu}" && pwd)
for d in "$old" "$new"; do mkdir -p "$d/node_modules" && ln -sfn "$webgpu" "$d/node_modules/webgpu"; done
i=0
for v in old new new old; do
  i=$((i + 1))
  dir=$([ $v = old ] && echo "$old" || echo "$new")
  cmd=("${@//\{json\}/$out/$i-$v.json}")
  (cd "$dir" && timeout "$limit" "${cmd[@]}" >"$out/$i-$v.log" 2>&1; echo "rc=$?" >>"$out/$i-$v.log")
  echo "[$i $v] $(tail -n 1 "$out/$i-$v.log")"
done
