"""Run localstripe with its state in a file we choose, or in memory only.

localstripe pickles its whole store to the fixed file /tmp/localstripe.pickle on
every write: slow, and shared by every instance on the machine. This wrapper
replaces that persistence before serving localstripe's own aiohttp app.

    python -m tweetshop_devstack.localstripe_server --port 8420 --state-file .run/localstripe.pickle
    python -m tweetshop_devstack.localstripe_server --port 0 --no-persist
"""

from __future__ import annotations

import argparse
import logging
import os
import pickle
import socket
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def patch_store_persistence(state_file: Path | None) -> None:
    """Make localstripe's Store load from and save to ``state_file``, or do neither when it is None."""
    from localstripe import resources

    def dump_to_disk(store: Any) -> None:
        if state_file is None:
            return
        # Write then rename: a run killed mid-write must not leave a truncated pickle behind.
        fd, tmp_name = tempfile.mkstemp(dir=state_file.parent, prefix=f".{state_file.name}.")
        try:
            with os.fdopen(fd, "wb") as f:
                pickle.dump(dict(store), f, protocol=pickle.HIGHEST_PROTOCOL)
            os.replace(tmp_name, state_file)
        except BaseException:
            Path(tmp_name).unlink(missing_ok=True)
            raise

    def try_load_from_disk(store: Any) -> None:
        if state_file is None:
            return
        try:
            with state_file.open("rb") as f:
                saved = pickle.load(f)  # our own file, written by dump_to_disk above
        except FileNotFoundError:
            return
        dict.clear(store)
        dict.update(store, saved)

    resources.Store.dump_to_disk = dump_to_disk
    resources.Store.try_load_from_disk = try_load_from_disk


def patch_declined_charges() -> None:
    """Decline charges of the test cards real Stripe declines on charge.

    localstripe declines ``pm_card_visa_chargeDeclined`` (4000000000000002) and the
    other decline test cards only when they are attached to a customer; real Stripe
    declines them when they are charged, which is what checkout relies on.
    """
    from localstripe import resources

    original = resources.PaymentMethod._charging_is_declined

    def charging_is_declined(self: Any) -> bool:
        return bool(original(self) or self._attaching_is_declined())

    resources.PaymentMethod._charging_is_declined = charging_is_declined


def _listening_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if family == socket.AF_INET6 and host == "::":
        # "::" serves IPv4 too, as localstripe's own start() does.
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    sock.bind((host, port))
    return sock


def main(argv: Sequence[str] | None = None) -> None:
    """Parse arguments, patch persistence, serve localstripe until SIGINT or SIGTERM."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=8420)
    parser.add_argument("--host", default="127.0.0.1", help="address to bind; '::' for every address")
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--state-file", type=Path, help="keep the store in this file (loaded at start)")
    where.add_argument("--no-persist", action="store_true", help="keep the store in memory only")
    args = parser.parse_args(argv)

    state_file: Path | None = None if args.no_persist else args.state_file.resolve()
    if state_file is not None:
        state_file.parent.mkdir(parents=True, exist_ok=True)
    patch_store_persistence(state_file)
    patch_declined_charges()

    from aiohttp import web
    from localstripe import server
    from localstripe.resources import store

    store.try_load_from_disk()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    access_log = logging.getLogger("aiohttp.access")
    sock = _listening_socket(args.host, args.port)
    print(f"localstripe on {args.host}:{sock.getsockname()[1]}, state: {state_file or 'memory only'}", flush=True)
    # run_app turns SIGINT and SIGTERM into a graceful exit.
    web.run_app(server.app, sock=sock, access_log=access_log, print=None)


if __name__ == "__main__":
    main()
