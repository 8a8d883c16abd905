"""baresip (Debian's ``baresip``) as a phone behind a PBX: SIP over UDP on loopback, G.711
(µ-law or A-law), G.722 or Opus in plain RTP or SDES-SRTP, answering by itself, its voice a
tone from ``ausine``, what it decodes dumped by ``sndfile`` (see :mod:`.baresip` for the
reading)."""

from __future__ import annotations

from pathlib import Path

from .baresip import MODULES, Baresip

RTPMAP = {"opus": "opus/48000/2", "G722": "G722/16000/1"}
"""baresip's names for the codecs whose rate is not 8 kHz (``audio_codecs`` matches a codec by
its sampling rate: G.722's is 16 kHz, though its SDP says ``G722/8000``, RFC 3551 §4.5.2)."""


class BaresipPhone(Baresip):
    """One baresip with the account ``sip:<user>@127.0.0.1`` on UDP, answering at once (or
    when told: ``answermode``)."""

    def __init__(self, conf: Path, user: str, tone_hz: int = 660, codec: str = "PCMU") -> None:
        super().__init__(conf, user, tone_hz)
        self.codec = codec
        self.rtpmap = RTPMAP.get(codec, f"{codec}/8000/1")

    async def start_phone(
        self,
        *,
        srtp: bool = False,
        registrar: str = "",
        password: str = "",
        regint: int = 60,
        rtcp_mux: bool = False,
        answermode: str = "auto",
    ) -> None:
        """``registrar`` (``host:port``): register there as ``user`` with ``password``. Its SIP
        port and the next (the TLS listener baresip opens beside UDP and TCP) are both free.
        ``answermode`` ``manual``: it rings until told to ``accept`` (:meth:`command`)."""

        def write_config() -> None:
            self._write_phone_config(srtp, registrar, password, regint, rtcp_mux, answermode)

        await self._launch(write_config)

    def _write_phone_config(
        self,
        srtp: bool,
        registrar: str,
        password: str,
        regint: int,
        rtcp_mux: bool,
        answermode: str,
    ) -> None:
        conf = self.conf
        (conf / "config").write_text(
            f"sip_listen 127.0.0.1:{self.port}\n"
            "net_interface 127.0.0.1\n"
            f"module_path {MODULES}\n"
            "module g711.so\nmodule g722.so\nmodule opus.so\nmodule srtp.so\n"
            "module ausine.so\nmodule aufile.so\n"
            f"module sndfile.so\nsnd_path {conf}\n"
            "module_app account.so\nmodule_app menu.so\nmodule_app ctrl_tcp.so\n"
            f"ctrl_tcp_listen 127.0.0.1:{self.ctrl_port}\n"
            f"audio_source ausine,{self.tone_hz}\n"
            "audio_alert aufile,/dev/null\n"
            "ausrc_srate 48000\nausrc_channels 2\nauplay_srate 48000\n"  # ausine: 48 kHz stereo
            f"rtcp_mux {'yes' if rtcp_mux else 'no'}\n"  # RTCP on the RTP port (RFC 5761)
        )
        enc = ";mediaenc=srtp-mand" if srtp else ""
        account = f"<sip:{self.user}@127.0.0.1>;regint=0"
        if registrar:
            account = f"<sip:{self.user}@{registrar}>;auth_pass={password};regint={regint}"
        (conf / "accounts").write_text(
            f"{account};answermode={answermode}{enc};audio_codecs={self.rtpmap}\n"
        )
