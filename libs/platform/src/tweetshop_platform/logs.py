"""Structured logs: JSON lines with the service name and the correlation id of what is being handled."""

from __future__ import annotations

import logging
import sys

import structlog


def configure_logging(service: str, level: str = "INFO", fmt: str = "json") -> None:
    """Render structlog and stdlib logging as the same JSON (or console) lines on stdout.

    Our own lines (structlog) are rendered and written by structlog itself, with the level filtered
    before anything is built: through the stdlib ``logging`` machinery each line cost several times
    the CPU, and a service writes a few per message it handles. Lines of libraries (uvicorn,
    aiokafka, FastStream) still come through ``logging`` with the same processors and renderer.
    """
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
    ]
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer() if fmt == "json" else structlog.dev.ConsoleRenderer(colors=False)
    )
    numeric_level = logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, renderer],
        logger_factory=structlog.WriteLoggerFactory(file=sys.stdout),
        wrapper_class=structlog.make_filtering_bound_logger(numeric_level),
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            renderer,
        ],
    )
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # aiokafka and uvicorn access logs are noisy at INFO; their warnings still show. So is stripe-python: two INFO
    # lines for every call to Stripe ("Request to Stripe api", "Stripe API response"), formatted and written by the
    # payment worker in the hot path of every order (py-spy during the drop: ~9 % of a payment's CPU in checkout).
    # checkout_stripe_call_seconds, checkout_stripe_errors_total and the gateway's warnings say what each call did.
    for noisy in ("aiokafka", "uvicorn.access", "faststream.access", "stripe"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(service=service)
