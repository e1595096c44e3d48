"""Composition root: builds the store, event hub, readiness tracker, DICOM node and the
analysis pipeline, and runs them headless until SIGTERM/SIGINT.

Nothing else in the project builds these objects, so there is exactly one of each per
process and no module-level state.
"""

from __future__ import annotations

import logging
import os
import signal
import sqlite3
import sys
import threading
import time
from types import FrameType
from typing import Any

from app.core.audit import AuditLog
from app.core.config import Config, ConfigError
from app.core.events import (AssociationEnded, DiskSpaceChanged, Event, EventHub, InstanceStored, NodeStatus,
                             ResultStored, SendStateChanged, SeriesReady)
from app.core.local_worklist import StoreWorklist
from app.core.models import ModelSpecs, default_specs
from app.core.readiness import SeriesReadinessTracker
from app.core.service_api import ModelStatusView
from app.core.outbox.result_outbox import ObjectBuilder, ResultOutbox
from app.core.outbox.worker import OutboxWorker
from app.core.store import LowDiskSpace, StudyStore
from dicom_node.sender import StoreSender
from dicom_node.tls import client_context

log = logging.getLogger(__name__)


class Service:
    """FirstLook's headless core; the desktop UI builds one of these and subscribes to ``hub``."""

    attached_to = ""  # embedded: this process is the service (app.core.service_api.DesktopService)

    def __init__(self, config: Config, hub: EventHub | None = None, specs: ModelSpecs | None = None,
                 object_builder: ObjectBuilder | None = None) -> None:
        """``object_builder`` builds the DICOM objects sent to PACS (default:
        ``app.core.pacs_objects.build_result_objects``)."""
        from app.core.pipeline import Pipeline  # the pipeline pulls in OpenVINO; import it only here
        from dicom_node.scp import StorageSCP

        self.config = config
        if config.log_level.upper() != "DEBUG":
            # pynetdicom logs several INFO lines per C-STORE; the node logs what matters itself.
            logging.getLogger("pynetdicom").setLevel(logging.WARNING)
        self.hub = hub or EventHub()
        self.store = StudyStore(config.data_dir, min_free_bytes=config.min_free_mb << 20)
        self.worklist = StoreWorklist(self.store, self.hub)  # what the desktop's worklist reads and writes
        self.readiness = SeriesReadinessTracker(config.quiet_period_s, self._series_ready)
        self.specs = specs if specs is not None else default_specs()  # the models this service routes to
        if object_builder is None:
            from app.core.pacs_objects import build_result_objects as object_builder
        self.audit = AuditLog(config.data_dir)
        self.outbox = ResultOutbox(self.store, self.specs, lambda: config.destinations, object_builder,
                                   config.uid_root, pack_for=self._loaded_pack, keep_days=config.outbox_keep_days)
        self.outbox_worker = OutboxWorker(
            self.store, config.destinations, StoreSender(config.ae_title, lambda: client_context(config)),
            self.audit, config.ae_title, config.send_retry_s, config.send_retry_max_s,
            on_change=lambda study_uid: self.hub.publish(SendStateChanged(study_uid)))
        from app.core.model_registry import ModelRegistry

        wrapper = None
        if config.inference_backend == "ray":  # models run on a Ray Serve cluster (docs/cluster.md)
            from app.cluster.backend import runtime_wrapper

            wrapper = runtime_wrapper(config)
        models = ModelRegistry(config, specs=self.specs, runtime_wrapper=wrapper)
        self.pipeline = Pipeline(config, self.store, self.hub, specs=self.specs, models=models, outbox=self.outbox)
        self.scp = StorageSCP(config, self.store, self.hub)
        self.hub.subscribe(self._node_event)
        self._node_message = ""
        self.space_check_s = 10.0
        self.release_every_s = 3600.0  # outbox files of objects sent long ago (outbox_keep_days)
        self._space_stop = threading.Event()
        self._started = False

    # -- wiring --------------------------------------------------------------------------
    def _loaded_pack(self, model: str) -> Any:
        """The pack of a loaded model (its hash and precision go into the objects sent to PACS)."""
        from app.core.model_registry import ModelUnavailable

        try:
            return self.pipeline.models.get(model).pack
        except (ModelUnavailable, AttributeError):
            return None

    def _node_event(self, event: Event) -> None:
        """The node's events that drive readiness and the node status. Runs on the publishing
        thread: readiness sees an association's instances before its end, as the node sends them."""
        if isinstance(event, InstanceStored) and event.association is not None:
            self.store.raise_job_priority(event.series_uid, event.priority)  # dispatch order (job_priority)
            self.readiness.instance_arrived(event.study_uid, event.series_uid, event.association)
        elif isinstance(event, AssociationEnded):
            self.readiness.association_ended(event.association, event.released)
        elif isinstance(event, DiskSpaceChanged):
            self._space_changed(event.message if event.refusing else None)
        elif isinstance(event, ResultStored):
            self.outbox_worker.notify()  # its objects (if any) were queued with it

    def _series_ready(self, event: SeriesReady) -> None:
        """Series ready -> persistent job -> event -> pipeline; the job row survives a crash."""
        self.store.mark_series_ready(event.series_uid)
        self.store.enqueue_job(event.series_uid)
        log.info("series %s of study %s ready (%s)", event.series_uid, event.study_uid, event.why)
        self.hub.publish(event)
        self.pipeline.submit(event.series_uid)

    # -- lifecycle -----------------------------------------------------------------------
    def start(self) -> bool:
        """Start pipeline, readiness and node. Returns False (and publishes why) when the
        node cannot listen, e.g. the port is in use; the store and pipeline still run."""
        self._running_marker = self.config.data_dir / "service.running"
        if self._running_marker.exists():
            # The last run did not stop cleanly: index rows committed just before a power cut
            # may be missing while their fsynced files are there. Adopt them.
            log.warning("the last run did not stop cleanly; checking the stored files against the index")
            self.store.adopt_unindexed()
            self.store.reconcile_superseded()
        fd = os.open(self._running_marker, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "w") as marker:
            marker.write(f"{os.getpid()}\n")
        self.outbox.recover()  # before the pipeline: interrupted sends re-queued, uncommitted objects removed
        self.pipeline.start()  # re-queues jobs a crash left running
        self.outbox_worker.start()
        # Readiness lives in memory: series received before a crash whose release or quiet
        # period never came (or that grew after their last analysis) start a quiet period now.
        unready = self.store.series_needing_analysis()
        for study_uid, series_uid in unready:
            self.readiness.instance_arrived(study_uid, series_uid)
        if unready:
            log.warning("%d series received before the last stop were never analysed; queued after the quiet period",
                        len(unready))
        self.readiness.start()
        self._started = True
        try:
            self.scp.start()
        except OSError as exc:
            ports = f"{self.config.port}" if self.config.tls_cert is None else \
                f"{self.config.tls_port}" if self.config.tls_only else f"{self.config.port} or TLS {self.config.tls_port}"
            message = f"cannot listen on {self.config.bind}:{ports}: {exc.strerror or exc}"
            log.error("DICOM node not started: %s", message)
            self.hub.publish(NodeStatus(False, message))
            return False
        host, port = self.scp.address
        tls = self.scp.tls_address
        where = f"{host}:{port}" if tls is None or tls != (host, port) else f"{host}:{port} (TLS only)"
        if tls is not None and tls != (host, port):
            where += f", TLS {tls[1]}"
        self._node_message = f"{self.config.ae_title} on {where}"
        self.hub.publish(NodeStatus(True, self._node_message))
        try:
            self.store.check_space()
        except LowDiskSpace as exc:  # already below the watermark at start: say so now, not at the first refusal
            self.scp.note_space(exc)
        self._space_stop.clear()
        threading.Thread(target=self._watch_space, name="disk-space", daemon=True).start()
        return True

    def _watch_space(self) -> None:
        """Re-check free space every ``space_check_s``: the status says 'refusing' before a sender
        finds out, and stops saying it once space is freed even if nobody sends meanwhile. Hourly
        (and once soon after start) it also releases the outbox files nothing will send again."""
        next_release = 0.0
        while not self._space_stop.wait(self.space_check_s):
            if time.monotonic() >= next_release:
                next_release = time.monotonic() + self.release_every_s
                try:
                    self.outbox.release_settled_files()
                except Exception:  # housekeeping must not end the space watch
                    log.exception("releasing sent outbox files failed; trying again in an hour")
            try:
                self.store.check_space()
                if self.store.free_bytes() < 1 << 20:  # full although no watermark is set (min_free_mb = 0)
                    raise LowDiskSpace("disk full: less than 1 MiB free")
            except LowDiskSpace as exc:
                self.scp.note_space(exc)
            except OSError as exc:  # the data dir itself is gone or unreadable: the stores will say so
                log.warning("cannot check free space in %s: %s", self.config.data_dir, exc)
            else:
                self.scp.note_space(None)

    def _space_changed(self, problem: str | None) -> None:
        """The node started or stopped refusing instances for lack of disk space: the status bar
        shows it (NodeStatus is what the UI's node label displays)."""
        reason = (problem or "").removesuffix("; refusing new instances")
        message = self._node_message if problem is None else f"{self._node_message} - REFUSING new instances: {reason}"
        self.hub.publish(NodeStatus(True, message))

    # -- what the desktop polls (app.core.service_api.DesktopService) ---------------------------
    def models_status(self) -> list[ModelStatusView]:
        return list(self.pipeline.models_status())

    def queue_length(self) -> int:
        return self.pipeline.queue_length()

    def send_study(self, study_uid: str) -> int:
        """"Send to PACS": queue the study's objects to every destination now (built first if
        they never were); returns the sends queued (0: no destination or nothing analysed)."""
        queued = self.outbox.resend_study(study_uid)
        self.outbox_worker.notify()
        self.hub.publish(SendStateChanged(study_uid))
        return queued

    def stop(self, timeout: float = 30.0) -> None:
        """Node first (finishes in-flight writes), then readiness (flushes pending series
        to the persistent job queue), then the pipeline."""
        if not self._started:
            return
        self._started = False
        self._space_stop.set()
        self.scp.stop(timeout)
        self.hub.unsubscribe(self._node_event)  # a later service on the same hub owns the node events
        self.hub.publish(NodeStatus(False, "stopped"))
        self.readiness.stop(flush=True)
        self.pipeline.stop(timeout)
        self.outbox_worker.stop(timeout)  # a send cut short stays 'sending' and is re-queued at the next start
        self.store.close()
        self._running_marker.unlink(missing_ok=True)


def run_headless(config: Config) -> int:
    """Run until SIGTERM/SIGINT; logs go to stderr (configured by the CLI)."""
    if not logging.getLogger().handlers:
        logging.basicConfig(level=config.log_level.upper(), stream=sys.stderr,
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        service = Service(config)
    except ConfigError as exc:  # e.g. a TLS certificate that does not load
        log.error("%s", exc)
        return 2
    except (OSError, sqlite3.Error) as exc:
        log.error("cannot open the data directory %s: %s", config.data_dir, exc)
        return 1
    stop = threading.Event()

    def _signal(signum: int, _frame: FrameType | None) -> None:
        log.info("received %s; stopping after in-flight writes", signal.Signals(signum).name)
        stop.set()

    previous = {s: signal.signal(s, _signal) for s in (signal.SIGTERM, signal.SIGINT)}
    from app.api.hosting import node_tracker, start_api  # the HTTP API (docs/api.md): desktops, DICOMweb, IT

    node = node_tracker(service.hub)
    try:
        if not service.start():
            service.stop()
            return 1
        try:
            api = start_api(config, service, node)
        except OSError as exc:
            log.error("HTTP API not started: cannot listen on %s:%d: %s", config.api_bind, config.api_port,
                      exc.strerror or exc)
            service.stop()
            return 1
        log.info("FirstLook headless: data in %s; SIGTERM or Ctrl-C stops", config.data_dir)
        while not stop.wait(1.0):
            pass
        started = time.monotonic()
        api.stop()
        service.stop()
        log.info("stopped cleanly in %.1f s", time.monotonic() - started)
        return 0
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
