"""The ``schedules`` half of the local Vertex server's Pipelines surface.

Schedules are stored with their ``nextRunTime``; nothing fires by itself: ``tick()``
starts the due ones (``POST /_local/schedules:tick``, ``tune2serve local tick``, tests),
through the host's ``create_job`` as Vertex's scheduler would. ``SchedulesMixin`` is a
part of ``PipelineJobsService`` (localstack/pipeline_jobs.py), the one entry point;
it is split out only to keep each module about one resource.
"""

from __future__ import annotations

import copy
import datetime as dt
import re
import threading
from typing import TYPE_CHECKING, Any

from tune2serve.localstack import protos
from tune2serve.localstack.api_errors import invalid, not_found, precondition
from tune2serve.localstack.state import new_id, now_rfc3339

_UPDATABLE = {"displayName", "cron", "maxRunCount", "maxConcurrentRunCount", "allowQueueing", "startTime", "endTime"}


def rfc3339(moment: dt.datetime) -> str:
    return moment.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


def query_value(query: dict[str, Any], name: str) -> str | None:
    """One query parameter, whether the router gave a value or a list of them."""
    value = query.get(name)
    if isinstance(value, list):
        value = value[0] if value else None
    return None if value is None else str(value)


def _cron(text: str) -> Any:
    """The parsed cron, or the 400 Vertex answers for a bad one."""
    from tune2serve.components.errors import UsageError
    from tune2serve.pipelines.schedule import parse_cron

    try:
        return parse_cron(text)
    except UsageError as e:
        raise invalid(f"Invalid cron: {e}") from e


class SchedulesMixin:
    """Schedules of ``PipelineJobsService``. What it needs from its host, declared here:
    the lock and stores, ``_save``, the shared list/delete helpers, ``check_job`` (what
    Vertex checks of a PipelineJob), ``create_job`` and ``active_runs``."""

    lock: threading.RLock
    schedules: dict[str, dict[str, Any]]

    if TYPE_CHECKING:
        def _save(self) -> None: ...
        def _listed(self, store: dict[str, dict[str, Any]], parent: str,
                    query: dict[str, Any]) -> list[dict[str, Any]]: ...
        def _deleted(self, store: dict[str, dict[str, Any]], name: str, parent: str) -> tuple[str, Any]: ...
        def check_job(self, job: dict[str, Any]) -> None: ...
        def create_job(self, parent: str, job: dict[str, Any], job_id: str | None,
                       schedule: str | None = None) -> dict[str, Any]: ...
        def active_runs(self, schedule: str) -> int: ...

    def _schedules_route(self, method: str, version: str, parent: str, rid: str | None, verb: str | None,
                         query: dict[str, Any], body: bytes) -> tuple[str, Any] | None:
        name = f"{parent}/schedules/{rid}"
        match (method, rid is None, verb):
            case ("POST", True, None):
                schedule = protos.to_dict(protos.parse(version, "Schedule", body))
                return "Schedule", self.create_schedule(parent, schedule)
            case ("GET", True, None):
                return "ListSchedulesResponse", self._listed(self.schedules, parent, query)
            case ("GET", False, None):
                return "Schedule", self.get_schedule(name)
            case ("DELETE", False, None):
                return self._deleted(self.schedules, name, parent)
            case ("PATCH", False, None):
                patch = protos.to_dict(protos.parse(version, "Schedule", body))
                return "Schedule", self.update_schedule(name, patch, query_value(query, "updateMask") or "")
            case ("POST", False, "pause" | "resume"):
                self.set_schedule_paused(name, verb == "pause")
                return "Empty", {}
        return None

    def create_schedule(self, parent: str, schedule: dict[str, Any]) -> dict[str, Any]:
        cron = _cron(schedule.get("cron", ""))
        request = schedule.get("createPipelineJobRequest") or {}
        if "pipelineJob" not in request:
            raise invalid("Schedule.create_pipeline_job_request.pipeline_job is required.")
        if request.get("parent", parent) != parent:
            raise invalid(f"create_pipeline_job_request.parent {request['parent']!r} must be {parent!r}.")
        self.check_job(request["pipelineJob"])
        if int(schedule.get("maxConcurrentRunCount", 0)) <= 0:
            raise invalid("Schedule.max_concurrent_run_count must be greater than 0.")
        name = f"{parent}/schedules/{new_id()}"
        start = parse_time(schedule["startTime"]) if schedule.get("startTime") else dt.datetime.now(dt.timezone.utc)
        now = now_rfc3339()
        schedule.update(name=name, state="ACTIVE", createTime=now, updateTime=now, startedRunCount="0",
                        nextRunTime=rfc3339(cron.next_after(start - dt.timedelta(minutes=1))))
        with self.lock:
            self.schedules[name] = schedule
            self._save()
            return copy.deepcopy(schedule)

    def get_schedule(self, name: str) -> dict[str, Any]:
        with self.lock:
            if name not in self.schedules:
                raise not_found(name)
            return copy.deepcopy(self.schedules[name])

    def set_schedule_paused(self, name: str, paused: bool) -> None:
        with self.lock:
            schedule = self.schedules.get(name) or {}
            want_from = "ACTIVE" if paused else "PAUSED"
            if schedule.get("state") != want_from:
                self.get_schedule(name)  # 404 first
                raise precondition(f"{name} is {schedule.get('state')}; only a {want_from} schedule can be "
                                   f"{'paused' if paused else 'resumed'}.")
            now = now_rfc3339()
            schedule.update(state="PAUSED" if paused else "ACTIVE", updateTime=now)
            schedule["lastPauseTime" if paused else "lastResumeTime"] = now
            if not paused:
                schedule["nextRunTime"] = rfc3339(_cron(schedule["cron"]).next_after(dt.datetime.now(dt.timezone.utc)))
            self._save()

    def update_schedule(self, name: str, patch: dict[str, Any], update_mask: str) -> dict[str, Any]:
        fields = [re.sub(r"_([a-z])", lambda m: m.group(1).upper(), f) for f in update_mask.split(",") if f]
        if not fields or set(fields) - _UPDATABLE:
            raise invalid(f"update_mask {update_mask!r} must name some of {sorted(_UPDATABLE)}.")
        with self.lock:
            schedule = self.schedules.get(name)
            if schedule is None:
                raise not_found(name)
            if "cron" in fields:
                cron = _cron(patch.get("cron", ""))
                schedule["nextRunTime"] = rfc3339(cron.next_after(dt.datetime.now(dt.timezone.utc)))
            for field in fields:
                if field in patch:
                    schedule[field] = patch[field]
            schedule["updateTime"] = now_rfc3339()
            self._save()
            return copy.deepcopy(schedule)

    def tick(self, now: dt.datetime | None = None, *, force: bool = False) -> list[str]:
        """Starts every ACTIVE schedule that is due at ``now`` (or every ACTIVE one with
        ``force``), honouring max_run_count and max_concurrent_run_count as Vertex does.
        Returns the pipeline job names started."""
        now = now or dt.datetime.now(dt.timezone.utc)
        started: list[str] = []
        with self.lock:
            for name, schedule in self.schedules.items():
                if schedule["state"] != "ACTIVE" or not (force or parse_time(schedule["nextRunTime"]) <= now):
                    continue
                if schedule.get("endTime") and parse_time(schedule["endTime"]) <= now:
                    schedule["state"] = "COMPLETED"
                    continue
                if self.active_runs(name) >= int(schedule["maxConcurrentRunCount"]) and not schedule.get("allowQueueing"):
                    continue
                started.append(self._fire(name, schedule, now))
            self._save()
        return started

    def _fire(self, name: str, schedule: dict[str, Any], now: dt.datetime) -> str:
        """Creates one run of ``schedule`` and advances its bookkeeping (lock held)."""
        parent = name.rsplit("/schedules/", 1)[0]
        base = re.sub("[^-0-9a-z]+", "-", schedule.get("displayName", "schedule").lower()).strip("-") or "schedule"
        job_id = f"{base[:100]}-{now:%Y%m%d%H%M%S}-{new_id()[:6]}"
        request = copy.deepcopy(schedule["createPipelineJobRequest"]["pipelineJob"])
        job = self.create_job(parent, request, job_id, schedule=name)
        count = int(schedule.get("startedRunCount", 0)) + 1
        schedule.update(startedRunCount=str(count), updateTime=now_rfc3339(),
                        nextRunTime=rfc3339(_cron(schedule["cron"]).next_after(now)),
                        lastScheduledRunResponse={"scheduledRunTime": rfc3339(now), "runResponse": job["name"]})
        if int(schedule.get("maxRunCount") or 0) > 0 and count >= int(schedule["maxRunCount"]):
            schedule["state"] = "COMPLETED"
        return str(job["name"])
