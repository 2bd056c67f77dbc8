"""Messages waiting per broker queue, read through kombu without consuming anything."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from kombu.connection import Connection
from kombu.exceptions import ChannelError

log = logging.getLogger(__name__)


def queue_depths(connection: Connection, queues: Iterable[str]) -> dict[str, int]:
    """Messages ready in each queue (every priority level); a queue never declared counts 0."""
    # RabbitMQ: a passive declare reads the count and never creates a queue. kombu's Redis
    # transport checks existence with an unprefixed EXISTS (wrong under global_keyprefix) and
    # its non-passive declare creates nothing, so there the plain declare is the correct read.
    passive = connection.transport.driver_type == "amqp"
    depths: dict[str, int] = {}
    for queue in queues:
        # A failed passive declare closes its channel on AMQP: one channel per queue.
        with connection.channel() as channel:  # type: ignore[no-untyped-call]
            try:
                depths[queue] = int(channel.queue_declare(queue=queue, passive=passive)[1])
            except ChannelError:
                log.debug("queue %s not declared yet: depth 0", queue)
                depths[queue] = 0
    return depths
