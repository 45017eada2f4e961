#!/usr/bin/env bash
# Time from launching `tuneloop` on a FRESH home in a real terminal (tmux, 120x36) until its
# first screen is painted (the footer's quit key is visible). Prints one line per trial.
set -euo pipefail
cd "$(dirname "$0")/.."
trials=${1:-5}
for i in $(seq 1 "$trials"); do
    home=$(mktemp -d)
    tmux kill-session -t tl-startup 2>/dev/null || true
    start=$(date +%s.%N)
    tmux new-session -d -s tl-startup -x 120 -y 36 ".venv/bin/tuneloop --home $home"
    while ! tmux capture-pane -p -t tl-startup 2>/dev/null | grep -q "Quit"; do sleep 0.01; done
    end=$(date +%s.%N)
    tmux kill-session -t tl-startup
    rm -rf "$home"
    printf 'trial %d: first paint after %.2f s\n' "$i" "$(echo "$end - $start" | bc)"
done
