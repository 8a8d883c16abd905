"""A GStreamer webrtcbin peer, run by Debian's /usr/bin/python3 (python3-gi), for the tests.

Protocol over stdin/stdout, one JSON object per line:

    peer → test   {"offer": "<sdp>"}            once ICE gathering is complete
    test → peer   {"answer": "<sdp>"}
    peer → test   {"state": "<connection state>"}   as webrtcbin's connection state changes
    peer → test   {"done": true, "samples": N}   after --seconds of received audio

It sends an ``audiotestsrc`` sine (``--freq``) as Opus and writes what it receives — decoded,
48 kHz mono s16 — to ``--out``. webrtcbin generates an RSA certificate for DTLS. ICE is
restricted to 127.0.0.1 (libnice's agent gets that one local address).
"""

from __future__ import annotations

import argparse
import json
import sys
import threading

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstWebRTC", "1.0")
gi.require_version("GstSdp", "1.0")
gi.require_version("Nice", "0.1")
from gi.repository import GLib, Gst, GstSdp, GstWebRTC, Nice  # noqa: E402

RATE = 48_000


def emit(obj: dict) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--freq", type=float, default=440.0)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()

    Gst.init(None)
    loop = GLib.MainLoop()
    pipe = Gst.parse_launch(
        f"audiotestsrc is-live=true wave=sine freq={args.freq} volume=0.4 "
        "! audioconvert ! audioresample ! audio/x-raw,rate=48000,channels=1 "
        "! opusenc frame-size=20 ! rtpopuspay pt=111 "
        "! application/x-rtp,media=audio,encoding-name=OPUS,payload=111,clock-rate=48000 "
        # A second of jitter buffer (webrtcbin's default is 200 ms): on a loaded host this
        # process and the bridge's stall, and what a stall held back arrives too late for a
        # short buffer, which drops it. The test is of DTLS and media, not of this peer's
        # playout.
        "! webrtcbin name=w bundle-policy=max-bundle latency=1000"
    )
    webrtc = pipe.get_by_name("w")
    # Keep the wrapper alive as long as the pipeline: webrtcbin never sinks its (floating) ICE
    # object, so PyGObject's reference is the one that keeps it; dropping it frees the agent.
    ice = webrtc.get_property("ice-agent")
    agent = ice.get_property("agent")
    address = Nice.Address()
    address.set_from_string("127.0.0.1")
    agent.add_local_address(address)

    received = bytearray()
    target = args.seconds * RATE * 2
    done = threading.Event()

    def on_sample(sink: Gst.Element) -> Gst.FlowReturn:
        sample = sink.emit("pull-sample")
        buf = sample.get_buffer()
        ok, info = buf.map(Gst.MapFlags.READ)
        if ok:
            received.extend(info.data)
            buf.unmap(info)
        if len(received) >= target and not done.is_set():
            done.set()
            GLib.idle_add(finish)
        return Gst.FlowReturn.OK

    def finish() -> bool:
        with open(args.out, "wb") as f:
            f.write(bytes(received))
        emit({"done": True, "samples": len(received) // 2})
        loop.quit()
        return False

    def on_pad_added(_: Gst.Element, pad: Gst.Pad) -> None:
        if pad.direction != Gst.PadDirection.SRC:
            return
        bin_ = Gst.parse_bin_from_description(
            "rtpopusdepay ! opusdec plc=true ! audioconvert ! audioresample "
            "! audio/x-raw,format=S16LE,rate=48000,channels=1 "
            "! appsink name=sink emit-signals=true sync=false",
            True,
        )
        pipe.add(bin_)
        bin_.sync_state_with_parent()
        bin_.get_by_name("sink").connect("new-sample", on_sample)
        pad.link(bin_.get_static_pad("sink"))

    def on_offer_created(promise: Gst.Promise, _: object) -> None:
        reply = promise.get_reply()
        offer = reply.get_value("offer")
        webrtc.emit("set-local-description", offer, Gst.Promise.new())

    def on_negotiation_needed(_: Gst.Element) -> None:
        webrtc.emit("create-offer", None, Gst.Promise.new_with_change_func(on_offer_created, None))

    def on_gathering(_: Gst.Element, __: object) -> None:
        if webrtc.get_property("ice-gathering-state") == GstWebRTC.WebRTCICEGatheringState.COMPLETE:
            GLib.idle_add(send_offer)

    sent = []

    def send_offer() -> bool:
        if not sent:
            sent.append(True)
            emit({"offer": webrtc.get_property("local-description").sdp.as_text()})
            threading.Thread(target=read_answer, daemon=True).start()
        return False

    def read_answer() -> None:
        line = sys.stdin.readline()
        if not line:
            GLib.idle_add(loop.quit)
            return
        sdp = json.loads(line)["answer"]
        GLib.idle_add(apply_answer, sdp)

    def apply_answer(sdp: str) -> bool:
        _, msg = GstSdp.SDPMessage.new_from_text(sdp)
        answer = GstWebRTC.WebRTCSessionDescription.new(GstWebRTC.WebRTCSDPType.ANSWER, msg)
        webrtc.emit("set-remote-description", answer, Gst.Promise.new())
        return False

    def on_state(_: Gst.Element, __: object) -> None:
        state = webrtc.get_property("connection-state")
        emit({"state": state.value_nick})

    def on_message(_: Gst.Bus, message: Gst.Message) -> None:
        if message.type == Gst.MessageType.ERROR:
            err, dbg = message.parse_error()
            emit({"error": f"{err.message} ({dbg})"})
            loop.quit()

    webrtc.connect("on-negotiation-needed", on_negotiation_needed)
    webrtc.connect("notify::ice-gathering-state", on_gathering)
    webrtc.connect("notify::connection-state", on_state)
    webrtc.connect("pad-added", on_pad_added)
    bus = pipe.get_bus()
    bus.add_signal_watch()
    bus.connect("message", on_message)
    pipe.set_state(Gst.State.PLAYING)
    GLib.timeout_add_seconds(60, loop.quit)  # never outlive a broken test
    try:
        loop.run()
    finally:
        pipe.set_state(Gst.State.NULL)
        del ice
    return 0 if done.is_set() else 1


if __name__ == "__main__":
    sys.exit(main())
