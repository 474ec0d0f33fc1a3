#!/bin/sh
# surge-cron.sh: start `surge run` unless it is already running. Meant for cron, e.g. every minute:
#
#   * * * * * SURGE_HOME=/home/trader/.surge SURGE_BIN=/home/trader/venv/bin/surge /path/to/surge-cron.sh
#
# Why it is this simple: `surge run` holds a kernel file lock on $SURGE_HOME/surge.lock for its whole
# life (released even on kill -9), so a second copy exits 3 within a second ("already running (pid N)")
# before it touches anything. This script therefore never needs a pid file or `pgrep`: it starts a
# candidate in the background, and the lock decides. Exit code 3 counts as success.
#
# Works from cron's minimal environment: absolute paths only, nothing from the caller's shell.
#   SURGE_HOME  state directory (default: $HOME/.surge); the log goes to $SURGE_HOME/logs/cron.log
#   SURGE_BIN   the surge executable (default: the `surge` next to this script's ../venv, else on PATH)
#   SURGE_PYTHON  alternatively, a Python that has surge installed (runs `PYTHON -m surge`)
#   SURGE_RUN_ARGS  extra arguments for `surge run` (e.g. "--symbols BTCUSDT,ETHUSDT"), word-split
# Every other SURGE_* variable (SURGE_REST_URL, SURGE_WS_URL, SURGE_CONFIG, ...) passes through.
set -u
PATH=/usr/local/bin:/usr/bin:/bin
export PATH

: "${HOME:=$(cd ~ 2>/dev/null && pwd || echo /tmp)}"
SURGE_HOME=${SURGE_HOME:-$HOME/.surge}
export SURGE_HOME
LOG_DIR=$SURGE_HOME/logs
LOG=$LOG_DIR/cron.log
mkdir -p "$LOG_DIR" || exit 1

here=$(cd "$(dirname "$0")" && pwd)
if [ -n "${SURGE_PYTHON:-}" ]; then
    set -- "$SURGE_PYTHON" -m surge
elif [ -n "${SURGE_BIN:-}" ]; then
    set -- "$SURGE_BIN"
elif [ -x "$here/../venv/bin/surge" ]; then
    set -- "$here/../venv/bin/surge"
elif command -v surge >/dev/null 2>&1; then
    set -- "$(command -v surge)"
else
    echo "$(date -u '+%Y-%m-%d %H:%M:%S') surge-cron: no surge executable (set SURGE_BIN or SURGE_PYTHON)" >>"$LOG"
    exit 1
fi

stamp() { date -u '+%Y-%m-%d %H:%M:%S'; }

# Start a candidate detached from cron (its own session, no terminal, output appended to the log).
# shellcheck disable=SC2086 # SURGE_RUN_ARGS is meant to be word-split
nohup "$@" run ${SURGE_RUN_ARGS:-} </dev/null >>"$LOG" 2>&1 &
pid=$!
echo "$(stamp) surge-cron: started candidate pid $pid" >>"$LOG"

# A second copy exits 3 at once (lock held); a good start stays up. Wait a few seconds to tell them
# apart, so the log (and cron's mail, if any) says which.
i=0
while [ $i -lt 20 ]; do
    if ! kill -0 "$pid" 2>/dev/null; then
        wait "$pid"
        rc=$?
        case $rc in
            0) echo "$(stamp) surge-cron: pid $pid finished (exit 0)" >>"$LOG"; exit 0 ;;
            3) echo "$(stamp) surge-cron: already running, nothing to do" >>"$LOG"; exit 0 ;;
            *) echo "$(stamp) surge-cron: surge run exited $rc (see above)" >>"$LOG"; exit "$rc" ;;
        esac
    fi
    sleep 0.25
    i=$((i + 1))
done
echo "$(stamp) surge-cron: pid $pid is running" >>"$LOG"
exit 0
