#!/usr/bin/env python3
"""Local SQS for Sluice development: a launcher around moto's ThreadedMotoServer.

Owned by deploy/local (started by deploy/local/stack.sh, usable on its own):

    python3 deploy/local/moto_server.py --port 4566 [--host 127.0.0.1] [--pidfile F]

Before starting it patches two hot spots of moto 5.x's SQS model that make sends
and receives over a backlog of n messages cost O(n^2) (docs/product.md, "Local stack"),
and one race that real SQS does not have:

  (a) SQSBackend.is_message_valid_based_on_retention_period fetched the queue's
      attributes (which counts every message of the queue three times) for each
      message it receives; the patch reads queue.message_retention_period directly.
  (b) Message.visible / Message.delayed built a datetime for every check; the
      patch compares visible_at / delayed_until with time.time() in the same unit
      moto stores them in (milliseconds in 5.x, detected at start-up).
  (c) moto's SQS model is not thread-safe: Queue.delete_message rebuilds the queue's
      message list without a lock, so two concurrent deletes (or a delete and a send
      or receive) lose each other's change: a deleted message comes back a visibility
      timeout later, a sent one vanishes. The patch runs every SQSBackend call that
      reads or changes queues under one process-wide lock (reentrant), and makes
      each queue's long-poll condition use that lock, so a long poll waits without
      holding it.

Semantics are unchanged. Each patch is skipped, with a note on stderr, if the moto
in use does not have the attribute it replaces. --no-patch runs stock moto (for
comparison). Runs until SIGTERM/SIGINT, then stops the server and removes the
pid file. Prints "moto listening on http://HOST:PORT" once the server answers.
"""

import argparse
import logging
import os
import signal
import sys
import threading
import time
import urllib.error
import urllib.request


def log(msg):
    print(f"moto_server: {msg}", file=sys.stderr, flush=True)


def _timestamp_scale(models):
    """How many units of Message.visible_at / delayed_until make one second.

    moto 5.x stores them as unix_time_millis() (scale 1000). Measured on a probe
    message rather than assumed, so a moto that changed units is still right;
    returns None if the probe does not behave as expected (patch is skipped).
    """
    try:
        probe = models.Message("probe", "probe")
        probe.change_visibility(100)
        probe.delay(100)
        now = time.time()
        scales = []
        for value in (probe.visible_at, probe.delayed_until):
            ahead = float(value) / now  # ~1 if seconds, ~1000 if milliseconds
            if 0.9 < ahead < 1.1:
                scales.append(1.0)
            elif 900 < ahead < 1100:
                scales.append(1000.0)
            else:
                return None
        return scales[0] if scales[0] == scales[1] else None
    except Exception as exc:  # noqa: BLE001 - any surprise means "don't patch"
        log(f"timestamp probe failed ({exc!r})")
        return None


def apply_patches():
    """Apply the two performance patches; returns the names of those applied."""
    from moto.sqs import models

    applied = []

    # (a) retention check without get_queue_attributes().
    backend_cls = getattr(models, "SQSBackend", None)
    original = getattr(backend_cls, "is_message_valid_based_on_retention_period", None)
    if original is not None:

        def is_message_valid_based_on_retention_period(self, queue_name, message):
            queue = self.get_queue(queue_name)  # raises QueueDoesNotExist as before
            retention = getattr(queue, "message_retention_period", None)
            if retention is None:
                return original(self, queue_name, message)
            retain_until = int(retention) + message.sent_timestamp / 1000
            return not retain_until <= time.time()

        backend_cls.is_message_valid_based_on_retention_period = (
            is_message_valid_based_on_retention_period
        )
        applied.append("retention")
    else:
        log("SQSBackend.is_message_valid_based_on_retention_period not found; not patched")

    # (b) visibility / delay checks against time.time().
    message_cls = getattr(models, "Message", None)
    has_props = message_cls is not None and all(
        isinstance(message_cls.__dict__.get(name), property)
        for name in ("visible", "delayed")
    )
    scale = _timestamp_scale(models) if has_props else None
    if has_props and scale is not None:
        _time = time.time

        def visible(self):
            return _time() * scale > self.visible_at

        def delayed(self):
            return _time() * scale < self.delayed_until

        message_cls.visible = property(visible)
        message_cls.delayed = property(delayed)
        applied.append("visibility")
    else:
        log("Message.visible / Message.delayed not patchable in this moto; not patched")

    # (c) one lock around the SQS backend's calls.
    if _serialise_backend(models):
        applied.append("serialise")

    return applied


# SQSBackend methods that read or change queues and their messages.
_SERIALISED = (
    "create_queue", "get_queue_url", "list_queues", "get_queue", "delete_queue",
    "get_queue_attributes", "set_queue_attributes", "send_message",
    "send_message_batch", "receive_message", "delete_message", "delete_message_batch",
    "change_message_visibility", "change_message_visibility_batch", "purge_queue",
    "list_dead_letter_source_queues", "tag_queue", "untag_queue", "list_queue_tags",
)


def _serialise_backend(models):
    """Patch (c); returns whether it was applied."""
    backend_cls = getattr(models, "SQSBackend", None)
    queue_cls = getattr(models, "Queue", None)
    init = getattr(queue_cls, "__init__", None)
    # A long poll (receive_message with WaitTimeSeconds) waits in
    # Queue.wait_for_messages on the queue's `_messages_lock` condition; it must wait on
    # the backend lock instead, or it would hold that lock for the whole poll.
    try:
        probe = queue_cls("probe", "us-east-1", "123456789012")
        waits_on_condition = isinstance(
            getattr(probe, "_messages_lock", None), threading.Condition
        ) and callable(getattr(queue_cls, "wait_for_messages", None))
    except Exception as exc:  # noqa: BLE001 - any surprise means "don't patch"
        log(f"queue probe failed ({exc!r})")
        waits_on_condition = False
    if backend_cls is None or init is None or not waits_on_condition:
        log("SQSBackend / Queue._messages_lock not as expected; calls not serialised")
        return False
    missing = [name for name in _SERIALISED if not callable(getattr(backend_cls, name, None))]
    if missing:
        log(f"SQSBackend has no {', '.join(missing)}; those calls not serialised")

    lock = threading.Condition(threading.RLock())

    def queue_init(self, *args, **kwargs):
        init(self, *args, **kwargs)
        self._messages_lock = lock

    queue_cls.__init__ = queue_init

    def serialised(method):
        def call(self, *args, **kwargs):
            with lock:
                return method(self, *args, **kwargs)

        call.__name__ = method.__name__
        call.__doc__ = method.__doc__
        return call

    for name in _SERIALISED:
        method = getattr(backend_cls, name, None)
        if callable(method):
            setattr(backend_cls, name, serialised(method))
    return True


def wait_until_answering(host, port, timeout=30.0):
    url = f"http://{host}:{port}/moto-api/"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return True
        except urllib.error.HTTPError:
            return True  # any HTTP answer means the server is up
        except OSError:
            time.sleep(0.1)
    return False


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--pidfile")
    parser.add_argument("--no-patch", action="store_true",
                        help="run stock moto (for benchmarking the patches)")
    parser.add_argument("--verbose", action="store_true",
                        help="log every request (werkzeug access log)")
    args = parser.parse_args()

    if not args.verbose:
        logging.getLogger("werkzeug").setLevel(logging.WARNING)

    from moto.server import ThreadedMotoServer

    if args.no_patch:
        log("performance patches disabled (--no-patch)")
    else:
        applied = apply_patches()
        log(f"patches applied: {', '.join(applied) or 'none'}")

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())

    server = ThreadedMotoServer(ip_address=args.host, port=args.port, verbose=False)
    # start() blocks forever if binding fails inside moto's thread (port in use):
    # run it in a helper thread and give up after a bound.
    starter = threading.Thread(target=server.start, daemon=True)
    starter.start()
    deadline = time.monotonic() + 30
    while starter.is_alive() and time.monotonic() < deadline:
        starter.join(0.1)
        inner = getattr(server, "_thread", None)
        if inner is not None and not inner.is_alive():
            break  # moto's server thread died (bind failed)
    if starter.is_alive():
        log(f"could not start the server on {args.host}:{args.port} (port in use?)")
        return 1
    if args.pidfile:
        with open(args.pidfile, "w") as f:
            f.write(f"{os.getpid()}\n")
    try:
        if not wait_until_answering(args.host, args.port):
            log(f"server did not answer on {args.host}:{args.port}")
            return 1
        print(f"moto listening on http://{args.host}:{args.port}", flush=True)
        while not stop.wait(3600):
            pass
        log("stopping")
        server.stop()
        return 0
    finally:
        if args.pidfile:
            try:
                with open(args.pidfile) as f:
                    mine = f.read().strip() == str(os.getpid())
                if mine:
                    os.unlink(args.pidfile)
            except OSError:
                pass


if __name__ == "__main__":
    sys.exit(main())
