"""The agent: wiring and lifecycle.

start: load the model (errors exit 2 before touching the network) -> open the
spool -> connect (the Last Will is ``offline``) -> on every (re)connect publish
``online`` + status and run the on-connect hooks -> feed the source through the
pipeline, every result spooled before it is published -> on SIGTERM/SIGINT or
the end of a --once run: flush (bounded), publish ``offline``, exit 0.

An input goes through three threads: ``edge-prefetch`` reads and preprocesses
it, the main thread invokes the interpreter, ``edge-finish`` postprocesses,
spools and records it as done. Each stage is FIFO, so order is kept; the main
thread does little besides invoke(), which releases the GIL.

Extension points for other features: ``Agent.commands`` (action -> handler),
``Agent.on_connect_hooks`` (called with the agent after each connect) and
``Agent.status_extras`` (functions adding keys to the status message).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import queue
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import edge
from edge.agent import discovery, system
from edge.agent.commands import CommandWorker, default_registry
from edge.agent.finisher import Finisher
from edge.agent.metrics import LatencyWindow, health, predicted_labels
from edge.agent.sources import Item, Source, open_source
from edge.contract import messages
from edge.errors import EdgeError
from edge.inference.pipeline import Invoked, Pipeline, Prepared, Settings
from edge.inference.preprocess import Normalization
from edge.model.labels import read_labels
from edge.model.runtime import LoadedModel, default_threads, load_model
from edge.ota.agent import AgentSecurity
from edge.ota.manifest import MAX_HEADER
from edge.transport.topics import Topics

if TYPE_CHECKING:  # the agent runs on a ConfigView of these values; pydantic stays out (config_view)
    from edge.agent.config import AgentConfig
    from edge.agent.config_view import ConfigView

log = logging.getLogger("edge.agent")

Hook = Callable[["Agent"], None]
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

    def __init__(self, cfg: AgentConfig | ConfigView, *, delegates: Any = None) -> None:
        self.cfg = cfg
        self.device = cfg.mqtt.device_id or system.hostname()
        self.topics = Topics(cfg.mqtt.prefix, self.device)
        self.commands = default_registry()
        self.on_connect_hooks: list[Hook] = []
        self.on_status_hooks: list[Hook] = []  # after each status message (connect, model reload)
        self.status_extras: list[Callable[[Agent], dict[str, Any]]] = []
        self.stop_event = threading.Event()
        self.window = LatencyWindow(cfg.metrics.window_s)
        self.delegates = delegates  # the delegate seam of edge.model.runtime.load_model (tests)
        self.state_dir = cfg.resolved_state_dir()
        self.started_at = messages.utc_iso()
        self.started_mono = time.monotonic()
        self.last_seq: int | None = None
        self.predictions = 0
        self.first_prediction_s: float | None = None
        pp = cfg.postprocess
        self.settings = Settings(
            pp.top_k,
            pp.threshold,
            pp.max_output_values,
            iou=pp.iou,
            max_detections=pp.max_detections,
            mask=pp.publish_mask,
            full_embedding=pp.full_embedding,
        )
        # Undoes an interrupted model update and picks the installed model, before anything loads.
        self.security = AgentSecurity(self)
        self.pipeline: Pipeline = self._initial_pipeline()
        self.client: Any = None
        self.spool: Any = None
        self.outbox: Any = None
        self.source: Source | None = None
        self._worker: CommandWorker | None = None
        self._finisher: Finisher[Job] | None = None
        discovery.install(self)

    # --- model -------------------------------------------------------------------------------------------
    def load_model(self) -> LoadedModel:
        m = self.cfg.model
        path, _labels = self.security.model_path()  # an installed update, else the configured model
        if path is None:
            raise EdgeError(
                "no model given", "pass --model path/to/model.tflite (or [model] path in the config)"
            )
        return load_model(
            path,
            runtime=m.runtime,
            threads=m.threads or default_threads(),  # all usable cores (see default_threads)
            delegate=m.delegate,
            delegates=self.delegates,
            max_bytes=m.max_bytes,
        )

    def _initial_pipeline(self) -> Pipeline:
        # An installed update that stopped loading (new runtime, disk error) must not brick the device.
        while True:
            try:
                return self._build_pipeline(self.load_model())
            except EdgeError as exc:
                if not self.security.fall_back(exc):
                    raise

    def _build_pipeline(self, model: LoadedModel) -> Pipeline:
        p = self.cfg.preprocess
        labels = read_labels(self.security.model_path()[1])
        pipe = Pipeline(
            model,
            labels,
            Normalization(p.mean, p.std, p.resample),
            self.settings,
            p.max_image_pixels,
            task=self.cfg.model.task,
            resize=p.resize,
        )
        for note in model.notes:
            log.warning("%s", note)
        log.info("task %s (%s), resize %s", pipe.kind, pipe.choice.reason, pipe.resize)
        log.info(
            "model %s (sha256 %s..., %s) on %s %s, delegate %s, %d bytes, init %.1f ms",
            model.path,
            model.sha256[:12],
            pipe.kind,
            model.runtime.name,
            model.runtime.version,
            model.delegate,
            model.size_bytes,
            model.init_ms,
        )
        return pipe

    def reload_model(self) -> LoadedModel:
        model = self.load_model()
        pipe = self._build_pipeline(model)
        with self.pipeline.lock:
            self.pipeline = pipe
        self.publish_status()
        return model

    def apply_settings(self, values: dict[str, Any]) -> dict[str, Any]:
        # A new object, swapped in: postprocessing on the finisher thread reads settings without the
        # interpreter's lock and must never see top_k from one command and threshold from another.
        with self.pipeline.lock:
            self.settings = dataclasses.replace(self.settings, **values)
            self.pipeline.settings = self.settings
        log.info("settings changed: %s", values)
        return self._settings_view()

    def _settings_view(self) -> dict[str, Any]:
        s = self.settings
        return {"top_k": s.top_k, "threshold": s.threshold, "iou": s.iou, "max_detections": s.max_detections}

    # --- messages ----------------------------------------------------------------------------------------
    def status_payload(self) -> dict[str, Any]:
        m = self.pipeline.model
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
            threads=self.pipeline.model.threads,  # what runs (the default when none was configured)
            source=self.source.description if self.source else str(self.cfg.source.spec),
            kind=self.pipeline.kind,
            **self.pipeline.describe(),
        )
        body["settings"] = self._settings_view()
        body["max_request_bytes"] = self.cfg.source.max_request_bytes
        for extra in self.status_extras:
            body.update(extra(self))
        return body

    def publish_status(self) -> None:
        if self.client is not None:
            self.client.publish(self.topics.status, _json(self.status_payload()), 1, True, None)
            for hook in list(self.on_status_hooks):
                try:
                    hook(self)
                except Exception:
                    log.exception("on-status hook %r failed", hook)

    def publish_bench(self, report: Any) -> None:
        if self.outbox is not None:
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
        for hook in list(self.on_connect_hooks):
            try:
                hook(self)
            except Exception:
                log.exception("on-connect hook %r failed", hook)

    # --- one input ---------------------------------------------------------------------------------------
    def prepare(self, item: Item) -> Prepared | EdgeError | Exception:
        """Decode + preprocess; errors are returned, to be reported in input order by _finish()."""
        try:
            return self.pipeline.prepare(item.data, item.name)
        except Exception as exc:
            return exc

    def _invoke(self, item: Item, prepared: Prepared | Exception) -> Job:
        pipe = self.pipeline
        if isinstance(prepared, Prepared) and prepared.model is not pipe.model:
            prepared = self.prepare(item)  # prepared ahead for a model since reloaded: redo, lose nothing
        if isinstance(prepared, Exception):
            return item, pipe, prepared
        try:
            return item, pipe, pipe.invoke(prepared)
        except Exception as exc:  # reported in order by _finish
            return item, pipe, exc

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
    def _connect(self) -> None:
        from edge.transport.client import MqttClient, Will
        from edge.transport.outbox import Outbox
        from edge.transport.spool import Spool
        from edge.transport.url import parse_broker_url

        mq = self.cfg.mqtt
        url = self.security.credentials(parse_broker_url(mq.broker))
        self.state_dir.mkdir(parents=True, exist_ok=True)
        spool_path = self.cfg.spool.path or self.state_dir / "spool.db"
        self.spool = Spool(
            Path(spool_path), max_bytes=self.cfg.spool.max_bytes, max_age_s=self.cfg.spool.max_age_s
        )
        self.client = MqttClient(
            url,
            mq.client_id or f"edge-agent-{self.device}",
            will=Will(self.topics.availability, messages.OFFLINE.encode(), qos=1, retain=True),
            tls=self.tls_options(url),
            keepalive=mq.keepalive_s,
            backoff_min=mq.backoff_min_s,
            backoff_max=mq.backoff_max_s,
            protocol=4 if mq.protocol == 311 else 5,
            max_incoming_bytes=self._max_incoming_bytes(),
        )
        self.client.on_connect(self._on_connect)
        self.outbox = Outbox(self.client, self.spool)
        self._worker = CommandWorker(self, self.commands, self._publish_cmd_result)
        worker = self._worker
        self.client.subscribe(self.topics.cmd, lambda msg: worker.submit(bytes(msg.payload)), 1)
        self.security.attach()
        log.info(
            "device %s, broker %s, spool %s (%d waiting)",
            self.device,
            url.redacted(),
            spool_path,
            self.spool.depth(),
        )

    def _max_incoming_bytes(self) -> int:
        """The largest message worth receiving: a request, or a model update where updates are accepted."""
        largest = self.cfg.source.max_request_bytes
        if self.cfg.ota.enabled and self.cfg.ota.public_keys:
            largest = max(largest, self.cfg.ota.max_bytes + MAX_HEADER + 12)
        return largest + 64 * 1024  # topic, properties and MQTT headers

    def tls_options(self, url: Any) -> Any:
        """TLS settings for the broker connection (None: plain, or whatever the URL scheme implies)."""
        return self.security.tls_options(url)

    def install_signal_handlers(self) -> None:
        def _stop(signum: int, _frame: Any) -> None:
            log.info("%s: stopping", signal.Signals(signum).name)
            self.stop_event.set()

        signal.signal(signal.SIGTERM, _stop)
        signal.signal(signal.SIGINT, _stop)

    def run(self) -> int:
        cfg = self.cfg
        self._connect()
        assert self._worker is not None
        self.source = open_source(
            str(cfg.source.spec),
            state_dir=self.state_dir,
            client=self.client,
            infer_topic=self.topics.infer,
            cfg=cfg.source,
            on_refused=self._publish_error,
            on_stream_event=self._stream_event,
        )
        self._worker.start()
        self.outbox.start()
        self.client.start()
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
        """A live stream lost (an errors message: someone should look) or back (logged by the source)."""
        if kind == "lost" and self.source is not None:
            self._publish_error(
                self.source.description,
                message,
                "check the camera or stream server; the agent keeps retrying and resumes by itself",
            )

    def _prefetched(self) -> Iterator[tuple[Item, Prepared | Exception]]:
        """Read and preprocess the next inputs on a thread while the interpreter runs the current one.

        Decoding and resizing release the GIL for most of their time, as does invoke(): on a
        multi-core board the agent's time per inference approaches the bare invoke time.
        """
        assert self.source is not None
        source = self.source
        if getattr(source, "live", False):
            # A live stream: take the newest frame only when the interpreter is free. Reading ahead
            # would queue frames that are stale by the time they are invoked.
            for item in source.items(self.stop_event, self.cfg.once):
                yield item, self.prepare(item)
            return
        q: queue.Queue[tuple[Item, Prepared | Exception] | BaseException | None] = queue.Queue(maxsize=2)

        def produce() -> None:
            try:
                for item in source.items(self.stop_event, self.cfg.once):
                    q.put((item, self.prepare(item)))
                q.put(None)
            except BaseException as exc:  # e.g. a camera that stopped: re-raised in the main thread
                q.put(exc)

        threading.Thread(target=produce, name="edge-prefetch", daemon=True).start()
        while True:
            try:
                # A timeout, because a blocked main thread would never run the Python SIGTERM handler.
                got = q.get(timeout=0.5)
            except queue.Empty:
                continue
            if got is None:
                return
            if isinstance(got, BaseException):
                raise got
            yield got

    def shutdown(self) -> None:
        self.stop_event.set()
        if self._finisher is not None:
            self._finisher.close()  # what was invoked gets spooled and recorded before the source closes
        if self.source is not None:
            self.source.close()
        if self._worker is not None:
            self._worker.stop()
        self.security.stop()
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
