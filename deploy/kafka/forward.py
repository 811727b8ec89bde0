"""The `kafka-host` compose profile: forwards 127.0.0.1:9092 on the host to Kafka's HOST listener (kafka:9092).

Kafka is not published by default; with `docker compose --profile kafka-host up -d`, clients on this machine
(other teams' consumers, `tweetshop` as the operator) reach localhost:9092, SASL/SCRAM like the services. The
listener advertises localhost:9092, so every connection a client opens comes back through here.
Standard library only. Usage: ``forward.py LISTEN_HOST:PORT TARGET_HOST:PORT``.
"""

from __future__ import annotations

import asyncio
import sys


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        writer.close()


async def main(listen: str, target: str) -> None:
    listen_host, _, listen_port = listen.rpartition(":")
    target_host, _, target_port = target.rpartition(":")

    async def handle(client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        try:
            broker_reader, broker_writer = await asyncio.open_connection(target_host, int(target_port))
        except OSError:
            client_writer.close()
            return
        await asyncio.gather(_pipe(client_reader, broker_writer), _pipe(broker_reader, client_writer))

    server = await asyncio.start_server(handle, listen_host, int(listen_port))
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    asyncio.run(main(sys.argv[1], sys.argv[2]))
