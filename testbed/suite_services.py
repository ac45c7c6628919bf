"""The suite's shared services (a two-node Ray cluster, an S3-compatible object store, an MLflow server) and
its demo job, each started once per session.

When a session holds end-to-end tests, conftest starts all of it in a background thread as collection ends:
the demo job (about 2.5 min on 2 cores) then runs while the unit tests that never touch Ray run beside it.
Measured with vmstat, each of the two leaves about a quarter of the 2 cores idle when run alone, so the
overlap shortens the suite. A test that uses the cluster waits until the job has ended (`cluster`), so it
never competes with the job for the cluster's logical CPUs (a Ray Train run waiting for them could time out
starting its workers). Without end-to-end tests nothing starts early, and the first test that asks for a
service starts the services in its own thread."""

from __future__ import annotations

import concurrent.futures
import functools
import os
import signal
import threading
from collections.abc import Callable
from typing import Any

# Waits for the background start: the cluster's own start is bounded at 2 x 120 s, the demo job at 900 s.
SERVICES_TIMEOUT_S = 400
DEMO_TIMEOUT_S = 1200


class SuiteServices:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._started: list[Any] = []  # what is up, stopped in reverse order
        self._services: concurrent.futures.Future | None = None
        self._demo: concurrent.futures.Future | None = None
        self._thread: threading.Thread | None = None

    def start_in_background(self, run_demo_job: Callable[[tuple], Any]) -> None:
        """Start the services and then run_demo_job((cluster, store, server)) in a thread of their own."""
        with self._lock:
            assert self._services is None, "the services are already starting"
            self._services = concurrent.futures.Future()
            self._demo = concurrent.futures.Future()

        def start_then_run_the_demo() -> None:
            _settle(self._services, self._start_each)
            if self._services.exception() is not None:
                self._demo.set_exception(self._services.exception())
                return
            _settle(self._demo, lambda: run_demo_job(self._services.result()))

        self._thread = threading.Thread(target=start_then_run_the_demo, name="suite-services", daemon=True)
        self._thread.start()

    def services(self) -> tuple:
        """(cluster, object store, MLflow server); started here unless the background start began."""
        future, mine = self._claim("_services")
        if mine:
            _settle(future, self._start_each)
        return future.result(timeout=SERVICES_TIMEOUT_S)

    def cluster_for_a_test(self) -> Any:
        """The cluster, once a demo job started in the background has ended (whatever its outcome: the
        tests that build on it report a failure; the others need only the cluster free)."""
        cluster = self.services()[0]
        if self._demo is not None:
            concurrent.futures.wait([self._demo], timeout=DEMO_TIMEOUT_S)
        return cluster

    def demo_job(self, run_demo_job: Callable[[tuple], Any]) -> Any:
        """The demo job's result: the background run's, or one run here."""
        services = self.services()
        future, mine = self._claim("_demo")
        if mine:
            _settle(future, lambda: run_demo_job(services))
        return future.result(timeout=DEMO_TIMEOUT_S)

    def _claim(self, name: str) -> tuple[concurrent.futures.Future, bool]:
        """The future held under `name`, and whether this call created it (and so must settle it)."""
        with self._lock:
            future = getattr(self, name)
            if future is not None:
                return future, False
            future = concurrent.futures.Future()
            setattr(self, name, future)
            return future, True

    def stop(self) -> None:
        """Stop what started, in reverse order; a demo job still running ends with its cluster. Again after
        the background thread ends: an interrupted session may stop while that thread still starts one."""
        self._stop_what_started()
        if self._thread is not None:
            self._thread.join(timeout=60)
            self._stop_what_started()

    def _stop_what_started(self) -> None:
        with self._lock:
            started, self._started = self._started, []
        for service in reversed(started):
            service.stop()

    def _start_each(self) -> tuple:
        """The cluster in a thread, the two servers here, side by side; each is recorded as soon as it is
        up, so that stop() ends it even when a later start fails."""
        from testbed.ray_cluster import LocalRayCluster
        from testbed.services import MlflowTrackingServer, ObjectStoreServer

        def start_cluster() -> LocalRayCluster:
            cluster = LocalRayCluster(num_cpus=2)
            self._record(cluster)
            cluster.start()
            cluster.add_worker_node(num_cpus=2, resources={"node2": 1})
            return cluster

        with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
            starting = pool.submit(start_cluster)
            try:
                store = self._record(ObjectStoreServer().start())
                server = self._record(MlflowTrackingServer(store.uri("mlflow-artifacts"), store.env).start())
            finally:
                cluster = starting.result()  # waits for the thread; raises if the cluster failed
        return cluster, store, server

    def _record(self, service: Any) -> Any:
        with self._lock:
            self._started.append(service)
        return service


def _settle(future: concurrent.futures.Future, work: Callable[[], Any]) -> None:
    """work()'s result or exception into future: the tests that wait for it see either."""
    try:
        future.set_result(work())
    except BaseException as failed:
        future.set_exception(failed)


def interrupt_on_sigterm() -> None:
    """SIGTERM (a CI runner's or `kill`'s) would end pytest before any teardown and leave the cluster and the
    servers running; as an interrupt, pytest stops, tears the fixtures down and runs sessionfinish. Only
    where no handler is set already."""
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, functools.partial(_interrupt, os.getpid()))


def _interrupt(pytest_pid: int, signum, frame):
    if os.getpid() != pytest_pid:  # a forked child inherited the handler: it ends as SIGTERM would end it
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
        return
    raise KeyboardInterrupt(f"signal {signum}")
