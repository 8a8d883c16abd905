"""Past one process: the shared call directory (who owns which call, the workers, the event
log) and the supervisor of worker processes. The HTTP side of routing lives in
``api/routing.py``."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from ..calls import Call
from ..config import ClusterSettings
from .directory import CallRecord, Directory, MemoryDirectory, WorkerInfo
from .event_ring import LogEntry


def internal_url_for(cluster: ClusterSettings, public_port: int, worker_index: int) -> str:
    """Where worker ``worker_index`` listens for requests from other instances."""
    base = cluster.internal_url or f"http://127.0.0.1:{public_port + 1}"
    host, _, port = base.removeprefix("http://").rpartition(":")
    return f"http://{host}:{int(port) + worker_index}"


def create_directory(
    cluster: ClusterSettings,
    *,
    worker_id: str,
    internal_url: str,
    ended_ttl: float,
    max_calls: int,
    local_calls: Callable[[], list[Call]],
    end_lost_call: Callable[[Call, dict[str, Any] | None], Awaitable[None]],
    end_local_calls: Callable[[], Awaitable[None]],
) -> Directory:
    if not cluster.shared:
        return MemoryDirectory(worker_id, internal_url, cluster.event_backlog, local_calls)
    from .redis import RedisDirectory  # redis is imported only when it is used

    return RedisDirectory(
        cluster.directory,
        worker_id=worker_id,
        internal_url=internal_url,
        heartbeat_ttl=cluster.heartbeat_ttl,
        ended_ttl=ended_ttl,
        backlog=cluster.event_backlog,
        max_calls=max_calls,
        local_calls=local_calls,
        end_lost_call=end_lost_call,
        end_local_calls=end_local_calls,
    )


__all__ = [
    "CallRecord",
    "Directory",
    "LogEntry",
    "MemoryDirectory",
    "WorkerInfo",
    "create_directory",
    "internal_url_for",
]
