"""A real Celery worker standing in for the lab-runner team's, for conformance tests.

Run (what test/support/celery-worker.ts does):

    cd test/celery_worker
    CELERY_BROKER_URL=amqp://guest:guest@127.0.0.1:5672// \
    CELERY_RESULT_BACKEND=redis://127.0.0.1:6379/5 \
    /usr/bin/python3 -m celery -A labs_worker worker --pool=solo -Q <queue> --loglevel=INFO

Environment:
  CELERY_BROKER_URL      amqp://... (default: local RabbitMQ)
  CELERY_RESULT_BACKEND  redis://... (default: local Redis, db 5)
  CELERY_TASK_PREFIX     task name prefix (default: celery_workers)
  AUTOLABS_PARENT_PID    if set, shut down when that process goes away, so a
                         crashed test run does not leave workers behind

The task signatures take exactly DESIGN's kwargs: a message with any other key
fails with a TypeError in the worker, which is part of what the test proves.
"""
import ctypes
import ctypes.util
import os
import signal

from celery import Celery
from celery.signals import task_prerun

PREFIX = os.environ.get("CELERY_TASK_PREFIX", "celery_workers")

#: start_lab with this lab_id raises RuntimeError(FAIL_MESSAGE), to exercise FAILURE.
FAIL_LAB_ID = 999999
FAIL_MESSAGE = "simulated failure: lab 999999 cannot be scheduled"

app = Celery(
    "labs_worker",
    broker=os.environ.get("CELERY_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672//"),
    backend=os.environ.get("CELERY_RESULT_BACKEND", "redis://127.0.0.1:6379/5"),
)
app.conf.update(
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    result_accept_content=["json"],
    # One message at a time: tests read results in order, nothing is held unacked.
    worker_prefetch_multiplier=1,
    # No pidbox/broadcast queues: only the test's own queue exists on the broker.
    worker_enable_remote_control=False,
    broker_connection_retry_on_startup=True,
)


def _task_name(name):
    return f"{PREFIX}.{name}" if PREFIX else name


@app.task(name=_task_name("start_lab"))
def start_lab(lab_instance_id, lab_id, student_id):
    if lab_id == FAIL_LAB_ID:
        raise RuntimeError(FAIL_MESSAGE)
    return {
        "status": "running",
        "k8s_pod_name": f"lab-{lab_instance_id}",
        "connection_url": f"https://labs.example.test/i/{lab_instance_id}",
    }


@app.task(name=_task_name("stop_lab"))
def stop_lab(lab_instance_id):
    return {"status": "stopped"}


@app.task(name=_task_name("cleanup_lab"))
def cleanup_lab(lab_instance_id):
    return {"status": "stopped"}


@task_prerun.connect
def _print_trace_context(task_id=None, task=None, **_):
    # The producer's W3C trace context, where OpenTelemetry's Celery instrumentation reads it: the message headers.
    print(f"trace context of {task.name} {task_id}: traceparent={task.request.get('traceparent')}", flush=True)


def _exit_with_parent(parent_pid):
    # Linux: have the kernel send SIGTERM (warm shutdown) when the parent dies.
    # A watcher thread would do too, but it made Celery's shutdown hang ~8 s.
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    PR_SET_PDEATHSIG = 1
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
        return  # not Linux-capable: the test's afterAll still stops us
    if os.getppid() != parent_pid:  # parent already gone before prctl
        os.kill(os.getpid(), signal.SIGTERM)


if os.environ.get("AUTOLABS_PARENT_PID"):
    _exit_with_parent(int(os.environ["AUTOLABS_PARENT_PID"]))
