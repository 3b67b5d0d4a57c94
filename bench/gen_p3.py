#!/usr/bin/env python3
"""Writes a P3 (client-centric) scenario file for timing `bank run`.

    python3 bench/gen_p3.py --branches 10 --customers 10 --events 500 > /tmp/p3-5000.json

Each customer deposits, withdraws and queries at branches chosen round-robin, so the file is
the same on every run (no randomness) and no withdrawal overdraws.
"""
import argparse
import json
import sys


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--branches", type=int, default=10)
    parser.add_argument("--customers", type=int, default=10)
    parser.add_argument("--events", type=int, default=500, help="events per customer")
    parser.add_argument("--balance", type=int, default=1000)
    args = parser.parse_args()
    if min(args.branches, args.customers, args.events) < 1:
        parser.error("--branches, --customers and --events must be at least 1")

    entries = []
    event_id = 0
    for customer in range(1, args.customers + 1):
        events = []
        for n in range(args.events):
            event_id += 1
            branch = (customer + n) % args.branches + 1
            kind = ("deposit", "query", "withdraw", "query")[n % 4]
            event = {"id": event_id, "interface": kind, "branch": branch}
            if kind != "query":
                event["money"] = 10
            events.append(event)
        entries.append({"id": customer, "type": "customer", "events": events})
    for branch in range(1, args.branches + 1):
        entries.append({"id": branch, "type": "branch", "balance": args.balance})
    json.dump(entries, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
