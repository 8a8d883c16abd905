"""A request we send, answered once when it is challenged (RFC 3261 §22.2): the trunks' in-dialog
requests (``UserAgent.in_dialog``) and their keep-alives and registrations
(``trunks/upkeep.py``) go through :func:`exchange`; our INVITE's own round, with its stale
nonces, is ``outbound_invite``'s. The digest itself is :mod:`.digest`'s."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from .digest import CHALLENGES, DigestError, choose
from .message import Request, Response


async def exchange(
    ask: Callable[[Request], Awaitable[Response]],
    build: Callable[[tuple[str, str] | None], Request],
    *,
    credentials: tuple[str, str] | None = None,
) -> tuple[Response, str]:
    """The final response to the request ``build`` makes (given the authorization header to
    carry, ``None`` at first), as ``ask`` sends and follows it (``transaction.ask``: ``408``
    when none comes; sending may raise). A ``401`` or ``407`` is answered once with
    ``credentials`` (username, password; RFC 3261 §22.2): ``build`` makes the request again,
    its CSeq one up, with the header answering the best challenge (SHA-256 before MD5,
    RFC 8760), the digest ``uri`` its Request-URI (§22.4). With the response, why it is a
    challenge we did not get past (``""`` when it is not): a second challenge, none we can
    answer, or no password."""
    authorization: tuple[str, str] | None = None
    while True:
        req = build(authorization)
        resp = await ask(req)
        if resp.status not in CHALLENGES:
            return resp, ""
        if authorization is not None:
            return resp, f"{resp.status} again after our digest answer: credentials refused"
        if credentials is None or not credentials[1]:
            return resp, f"{resp.status}, and no password to answer it with"
        challenge, answer = CHALLENGES[resp.status]
        try:
            chosen = choose(resp.all(challenge))
        except DigestError as exc:
            return resp, f"{resp.status} with no challenge we can answer: {exc}"
        authorization = (answer, chosen.answer(req.method, req.uri, *credentials))
