"""The agent: wiring and lifecycle.

:class:`Agent` builds every part, in one direction, and hands each its slice of the config
and the collaborators it needs (Frigate's ``FrigateApp`` style); no part holds the agent:

  config -> model store -> model slot (the model loads here: errors exit 2 before the network)
  -> transport (client, spool, outbox) -> audit log -> command registry (+ built-in handlers)
  -> OTA service -> Home Assistant discovery -> (run) source -> finisher.

start: the above -> connect (the Last Will is ``offline``) -> on every (re)connect publish
``online`` + status -> feed the source through the pipeline, every result spooled before it is
published -> on SIGTERM/SIGINT or the end of a --once run: flush (bounded), publish ``offline``,
exit 0.

An input goes through three threads: ``edge-prefetch`` reads and preprocesses
it, the main thread invokes the interpreter, ``edge-finish`` postprocesses,
spools and records it as done. Each stage is FIFO, so order is kept; the main
thread does little besides invoke(), which releases the GIL.

Extension points are lists the app fills while it builds the parts: ``status_extras``
(functions returning keys for the status message) and ``after_status`` (called after every
status message: each connect and each model change).
"""

from __future__ import annotations

import json
import logging
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import edge
from edge.agent import system
from edge.agent.audit import AuditLog
from edge.agent.commands import CommandRegistry, CommandWorker, builtin_handlers
from edge.agent.discovery import Discovery
from edge.agent.finisher import Finisher
from edge.agent.metrics import LatencyWindow, health, predicted_labels
from edge.agent.prefetch import DECODED_BYTES_PER_PIXEL, ByteBudget, decode_workers, prefetched
from edge.agent.shadow import ShadowRunner
from edge.agent.slot import ModelSlot
from edge.agent.sources import Item, Source, open_source
from edge.agent.thumbnail import Thumbnails
from edge.contract import messages
from edge.errors import EdgeError
from edge.inference.pipeline import Invoked, Pipeline, Prepared, Settings
from edge.ota.install import ModelStore
from edge.ota.service import OtaService, max_message_bytes
from edge.transport.outbox import Outbox
from edge.transport.spool import Spool
from edge.transport.tls import credentials, tls_options
from edge.transport.topics import Topics
from edge.transport.url import BrokerURL, parse_broker_url

if TYPE_CHECKING:
    from edge.agent.config import AgentConfig
    from edge.transport.base import Transport

log = logging.getLogger("edge.agent")

# One input after the main thread is done with it: the outputs (or why there are none), and the
# pipeline that produced them, which a model reload may meanwhile have replaced.
Job = tuple[Item, Pipeline, "Invoked | Exception"]


def _frame(item: Item) -> dict[str, Any] | None:
    """When a live frame was captured and how old it is now (the prediction's ``frame``)."""
    captured = item.meta.get("captured_at")
    if captured is None:
        return None
    return {
        "captured_at": messages.utc_iso(captured),
        "age_ms": round(max(0.0, time.time() - captured) * 1e3, 3),
        "number": item.meta.get("frame", 0),
    }


def _json(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, separators=(",", ":"), allow_nan=False).encode("utf-8")


class Agent:
    version = edge.__version__

    def __init__(self, cfg: AgentConfig, *, client: Transport | None = None, delegates: Any = None) -> None:
        """``client``: the MQTT connection to use instead of one built from ``cfg.mqtt`` and ``cfg.tls``
        (tests pass an :class:`edge.transport.memory.MemoryClient`); ``delegates``: the delegate seam of
        :func:`edge.model.runtime.load_model` (tests)."""
        self.cfg = cfg
        self.device = cfg.mqtt.device_id or system.hostname()
        self.topics = topics = Topics(cfg.mqtt.prefix, self.device)
        self.state_dir = cfg.resolved_state_dir()
        self.stop_event = threading.Event()
        self.window = LatencyWindow(cfg.metrics.window_s)
        self.started_at = messages.utc_iso()
        self.started_mono = time.monotonic()
        self.last_seq: int | None = None
        self.predictions = 0
        self.first_prediction_s: float | None = None
        self.source: Source | None = None
        self._finisher: Finisher[Job] | None = None
        self.status_extras: list[Callable[[], dict[str, Any]]] = []
        self.after_status: list[Callable[[], object]] = []  # each connect and each model change

        # The model: an interrupted update is undone and the model loads before anything else.
        self.store = ModelStore(self.state_dir, cfg.ota.guard)
        pp = cfg.postprocess
        settings = Settings(
            pp.top_k,
            pp.threshold,
            pp.max_output_values,
            iou=pp.iou,
            max_detections=pp.max_detections,
            mask=pp.publish_mask,
            full_embedding=pp.full_embedding,
        )
        self.slot = ModelSlot(
            cfg.model,
            cfg.preprocess,
            settings,
            self.store,
            delegates=delegates,
            on_swap=[self.publish_status],
        )
        self.slot.start()
        self.thumbnails = (
            Thumbnails(
                max_edge=pp.thumbnail_size,
                quality=pp.thumbnail_quality,
                max_bytes=pp.thumbnail_max_bytes,
                rate=pp.thumbnail_rate,
            )
            if pp.publish_thumbnail
            else None
        )

        # The transport: client (not connected yet), spool, outbox.
        self.url: BrokerURL = credentials(cfg.mqtt, parse_broker_url(cfg.mqtt.broker))
        self.client: Transport = client if client is not None else self._mqtt_client(self.url)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.spool_path = Path(cfg.spool.path or self.state_dir / "spool.db")
        self.spool = Spool(self.spool_path, max_bytes=cfg.spool.max_bytes, max_age_s=cfg.spool.max_age_s)
        self.outbox = outbox = Outbox(cast(Any, self.client), self.spool)

        # Commands: audited, disabled actions refused, by the registry itself.
        def publish_audit(entry: dict[str, Any]) -> None:
            outbox.send(topics.audit, entry, qos=1)

        self.audit = AuditLog(cfg.audit, self.state_dir / "audit.jsonl", self.device, publish_audit)
        self.commands = CommandRegistry(audit=self.audit, disabled=cfg.commands.disabled, topic=topics.cmd)
        for action, handler in builtin_handlers(
            slot=self.slot, vitals=self._vitals, device=self.device, publish_bench=self.publish_bench
        ).items():
            self.commands.register(action, handler)
        self.worker = CommandWorker(self.commands, self._publish_cmd_result)

        # Over-the-air model updates; shadow mode runs a candidate beside the model (edge.agent.shadow).
        self.shadow = ShadowRunner(
            self.slot,
            self.device,
            lambda body: self.client.publish(topics.shadow, _json(body), 1, False, None),
            on_change=self.publish_status,
        )
        self.status_extras.append(self.shadow.status)
        self.ota = OtaService(
            cfg.ota,
            slot=self.slot,
            store=self.store,
            send=lambda topic, body: outbox.send(topic, body, qos=1),
            audit=self.audit,
            topics=topics,
            disabled=cfg.commands.disabled,
            on_done=self.publish_status,
            shadow=self.shadow,
        )
        self.status_extras.append(self.ota.status)

        if cfg.homeassistant.enabled:
            discovery = Discovery(
                cfg.homeassistant,
                prefix=cfg.mqtt.prefix,
                device=self.device,
                client=self.client,
                status=self.status_payload,
            )
            self.after_status.append(discovery.publish)

        worker, ota = self.worker, self.ota
        self.client.on_connect(self._on_connect)
        self.client.subscribe(topics.cmd, lambda msg: worker.submit(bytes(msg.payload)), 1)
        self.client.subscribe(topics.model_set, lambda msg: ota.submit(bytes(msg.payload)), 1)

    def _mqtt_client(self, url: BrokerURL) -> Transport:
        from edge.transport.client import MqttClient, Will

        mq = self.cfg.mqtt
        return MqttClient(
            url,
            mq.client_id or f"edge-agent-{self.device}",
            will=Will(self.topics.availability, messages.OFFLINE.encode(), qos=1, retain=True),
            tls=tls_options(self.cfg.tls, url),
            keepalive=mq.keepalive_s,
            backoff_min=mq.backoff_min_s,
            backoff_max=mq.backoff_max_s,
            protocol=4 if mq.protocol == 311 else 5,
            max_incoming_bytes=self._max_incoming_bytes(),
        )

    def _max_incoming_bytes(self) -> int:
        """The largest message worth receiving: a request, or a model update where updates are accepted."""
        largest = self.cfg.source.max_request_bytes
        if self.cfg.ota.enabled and self.cfg.ota.public_keys:
            largest = max(largest, max_message_bytes(self.cfg.ota))
        return int(largest) + 64 * 1024  # topic, properties and MQTT headers

    @property
    def pipeline(self) -> Pipeline:
        """The serving pipeline (the slot's; it may change between two reads)."""
        return self.slot.pipeline

    def _vitals(self) -> dict[str, Any]:
        return {
            "agent_version": self.version,
            "uptime_s": round(time.monotonic() - self.started_mono, 3),
            "seq": self.last_seq,
        }

    # --- messages ----------------------------------------------------------------------------------------
    def status_payload(self) -> dict[str, Any]:
        pipe = self.slot.pipeline  # read once: a swap between two reads would mix two models
        m = pipe.model
        body = messages.status(
            self.device,
            agent_version=self.version,
            started_at=self.started_at,
            model={
                "path": str(m.path),
                "requested_path": str(m.requested_path),
                "sha256": m.sha256,
                "size_bytes": m.size_bytes,
                "inputs": [t.describe() for t in m.inputs],
                "outputs": [t.describe() for t in m.outputs],
            },
            runtime={"name": m.runtime.name, "version": m.runtime.version},
            delegate=m.delegate,
            notes=m.notes,
            arch=system.arch(),
            board=system.board(),
            hostname=system.hostname(),
            python=system.python_version(),
            threads=m.threads,  # what runs (the default when none was configured)
            source=self.source.description if self.source else str(self.cfg.source.spec),
            kind=pipe.kind,
            **pipe.describe(),
        )
        body["settings"] = self.slot.settings_view()
        body["broker"] = self.url.redacted()
        body["commands_disabled"] = list(self.cfg.commands.disabled)
        body["max_request_bytes"] = self.cfg.source.max_request_bytes
        link = getattr(self.source, "link", None)  # live streams: up or lost (and why), reconnects
        if link is not None:
            body["stream"] = link()
        for extra in self.status_extras:
            body.update(extra())
        return body

    def publish_status(self) -> None:
        self.client.publish(self.topics.status, _json(self.status_payload()), 1, True, None)
        for hook in list(self.after_status):
            try:
                hook()
            except Exception:
                log.exception("after-status hook %r failed", hook)

    def publish_bench(self, report: Any) -> None:
        # Flat, like `edge-bench --publish` (docs/bench.md): one report shape on the bench topic.
        body = (
            {**report, **messages.envelope(self.device)}
            if isinstance(report, dict)
            else messages.envelope(self.device, report=report)
        )
        self.outbox.send(self.topics.bench, body, qos=1)

    def _publish_cmd_result(self, cid: Any, action: Any, ok: bool, result: Any, error: str | None) -> None:
        self.outbox.send(
            self.topics.cmd_result,
            messages.cmd_result(self.device, id=cid, action=action, ok=ok, result=result, error=error),
            qos=1,
        )

    def _publish_error(self, source: str, what: str, fix: str) -> bool:
        self.window.add_error()
        try:
            self.outbox.send(
                self.topics.errors, messages.error(self.device, source=source, error=what, fix=fix), qos=1
            )
        except Exception as exc:
            log.error("%s: cannot spool the error report: %s", source, exc)
            return False
        return True

    def _on_connect(self, *args: Any) -> None:
        # Retained state is re-sent on every connect: a broker restarted without persistence forgets it.
        try:
            self.client.publish(self.topics.availability, messages.ONLINE.encode(), 1, True, None)
            self.publish_status()
        except Exception:
            log.exception("cannot publish availability/status")

    # --- one input ---------------------------------------------------------------------------------------
    def prepare(self, item: Item) -> Prepared | EdgeError | Exception:
        """Decode + preprocess; errors are returned, to be reported in input order by _finish()."""
        try:
            return self.slot.pipeline.prepare(item.data, item.name, keep_image=self._thumbnail_due())
        except Exception as exc:
            return exc

    def _thumbnail_due(self) -> bool:
        """Keep this input's picture for a thumbnail (rate-limited, and only while connected)?"""
        thumbs = self.thumbnails
        return thumbs is not None and self.client.connected and thumbs.due()

    def _invoke(self, item: Item, prepared: Prepared | Exception) -> Job:
        pipe = self.slot.pipeline
        if isinstance(prepared, Prepared) and prepared.model is not pipe.model:
            prepared = self.prepare(item)  # prepared ahead for a model since reloaded: redo, lose nothing
        if isinstance(prepared, Exception):
            return item, pipe, prepared
        try:
            invoked = pipe.invoke(prepared)
        except Exception as exc:  # reported in order by _finish
            return item, pipe, exc
        self.shadow.offer(item, prepared, pipe, invoked)  # never blocks: dropped when the candidate is busy
        return item, pipe, invoked

    def _finish(self, job: Job) -> bool:
        """Postprocess, spool, answer; True once the prediction or error report is in the spool."""
        item, pipe, outcome = job
        try:
            if isinstance(outcome, Exception):
                raise outcome
            res = pipe.finish(outcome)
        except EdgeError as exc:
            log.warning("%s: %s (fix: %s)", item.name, exc.what, exc.fix)
            return self._publish_error(item.name, exc.what, exc.fix)
        except Exception as exc:  # a runtime failure on one input must not stop the agent
            log.error("%s: inference failed: %s: %s", item.name, type(exc).__name__, exc, exc_info=exc)
            return self._publish_error(
                item.name,
                f"inference failed: {type(exc).__name__}: {exc}",
                "check the input matches the model; report a bug if it persists",
            )
        self.window.add(res.latency_ms["total"], labels=predicted_labels(res.result_key, res.result))
        payload = messages.prediction(
            self.device,
            seq=0,
            source=item.name,
            model_sha256=pipe.model.sha256,
            latency_ms=res.latency_ms,
            kind=res.kind,
            result_key=res.result_key,
            result=res.result,
            fields=res.fields,
            frame=_frame(item),
        )
        try:
            # The spool numbers the message in the transaction that stores it: a crash cannot burn a seq.
            # A file seen before with this size and mtime (its "done" record was lost) keeps its first seq.
            key = (
                f"{item.name}\0{item.meta['size']}\0{item.meta['mtime_ns']}"
                if "mtime_ns" in item.meta
                else None
            )
            # A full disk: wait here for space (the inputs behind wait too) rather than skip this one.
            seq = self.outbox.send(
                self.topics.predictions,
                payload,
                qos=1,
                seq="predictions",
                key=key,
                retry_full_until=self.stop_event,
            )
        except Exception as exc:  # stopping on a full disk, or a broken spool: the input is not marked done
            log.error("%s: cannot spool the prediction (%s); it is retried after a restart", item.name, exc)
            return False
        payload["seq"] = seq
        self.last_seq = seq
        if res.mask_png is not None and self.client is not None:
            # QoS 0, not spooled: a mask describes the present, like metrics (and is big)
            self.client.publish(self.topics.mask, res.mask_png, 0, False, None)
        picture = outcome.image if isinstance(outcome, Invoked) else None
        if picture is not None and self.thumbnails is not None and seq is not None:
            # QoS 0 like the mask; tagged with this prediction's seq and ts so subscribers pair them
            jpeg = self.thumbnails.render(picture, seq, payload["ts"])
            if jpeg is not None:
                self.client.publish(self.topics.thumbnail, jpeg, 0, False, None)
        self.predictions += 1
        if self.first_prediction_s is None:
            self.first_prediction_s = time.monotonic() - self.started_mono
        if item.response_topic:
            try:
                self.client.publish(
                    item.response_topic,
                    _json(payload),
                    1,
                    False,
                    {"CorrelationData": item.correlation_data} if item.correlation_data else None,
                )
            except Exception:
                log.exception("cannot answer on %s", item.response_topic)
        log.debug("%s -> seq %d %s %.2f ms", item.name, seq, res.result_key, res.latency_ms["total"])
        return True

    def _finish_and_record(self, job: Job) -> None:
        if self._finish(job) and self.source is not None:
            self.source.done(job[0])

    # --- metrics -----------------------------------------------------------------------------------------
    def metrics_payload(self) -> dict[str, Any]:
        snap = self.window.snapshot()
        stats = self.outbox.stats()
        stream_stats = getattr(self.source, "stats", None)  # live streams: frames read, dropped, fps
        return messages.metrics(
            self.device,
            **snap,
            **health(),
            spool_depth=stats["spool_depth"],
            # since this start, as docs/mqtt.md promises; the spool's lifetime count beside it
            dropped=stats.get("dropped_spool_since_start", stats["dropped_spool"]) + stats["dropped_qos0"],
            dropped_total=stats["dropped"],
            errors=self.window.errors,
            predictions=self.predictions,
            **({"stream": stream_stats()} if stream_stats is not None else {}),
        )

    def _metrics_loop(self) -> None:
        interval = self.cfg.metrics.interval_s
        while not self.stop_event.wait(interval):
            try:
                if self.client.connected:
                    self.client.publish(self.topics.metrics, _json(self.metrics_payload()), 0, False, None)
            except Exception:
                log.exception("cannot publish metrics")

    # --- lifecycle ---------------------------------------------------------------------------------------
    def install_signal_handlers(self) -> None:
        def _stop(signum: int, _frame: Any) -> None:
            log.info("%s: stopping", signal.Signals(signum).name)
            self.stop_event.set()

        signal.signal(signal.SIGTERM, _stop)
        signal.signal(signal.SIGINT, _stop)

    def run(self) -> int:
        cfg = self.cfg
        log.info(
            "device %s, broker %s, spool %s (%d waiting)",
            self.device,
            self.url.redacted(),
            self.spool_path,
            self.spool.depth(),
        )
        self.source = open_source(
            str(cfg.source.spec),
            state_dir=self.state_dir,
            client=self.client,
            infer_topic=self.topics.infer,
            cfg=cfg.source,
            on_refused=self._publish_error,
            on_stream_event=self._stream_event,
        )
        self.worker.start()
        self.ota.start()
        self.outbox.start()
        self.client.start()
        if cfg.once and self.thumbnails is not None:
            # --once reads its inputs straight away, and a thumbnail (QoS 0) is never kept while offline
            self.client.wait_connected(cfg.flush_timeout_s)
        metrics_thread = None
        if cfg.metrics.interval_s > 0:
            metrics_thread = threading.Thread(target=self._metrics_loop, name="edge-metrics", daemon=True)
            metrics_thread.start()
        finisher = self._finisher = Finisher(self._finish_and_record)
        try:
            for item, prepared in self._prefetched():
                finisher.put(self._invoke(item, prepared))
        finally:
            self.shutdown()
        return 0

    def _stream_event(self, kind: str, message: str) -> None:
        """A live stream lost (an errors message: someone should look) or back; the retained status
        says which, until the next change."""
        if kind == "lost" and self.source is not None:
            self._publish_error(
                self.source.description,
                message,
                "check the camera or stream server; the agent keeps retrying and resumes by itself",
            )
        if self.source is not None:
            self.publish_status()

    def _prefetched(self) -> Iterator[tuple[Item, Prepared | Exception]]:
        """Read and preprocess the next inputs on other threads while the interpreter runs the current
        one (edge.agent.prefetch: a small pool of decode threads)."""
        assert self.source is not None
        source = self.source
        if getattr(source, "live", False):
            # A live stream: take the newest frame only when the interpreter is free. Reading ahead
            # would queue frames that are stale by the time they are invoked.
            for item in source.items(self.stop_event, self.cfg.once):
                yield item, self.prepare(item)
            return
        pipe = self.slot.pipeline  # decoded pictures held at once: one of the largest it accepts
        yield from prefetched(
            source.items(self.stop_event, self.cfg.once),
            self.prepare,
            workers=decode_workers(),
            stop=self.stop_event,
            decoded=ByteBudget(pipe.max_image_pixels * DECODED_BYTES_PER_PIXEL),
            fit=(pipe.layout.width, pipe.layout.height),
        )

    def shutdown(self) -> None:
        self.stop_event.set()
        if self._finisher is not None:
            self._finisher.close()  # what was invoked gets spooled and recorded before the source closes
        if self.source is not None:
            self.source.close()
        if self.worker.thread.ident is not None:  # started (run() may stop before its source opened)
            self.worker.stop()
        self.ota.stop()
        self.shadow.close()
        flushed = self.outbox.flush(self.cfg.flush_timeout_s)
        depth = self.spool.depth()
        if flushed:
            log.info("all messages acknowledged by the broker")
        else:
            log.warning(
                "%d messages stay in the spool (broker unreachable: %s); they are sent at the next start",
                depth,
                self.client.last_error,
            )
        self.client.stop(messages.OFFLINE.encode())
        self.outbox.stop()
        self.spool.close()
        log.info("stopped after %d predictions (last seq %s)", self.predictions, self.last_seq)
