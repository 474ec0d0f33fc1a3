#!/bin/sh
# surge-cron.sh: start `surge run` unless it is already running. Meant for cron, e.g. every minute:
#
#   * * * * * SURGE_HOME=/home/trader/.surge SURGE_BIN=/home/trader/venv/bin/surge /path/to/surge-cron.sh
#
# Why it looks like this: `surge run` holds a kernel file lock (flock) on $SURGE_HOME/surge.lock for
# its whole life, released even on kill -9. So "is it running?" is one `flock -n` on that file, with
# no Python started and nothing written: the common case, every minute, costs almost nothing. Only
# when the lock is free is a bot started, and the lock still decides (a copy that loses a race exits
# 3, counted as success). Without flock(1) (macOS), the candidate is started and the lock decides.
#
# cron.log gets one line when something changed, and only then: a bot started, a bot found gone
# since the last run, a start that failed (the same failure again is not repeated). The bot runs
# with --quiet: its log is $SURGE_HOME/logs/surge.log (rotated by the bot), not cron.log. cron.log is
# rotated here at SURGE_CRON_LOG_BYTES (default 1 MB), keeping 3 old files like surge.log keeps 5.
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
umask 077

: "${HOME:=$(cd ~ 2>/dev/null && pwd || echo /tmp)}"
SURGE_HOME=${SURGE_HOME:-$HOME/.surge}
export SURGE_HOME
LOG_DIR=$SURGE_HOME/logs
LOG=$LOG_DIR/cron.log
STATE=$LOG_DIR/cron.state   # what the last run of this script saw: "running PID" or "failed RC: LINE"
ERR=$LOG_DIR/cron.err       # the stderr of the last bot started here (its one-line errors, a crash)
LOCK=$SURGE_HOME/surge.lock
MAX_LOG_BYTES=${SURGE_CRON_LOG_BYTES:-1000000}
KEEP=3

stamp() { date -u '+%Y-%m-%d %H:%M:%S'; }

rotate() {
    size=$(wc -c <"$LOG" 2>/dev/null || echo 0)
    [ "$size" -lt "$MAX_LOG_BYTES" ] && return 0
    i=$KEEP
    while [ $i -gt 1 ]; do
        [ -f "$LOG.$((i - 1))" ] && mv -f "$LOG.$((i - 1))" "$LOG.$i"
        i=$((i - 1))
    done
    mv -f "$LOG" "$LOG.1"
}

say() {
    rotate
    echo "$(stamp) surge-cron: $*" >>"$LOG"
}

# 1. Running? Ask the kernel, without Python and without writing anything.
if [ -e "$LOCK" ] && command -v flock >/dev/null 2>&1; then
    if ! flock -n "$LOCK" true 2>/dev/null; then
        exit 0  # held: a bot runs. Nothing changed, nothing to log.
    fi
fi

mkdir -p "$LOG_DIR" || exit 1
last=$(cat "$STATE" 2>/dev/null || true)

# 2. Not running. If this script started one before, it has ended since: say so once.
case $last in
    running\ *)
        line=$(tail -n 1 "$ERR" 2>/dev/null || true)
        say "pid ${last#running } is no longer running${line:+ (its last words: $line)}; see surge.log"
        last="gone ${last#running }"
        echo "$last" >"$STATE"
        ;;
esac

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
    msg="failed 1: no surge executable (set SURGE_BIN or SURGE_PYTHON)"
    [ "$last" = "$msg" ] || say "${msg#failed 1: }"
    echo "$msg" >"$STATE"
    exit 1
fi

# 3. Start a candidate detached from cron (no terminal); its stderr, quiet unless it fails, to $ERR.
# shellcheck disable=SC2086 # SURGE_RUN_ARGS is meant to be word-split
nohup "$@" run --quiet ${SURGE_RUN_ARGS:-} </dev/null >"$ERR" 2>&1 &
pid=$!

# A copy that loses the lock exits 3 at once; a bad config exits 2; a good start stays up. Wait a
# few seconds to tell them apart.
i=0
while [ $i -lt 20 ]; do
    if ! kill -0 "$pid" 2>/dev/null; then
        wait "$pid"
        rc=$?
        case $rc in
            0) say "pid $pid started and finished (exit 0)"; echo "finished 0" >"$STATE"; exit 0 ;;
            3) exit 0 ;;  # another copy got there first: it runs, nothing changed here
            *)
                msg="failed $rc: $(grep -v '^ *$' "$ERR" 2>/dev/null | tail -n 1)"
                [ "$last" = "$msg" ] || say "surge run exited $rc: ${msg#failed "$rc": }"
                echo "$msg" >"$STATE"
                exit "$rc"
                ;;
        esac
    fi
    sleep 0.25
    i=$((i + 1))
done
say "started pid $pid"
echo "running $pid" >"$STATE"
exit 0
