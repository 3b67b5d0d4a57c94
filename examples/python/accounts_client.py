#!/usr/bin/env python3
"""A Python client of the bank's own API, bank.v1.Accounts (proto/bank/v1/bank.proto).

Usage:
    accounts_client.py --branch HOST:PORT [--accounts A B] [--opening N] [--amount N]

Against the branch at HOST:PORT (any branch of a running cluster), it opens account A with
N = --opening (default 100) and account B empty, transfers --amount (default 30) from A to B,
reads both balances with a linearizable read and prints them:

    account 1: balance 70
    account 2: balance 30

Needs grpcio and grpcio-tools (tests/interop/requirements.txt). The Python stubs are made from
proto/bank/v1/bank.proto at run time with grpc_tools.protoc, into a temporary directory, so
nothing generated is kept and the script always speaks the .proto in this repository.

Every write carries a request id {origin, sequence}: origin is random for this run, sequence
counts up. A write that got no answer (UNAVAILABLE, DEADLINE_EXCEEDED: e.g. the cluster is
still electing its leader) is sent again with the same id, which the bank applies at most
once; so retrying is safe. Any other failure, or an outcome other than OK, is reported on
stderr and the exit status is 1.
"""

import argparse
import importlib
import os
import secrets
import sys
import tempfile
import time

import grpc
from grpc_tools import protoc

CALL_DEADLINE_S = 5.0
# How long a write is retried while the cluster does not answer (e.g. it is starting).
RETRY_DEADLINE_S = 30.0
RETRY_PAUSE_S = 0.2
RETRIED_CODES = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)

REPO_ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
PROTO_ROOT = os.path.join(REPO_ROOT, "proto")
PROTO_FILE = os.path.join("bank", "v1", "bank.proto")


class Failure(Exception):
    """Ends the run with exit status 1 and this message on stderr."""


def load_stubs(out_dir):
    """Makes bank_pb2 and bank_pb2_grpc from bank.proto in out_dir and imports them."""
    if not os.path.isfile(os.path.join(PROTO_ROOT, PROTO_FILE)):
        raise Failure(f"no {PROTO_FILE} under {PROTO_ROOT}")
    includes = os.path.join(os.path.dirname(protoc.__file__), "_proto")
    status = protoc.main(
        [
            "grpc_tools.protoc",
            f"-I{PROTO_ROOT}",
            f"-I{includes}",
            f"--python_out={out_dir}",
            f"--grpc_python_out={out_dir}",
            PROTO_FILE,
        ]
    )
    if status != 0:
        raise Failure(f"grpc_tools.protoc failed on {PROTO_FILE} (exit {status})")
    sys.path.insert(0, out_dir)
    try:
        messages = importlib.import_module("bank.v1.bank_pb2")
        services = importlib.import_module("bank.v1.bank_pb2_grpc")
    finally:
        sys.path.remove(out_dir)
    return messages, services


class Accounts:
    """The Accounts service at one branch, with request ids and safe retries."""

    def __init__(self, messages, services, channel):
        self.pb = messages
        self.stub = services.AccountsStub(channel)
        # Random per run and never zero, as bank.proto asks.
        self.origin = secrets.randbits(64) or 1
        self.sequence = 0

    def request_id(self):
        self.sequence += 1
        return self.pb.RequestId(origin=self.origin, sequence=self.sequence)

    def write(self, what, call, request):
        """Sends a write, again with the same request id while no answer comes."""
        give_up = time.monotonic() + RETRY_DEADLINE_S
        while True:
            try:
                reply = call(request, timeout=CALL_DEADLINE_S)
                break
            except grpc.RpcError as e:
                if e.code() not in RETRIED_CODES or time.monotonic() > give_up:
                    raise Failure(f"{what}: {e.code().name}: {e.details()}") from e
                time.sleep(RETRY_PAUSE_S)
        outcome = reply.result.outcome
        if outcome != self.pb.OUTCOME_OK:
            raise Failure(f"{what}: refused: {self.pb.Outcome.Name(outcome)}")
        return reply

    def open(self, account, opening):
        request = self.pb.OpenAccountRequest(
            request_id=self.request_id(), account=account, opening_balance=opening
        )
        return self.write(f"opening account {account}", self.stub.OpenAccount, request)

    def transfer(self, source, target, amount):
        request = self.pb.TransferRequest(
            request_id=self.request_id(),
            from_account=source,
            to_account=target,
            amount=amount,
        )
        what = f"transferring {amount} from account {source} to account {target}"
        return self.write(what, self.stub.Transfer, request)

    def balances(self, accounts):
        request = self.pb.GetBalancesRequest(
            accounts=accounts, read_level=self.pb.READ_LEVEL_LINEARIZABLE
        )
        try:
            reply = self.stub.GetBalances(request, timeout=CALL_DEADLINE_S)
        except grpc.RpcError as e:
            raise Failure(f"reading the balances: {e.code().name}: {e.details()}") from e
        found = {}
        for entry in reply.balances:
            if not entry.HasField("balance"):
                raise Failure(f"reading the balances: account {entry.account} does not exist")
            found[entry.account] = entry.balance
        return found


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--branch", required=True, metavar="HOST:PORT")
    parser.add_argument("--accounts", nargs=2, type=int, default=[1, 2], metavar=("A", "B"))
    parser.add_argument("--opening", type=int, default=100, metavar="N")
    parser.add_argument("--amount", type=int, default=30, metavar="N")
    args = parser.parse_args()
    source, target = args.accounts
    try:
        with tempfile.TemporaryDirectory(prefix="bank-stubs-") as out_dir:
            messages, services = load_stubs(out_dir)
            with grpc.insecure_channel(args.branch) as channel:
                accounts = Accounts(messages, services, channel)
                accounts.open(source, args.opening)
                accounts.open(target, 0)
                accounts.transfer(source, target, args.amount)
                balances = accounts.balances([source, target])
    except Failure as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    for account in (source, target):
        print(f"account {account}: balance {balances[account]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
