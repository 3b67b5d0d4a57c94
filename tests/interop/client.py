#!/usr/bin/env python3
"""Interop client: drives a running `bank server` the way the original course client did.

Usage:
    client.py [--base-port P] [--check-errors] SCENARIO.json

The Python stubs are generated at run time from proto/banks.proto (with grpc_tools.protoc,
into a temporary directory), so nothing generated is committed and the test exercises the
exact wire contract of that file.

For a Project 1 scenario, customer i talks to branch i at 127.0.0.1:(P + i), customers run in
input order and each customer's events in order, one MsgDelivery per event (10 s deadline).
The output (one object per customer) is printed as JSON on stdout:
    [{"id": 2, "recv": [{"interface": "deposit", "result": "success"},
                        {"interface": "query", "balance": 570}]}, ...]

Before running the customers it waits for every branch to answer a query (retrying until a
30 s deadline; a query changes nothing, so retrying it is safe). Deposits and withdraws are
never retried.

With --check-errors it also checks the error contract of the customer API:
    deposit with money=0            -> INVALID_ARGUMENT
    interface "propagate_deposit"   -> PERMISSION_DENIED
    interface "teleport"            -> INVALID_ARGUMENT
Any failure or mismatch is reported on stderr and the exit status is 1.
"""

import argparse
import importlib
import json
import os
import sys
import tempfile
import time

import grpc
from grpc_tools import protoc

CALL_DEADLINE_S = 10.0
READY_DEADLINE_S = 30.0
READY_POLL_S = 0.1

REPO_ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
PROTO_FILE = os.path.join(REPO_ROOT, "proto", "banks.proto")


class ClientError(Exception):
    """A failure that ends the run with exit status 1 and a message on stderr."""


def load_stubs(out_dir):
    """Generates banks_pb2 / banks_pb2_grpc from proto/banks.proto into out_dir and imports them."""
    if not os.path.isfile(PROTO_FILE):
        raise ClientError(f"proto file not found: {PROTO_FILE}")
    well_known = os.path.join(os.path.dirname(protoc.__file__), "_proto")
    rc = protoc.main(
        [
            "grpc_tools.protoc",
            f"-I{os.path.dirname(PROTO_FILE)}",
            f"-I{well_known}",
            f"--python_out={out_dir}",
            f"--grpc_python_out={out_dir}",
            os.path.basename(PROTO_FILE),
        ]
    )
    if rc != 0:
        raise ClientError(f"grpc_tools.protoc failed on {PROTO_FILE} (exit {rc})")
    sys.path.insert(0, out_dir)
    try:
        pb2 = importlib.import_module("banks_pb2")
        pb2_grpc = importlib.import_module("banks_pb2_grpc")
    finally:
        sys.path.remove(out_dir)
    return pb2, pb2_grpc


def load_scenario(path):
    """Returns (branch ids, customers) of a Project 1 scenario file."""
    try:
        with open(path, encoding="utf-8") as f:
            entries = json.load(f)
    except (OSError, ValueError) as e:
        raise ClientError(f"cannot read scenario file {path}: {e}") from e
    if not isinstance(entries, list):
        raise ClientError(f"{path}: expected a JSON array of branches and customers")
    branches = [e["id"] for e in entries if e.get("type") == "branch"]
    customers = [e for e in entries if e.get("type") == "customer"]
    for c in customers:
        if "events" not in c:
            raise ClientError(f"{path}: customer {c.get('id')} has no 'events' (not a Project 1 file?)")
        for ev in c["events"]:
            if "branch" in ev:
                raise ClientError(f"{path}: events name a branch: a Project 3 file, not Project 1")
    return branches, customers


def describe(err):
    return f"{err.code().name}: {err.details()}"


class Bank:
    def __init__(self, pb2, pb2_grpc, base_port):
        self.pb2 = pb2
        self.pb2_grpc = pb2_grpc
        self.base_port = base_port
        self.channels = {}
        self.stubs = {}

    def address(self, branch_id):
        return f"127.0.0.1:{self.base_port + branch_id}"

    def stub(self, branch_id):
        if branch_id not in self.stubs:
            # Short reconnect backoff: while waiting for readiness the port may refuse
            # connections for a while, and the default backoff (1 s growing to 120 s) would make
            # the channel sleep long after the server is up.
            channel = grpc.insecure_channel(
                self.address(branch_id),
                options=[
                    ("grpc.initial_reconnect_backoff_ms", 100),
                    ("grpc.min_reconnect_backoff_ms", 100),
                    ("grpc.max_reconnect_backoff_ms", 500),
                ],
            )
            self.channels[branch_id] = channel
            self.stubs[branch_id] = self.pb2_grpc.BranchStub(channel)
        return self.stubs[branch_id]

    def call(self, branch_id, interface, money=0, event_id=0, timeout=CALL_DEADLINE_S):
        request = self.pb2.Request(id=event_id, interface=interface, money=money)
        return self.stub(branch_id).MsgDelivery(request, timeout=timeout)

    def wait_ready(self, branch_ids):
        """Retries a query to every branch until each answers, within one overall deadline."""
        deadline = time.monotonic() + READY_DEADLINE_S
        for branch_id in branch_ids:
            last = None
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise ClientError(
                        f"branch {branch_id} at {self.address(branch_id)} did not answer a query "
                        f"within {READY_DEADLINE_S:.0f} s (last error: {last})"
                    )
                try:
                    self.call(branch_id, "query", timeout=min(CALL_DEADLINE_S, remaining))
                    break
                except grpc.RpcError as e:
                    last = describe(e)
                    time.sleep(min(READY_POLL_S, max(0.0, deadline - time.monotonic())))

    def close(self):
        for channel in self.channels.values():
            channel.close()


def run_customers(bank, customers):
    output = []
    for customer in customers:
        cid = customer["id"]
        recv = []
        for ev in customer["events"]:
            interface = ev["interface"]
            money = ev.get("money", 0)
            try:
                reply = bank.call(cid, interface, money=money, event_id=ev["id"])
            except grpc.RpcError as e:
                raise ClientError(
                    f"customer {cid}, event {ev['id']} ({interface} {money}) at branch {cid} "
                    f"({bank.address(cid)}) failed: {describe(e)}"
                ) from e
            if interface == "query":
                recv.append({"interface": "query", "balance": reply.balance})
            else:
                recv.append({"interface": interface, "result": reply.result})
        output.append({"id": cid, "recv": recv})
    return output


def check_errors(bank, branch_id):
    """Returns a list of mismatches of the customer API's error contract."""
    cases = [
        ("deposit with money=0", "deposit", 0, grpc.StatusCode.INVALID_ARGUMENT),
        ("interface 'propagate_deposit'", "propagate_deposit", 10, grpc.StatusCode.PERMISSION_DENIED),
        ("interface 'teleport'", "teleport", 10, grpc.StatusCode.INVALID_ARGUMENT),
    ]
    problems = []
    for label, interface, money, expected in cases:
        try:
            reply = bank.call(branch_id, interface, money=money)
        except grpc.RpcError as e:
            if e.code() != expected:
                problems.append(f"{label}: expected {expected.name}, got {describe(e)}")
            continue
        problems.append(
            f"{label}: expected {expected.name}, got a reply "
            f"(interface={reply.interface!r}, result={reply.result!r}, balance={reply.balance})"
        )
    return problems


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scenario", help="path of a Project 1 input.json")
    parser.add_argument("--base-port", type=int, default=50050,
                        help="branch N listens on 127.0.0.1:(P + N); default 50050")
    parser.add_argument("--check-errors", action="store_true",
                        help="also check the gRPC error codes of invalid requests")
    args = parser.parse_args(argv)

    try:
        branch_ids, customers = load_scenario(args.scenario)
        with tempfile.TemporaryDirectory(prefix="bank-interop-") as stub_dir:
            pb2, pb2_grpc = load_stubs(stub_dir)
        bank = Bank(pb2, pb2_grpc, args.base_port)
        try:
            targets = sorted(set(branch_ids) | {c["id"] for c in customers})
            bank.wait_ready(targets)
            output = run_customers(bank, customers)
            problems = check_errors(bank, targets[0]) if args.check_errors and targets else []
        finally:
            bank.close()
    except ClientError as e:
        print(f"client.py: error: {e}", file=sys.stderr)
        return 1

    json.dump(output, sys.stdout)
    sys.stdout.write("\n")
    sys.stdout.flush()
    if problems:
        for p in problems:
            print(f"client.py: error contract mismatch: {p}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
