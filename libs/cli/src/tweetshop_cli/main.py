"""`tweetshop`: consumer lag, live events, dead letters, read-model rebuilds and order traces.

Exit codes: 0 done; 1 the command could not do what was asked (the message says why);
2 the broker or the database cannot be reached, a setting is invalid, or the command
line is wrong; 130 interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence
from typing import Any

import asyncpg
import structlog
from aiokafka.errors import KafkaError
from pydantic import SecretStr, ValidationError

from . import dlq, lag, replay, tail, trace
from .connect import EXIT_FAILED, EXIT_UNREACHABLE, CommandError, Unreachable, confirm_operator
from .settings import CliSettings

EXIT_INTERRUPTED = 130

EPILOG = """settings (environment, as the services read them; options above override them):
  TWEETSHOP_KAFKA_BOOTSTRAP_SERVERS  the broker (default localhost:9092)
  TWEETSHOP_DATABASE_URL             the database, for `replay` (default postgresql://postgres@localhost:5432/tweetshop)
  TWEETSHOP_TOPIC_NAMESPACE          topic and group prefix (empty in production)
  TWEETSHOP_CONNECT_TIMEOUT_S        give up on an unreachable broker or database (default 5)
  TWEETSHOP_OPERATOR_KEY             the operator key: `dlq replay`, `dlq dismiss` and `replay` need it
  TWEETSHOP_OPERATOR_CHECK_URL       a running service that confirms it (default http://localhost:8003)

exit codes: 0 done, 1 could not do it, 2 broker/database unreachable or bad usage, 130 interrupted.
runbook: docs/runbook.md"""


def build_parser() -> argparse.ArgumentParser:
    """The command line."""
    parser = argparse.ArgumentParser(
        prog="tweetshop",
        description="Operate tweetshop's topics: consumer lag, live events, dead letters, read models, order traces.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--bootstrap-servers", metavar="HOST:PORT", help="the Kafka broker")
    parser.add_argument("--database-url", metavar="DSN", help="the Postgres database (for `replay`)")
    parser.add_argument("--namespace", metavar="PREFIX", help="topic and group prefix (tests use one)")
    parser.add_argument("--timeout", type=float, metavar="SECONDS", help="connection timeout")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress lines on stderr")
    parser.add_argument("-v", "--verbose", action="store_true", help="show the Kafka client's own log")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = commands.add_parser("lag", help="consumer lag of our groups, per topic and partition")
    p.add_argument("--group", metavar="TEXT", help="only groups whose name contains TEXT")
    p.add_argument("--all", action="store_true", help="also every other group the broker lists (other teams')")
    p.add_argument("--json", action="store_true", help="one JSON object per partition")

    p = commands.add_parser("tail", help="decoded, validated events of a topic as they arrive")
    p.add_argument("topic", metavar="TOPIC", help="e.g. checkout.orders.v1 or checkout.orders.v1.dlq")
    p.add_argument("--from-beginning", action="store_true", help="start with the oldest message")
    p.add_argument("--limit", type=int, metavar="N", help="stop after N messages")
    p.add_argument("--idle-timeout", type=float, metavar="SECONDS", help="stop after SECONDS without a message")
    p.add_argument("--json", action="store_true", help="one JSON object per message")

    p = commands.add_parser("dlq", help="dead letters: list, show, replay, dismiss")
    dlq_commands = p.add_subparsers(dest="dlq_command", required=True, metavar="ACTION")
    d = dlq_commands.add_parser("list", help="every DLQ with its pending count, or one DLQ's messages")
    d.add_argument("topic", nargs="?", metavar="TOPIC", help="the original topic or its .dlq")
    d.add_argument("--all", action="store_true", help="also the messages already replayed or dismissed")
    d.add_argument("--json", action="store_true")
    d = dlq_commands.add_parser("show", help="error, headers and event of the pending messages")
    d.add_argument("topic", metavar="TOPIC")
    d.add_argument("--at", metavar="PARTITION@OFFSET", help="only this message (as `dlq list` shows it)")
    d.add_argument("--all", action="store_true", help="also the messages already replayed or dismissed")
    d.add_argument("--json", action="store_true")
    d = dlq_commands.add_parser("replay", help="send pending messages back to their topic after a fix")
    d.add_argument("topic", metavar="TOPIC")
    d.add_argument("--event-id", metavar="UUID", help="only this event (pending or not); the cursor stays")
    d.add_argument("--dry-run", action="store_true", help="say what would be replayed, send nothing")
    d.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    d = dlq_commands.add_parser("dismiss", help="mark the pending messages as dealt with, without replaying")
    d.add_argument("topic", metavar="TOPIC")
    d.add_argument("--yes", action="store_true", help="do not ask for confirmation")

    p = commands.add_parser(
        "replay",
        help="rebuild a read model from its topic",
        description="Rebuild a read model from its topic, in one transaction (see docs/runbook.md).\n\nread models:\n"
        + replay.describe_models(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("read_model", metavar="READ_MODEL", help="e.g. feed.products")
    p.add_argument("--dry-run", action="store_true", help="say what would be rebuilt, change nothing")
    p.add_argument("--yes", action="store_true", help="do not ask for confirmation")

    p = commands.add_parser("trace", help="every event of one order across topics, in order")
    p.add_argument("order_id", metavar="ORDER_ID")
    p.add_argument("--no-locations", action="store_true", help="skip courier points (tracking.locations.v1)")
    p.add_argument("--json", action="store_true", help="one JSON object per event")
    return parser


def load_settings(args: argparse.Namespace) -> CliSettings:
    """Settings from the environment, with the command-line options on top."""
    settings = CliSettings()
    changes: dict[str, Any] = {}
    if args.bootstrap_servers:
        changes["kafka_bootstrap_servers"] = args.bootstrap_servers
    if args.database_url:
        changes["database_url"] = SecretStr(args.database_url)
    if args.namespace is not None:
        changes["topic_namespace"] = args.namespace
    if args.timeout is not None:
        changes["connect_timeout_s"] = args.timeout
    # Validated like the environment: a bad option fails here, not deep in a command.
    return CliSettings.model_validate(settings.model_dump() | changes) if changes else settings


async def dispatch(args: argparse.Namespace, settings: CliSettings) -> int:
    """Run the chosen command."""
    quiet: bool = args.quiet
    match args.command:
        case "lag":
            return await lag.run(settings, include_others=args.all, only=args.group, as_json=args.json, quiet=quiet)
        case "tail":
            return await tail.run(
                settings,
                args.topic,
                from_beginning=args.from_beginning,
                limit=args.limit,
                idle_timeout=args.idle_timeout,
                as_json=args.json,
            )
        case "dlq":
            match args.dlq_command:
                case "list" if args.topic is None:
                    return await dlq.summary(settings, as_json=args.json)
                case "list":
                    return await dlq.list_messages(settings, args.topic, everything=args.all, as_json=args.json)
                case "show":
                    return await dlq.show(settings, args.topic, at=args.at, everything=args.all, as_json=args.json)
                case "replay":
                    if not args.dry_run:
                        await confirm_operator(settings, "`tweetshop dlq replay`")
                    return await dlq.replay(
                        settings, args.topic, event_id=args.event_id, dry_run=args.dry_run, yes=args.yes, quiet=quiet
                    )
                case "dismiss":
                    await confirm_operator(settings, "`tweetshop dlq dismiss`")
                    return await dlq.dismiss(settings, args.topic, yes=args.yes)
        case "replay":
            if not args.dry_run:
                await confirm_operator(settings, "`tweetshop replay`")
            return await replay.run(settings, args.read_model, dry_run=args.dry_run, yes=args.yes, quiet=quiet)
        case "trace":
            return await trace.run(
                settings, args.order_id, locations=not args.no_locations, as_json=args.json, quiet=quiet
            )
    raise CommandError(f"unknown command {args.command!r}")


def _quiet_libraries(verbose: bool) -> None:
    # Our own messages name what failed; the clients' retries and tracebacks would bury them.
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, stream=sys.stderr)
    logging.getLogger("aiokafka").setLevel(logging.INFO if verbose else logging.CRITICAL)
    # The services' handlers (run by `replay`) log with structlog: their warnings go to stderr, not stdout.
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO if verbose else logging.WARNING),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
    )


def _fail(message: str, code: int) -> int:
    sys.stderr.write(f"tweetshop: {message}\n")
    sys.stderr.flush()
    return code


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `tweetshop` command; returns the exit code."""
    args = build_parser().parse_args(argv)
    _quiet_libraries(args.verbose)
    try:
        settings = load_settings(args)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        return _fail(f"invalid setting: {problems}", EXIT_UNREACHABLE)
    try:
        return asyncio.run(dispatch(args, settings))
    except Unreachable as exc:
        return _fail(str(exc), EXIT_UNREACHABLE)
    except CommandError as exc:
        return _fail(str(exc), EXIT_FAILED)
    except KafkaError as exc:
        return _fail(f"the broker at {settings.kafka_bootstrap_servers} failed: {exc!r}", EXIT_UNREACHABLE)
    except (OSError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError) as exc:
        return _fail(f"lost the connection: {exc!r}", EXIT_UNREACHABLE)
    except asyncpg.PostgresError as exc:
        return _fail(f"the database refused: {exc}", EXIT_FAILED)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    raise SystemExit(main())
