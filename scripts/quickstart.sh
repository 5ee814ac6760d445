#!/usr/bin/env bash
# A real first session on the embedded backend: create a run, save two checkpoints, list
# them, publish one, download it, and show where everything landed. Uses a fresh state
# directory so it never touches your own LOGITS_HOME.
set -euo pipefail
cd "$(dirname "$0")/.."

logits=".venv/bin/logits"
export LOGITS_HOME="${QUICKSTART_HOME:-$(mktemp -d "${TMPDIR:-/tmp}/logits-quickstart.XXXXXX")}"
unset LOGITS_BASE_URL TINKER_BASE_URL LOGITS_PROFILE
downloads="$LOGITS_HOME/downloads"

if [ -t 2 ] && [ -z "${NO_COLOR:-}" ]; then bold=$'\033[1m' plain=$'\033[0m'; else bold="" plain=""; fi
step() { printf '\n%s$ %s%s\n' "$bold" "$*" "$plain" >&2; }

step "logits runs create --base-model logits/tiny --rank 4"
LOGITS_RUN=$("$logits" runs create --base-model logits/tiny --rank 4)
export LOGITS_RUN
echo "$LOGITS_RUN"

step "logits ckpt save step_100"
"$logits" ckpt save step_100

step "logits ckpt save step_200 --sampler --ttl 7d"
last=$("$logits" ckpt save step_200 --sampler --ttl 7d)
echo "$last"

step "logits ckpt ls"
"$logits" ckpt ls

step "logits ckpt publish $last"
"$logits" ckpt publish "$last"

step "logits ckpt download $last -o $downloads"
local_dir=$("$logits" ckpt download "$last" -o "$downloads")
echo "$local_dir"

step "ls -l $local_dir"
ls -l "$local_dir"

step "logits ckpt verify $downloads"
"$logits" ckpt verify "$downloads"

step "logits config show"
"$logits" config show

printf '\nThe embedded store of this session is in %s/store.\n' "$LOGITS_HOME" >&2
printf 'Try more with:  export LOGITS_HOME=%s LOGITS_RUN=%s\n' "$LOGITS_HOME" "$LOGITS_RUN" >&2
