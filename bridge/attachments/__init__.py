"""Bus users besides the browser, each an attachment of a call's runtime: playback, the
recorder, media forks and PCM sockets, with the queued source and the outgoing queue the
socket-based ones share."""

from .assets import AssetStore
from .base import Attachment, AttachmentHost
from .fork_service import ForkService
from .forks import Fork
from .keys import dtmf_observer
from .pcm_socket import PcmSocket
from .playback import Playback, PlaybackService
from .queued_source import QueuedSource
from .recorder import CallRecorder
from .recording import RecordingService

__all__ = [
    "AssetStore",
    "Attachment",
    "AttachmentHost",
    "CallRecorder",
    "Fork",
    "ForkService",
    "PcmSocket",
    "Playback",
    "PlaybackService",
    "QueuedSource",
    "RecordingService",
    "dtmf_observer",
]
