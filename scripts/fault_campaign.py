#!/usr/bin/env python3
"""The long fault campaign against the order desk: ``--schedules`` seeded random schedules (300 by
default) of signals, closes, price moves, exchange faults, SIGTERM restarts and kill -9 crashes, each
checked against the issue's invariants (see ``tests/trading/campaign.py``, shared with the short form
in the default test suite).

Prints ONE JSON object on stdout: schedules, steps, faults_injected, faults_by_kind, signals, entries,
invariant_violations (must be 0), violations (the first few, each with its schedule seed and steps),
desk_thread_deaths, elapsed_s, and a few more counters. Schedule ``I`` of seed ``S`` is drawn from
``random.Random("S:I")``, so ``--seed S --only I`` replays a violation's schedule (timing aside).

    python scripts/fault_campaign.py                      # 300 schedules: about 25 minutes
    python scripts/fault_campaign.py --schedules 30 --seed 7
    python scripts/fault_campaign.py --seed 7 --only 12 --log /tmp/campaign.log
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the harness is test code (tests/trading/campaign.py): import it from the repo

from surge.sim.simulator import Simulator  # noqa: E402
from tests.trading.campaign import Campaign, draw_schedule  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--schedules", type=int, default=300)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--steps", type=int, default=14, help="drawn steps per schedule (after two signals)")
    ap.add_argument("--only", type=int, default=None, help="run schedule I of the seed alone (a replay)")
    ap.add_argument("--log", default=None, help="write the desk's log (INFO) to this file")
    args = ap.parse_args(argv)
    logging.basicConfig(
        filename=args.log,
        level=logging.INFO if args.log else logging.CRITICAL,
        format="%(asctime)s %(threadName)s %(levelname)s %(message)s",
    )
    indices = [args.only] if args.only is not None else list(range(args.schedules))
    started = time.monotonic()
    with (
        tempfile.TemporaryDirectory(prefix="surge-campaign-") as tmp,
        Simulator(n_symbols=40, seed=5, surge_interval_s=None) as sim,
    ):
        campaign = Campaign(sim, Path(tmp))
        try:
            for i in indices:
                label = f"{args.seed}:{i}"
                campaign.run(label, draw_schedule(random.Random(label), args.steps))
                print(f"schedule {label}: {len(campaign.violations)} violation(s) so far", file=sys.stderr)
        finally:
            campaign.close()
    stats, settle = campaign.stats, campaign.settle_s
    report = {
        "schedules": stats["schedules"],
        "steps": stats["steps"],
        "faults_injected": sum(campaign.faults.values()),
        "faults_by_kind": dict(sorted(campaign.faults.items())),
        "signals": stats["signals"],
        "entries": stats["entries"],
        "invariant_violations": len(campaign.violations),
        "violations": [v.as_dict() for v in campaign.violations[:5]],
        "desk_thread_deaths": stats["desk_thread_deaths"],
        "elapsed_s": round(time.monotonic() - started, 1),
        "kills": stats["kills"],
        "kills_in_start": stats["kills_in_start"],
        "starts": stats["starts"],
        "start_failures": stats["start_failures"],
        "unresolved_at_stop": stats["unresolved_at_stop"],
        "unproven_closes_contradicted": stats["unproven_closes_contradicted"],
        "signals_refused": stats["signals_refused"],
        "closes": stats["closes"],
        "moves": stats["moves"],
        "settle_s": {"p50": round(statistics.median(settle), 2), "max": round(max(settle), 2)}
        if settle
        else None,
        "seed": args.seed,
    }
    print(json.dumps(report))
    return 0 if not campaign.violations else 1


if __name__ == "__main__":
    sys.exit(main())
