"""The local Vertex AI server: the control plane (HTTP, REST) and the dedicated-endpoint
data plane (HTTPS, local CA) in one process, started by ``tune2serve local up``.

How the official SDK talks to it (verified with google-cloud-aiplatform 1.165):

    import vertexai
    from google.auth.credentials import AnonymousCredentials
    vertexai.init(project=P, location=L,
                  api_endpoint=os.environ["TUNE2SERVE_VERTEX_API_ENDPOINT"],  # "http://127.0.0.1:PORT"
                  api_transport="rest", credentials=AnonymousCredentials())
    # REQUESTS_CA_BUNDLE (and SSL_CERT_FILE) must name HOME/tls/ca.pem for predict calls
    # on dedicated endpoints: the SDK calls https://{dedicatedEndpointDns}/v1/...:predict.

The GAPIC REST transports honour an ``http://`` scheme in ``api_endpoint``; without a
scheme they use https. The SDK sends ``?$alt=json;enum-encoding=int``; enums are then
answered as numbers. Operations are polled at ``/ui/projects/P/locations/L/operations/ID``
(the REST transports' first binding) or ``/vN/...``; both work here.

Admin routes (not Vertex): GET /_local/health, GET /_local/status, POST /_local/faults,
POST /_local/repair, POST /_local/schedules:tick (fire the due schedules now; with
``{"force": true}`` every ACTIVE one; answers ``{"started": [pipeline job names]}``),
POST /_local/tuningJobs (record a tuning job that GET .../tuningJobs/ID then answers:
localstack/tuning_jobs.py), POST /_local/oauth2/token (the token URI of the credentials
`tune2serve local run` sets up).
Resource Manager (not Vertex, same process): GET /v3/projects/ID, the SDK's project-number
lookup (localstack/projects.py). A prediction sent here (the shared host) for a dedicated
or PSC endpoint is refused as Vertex refuses it (400 FAILED_PRECONDITION).
Cloud Monitoring (not Vertex, same process): GET /v3/projects/P/timeSeries here, and the
gRPC MetricService on ``monitoring_port`` (localstack/monitoring.py).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
import signal
import sys
import threading
from collections.abc import Callable, Generator
from pathlib import Path
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from tune2serve.localstack import projects, protos, resources as res
from tune2serve.localstack.api_errors import ApiError, invalid, not_found
from tune2serve.localstack.control_plane import ControlPlane
from tune2serve.localstack.dataplane import DataPlane, error_response
from tune2serve.localstack.faults import Fault, FaultBook
from tune2serve.localstack.tuning_jobs import TuningJobs

V = r"(?P<version>v1|v1beta1)"
LOC = r"(?P<parent>projects/(?P<project>[^/]+)/locations/(?P<location>[^/:]+))"
EP = LOC + r"/endpoints/(?P<id>[^/:]+)"
MODEL = LOC + r"/models/(?P<id>[^/:]+)"
TUNING_JOB = LOC + r"/tuningJobs/(?P<id>[^/:]+)"


class Call:
    """One parsed request: path groups, query, body and the enum encoding asked for."""

    def __init__(self, match: re.Match[str], request: Request, raw: bytes) -> None:
        self.groups = match.groupdict()
        self.version = self.groups.get("version") or "v1beta1"
        self.query = request.query_params
        self.raw = raw
        self.int_enums = "enum-encoding=int" in self.query.get("$alt", "")

    def parse(self, type_name: str) -> dict[str, Any]:
        msg = protos.parse(self.version, type_name, self.raw)
        return protos.to_dict(msg)

    @property
    def name(self) -> str:
        path = self.groups["parent"]
        kind = "endpoints" if "/endpoints/" in self.groups.get("_path", "") else "models"
        return f"{path}/{kind}/{self.groups['id']}"

    def mask(self) -> list[str]:
        return [m for m in self.query.get("updateMask", self.query.get("update_mask", "")).split(",") if m]


class ControlPlaneApp:
    """Routes Vertex REST paths to ``ControlPlane`` and renders answers with the types."""

    def __init__(self, cp: ControlPlane, dp: DataPlane, pipelines: Any, custom_jobs: Any = None) -> None:
        self.cp, self.dp, self.pipelines, self.custom_jobs = cp, dp, pipelines, custom_jobs
        self.tuning_jobs = TuningJobs()
        r: list[tuple[str, str, Callable[[Call], Any]]] = [
            ("POST", rf"/{V}/{LOC}:deploy", self.deploy),
            ("POST", rf"/{V}/{LOC}:recommendSpec", self.recommend_spec),
            ("GET", rf"/(?:ui/)?(?:{V}/)?(?P<op>projects/[^/]+/locations/[^/]+/(?:[^/]+/[^/]+/)*operations/[^/]+)",
             self.get_operation),
            ("GET", rf"/{V}/{LOC}/endpoints", self.list_endpoints),
            ("POST", rf"/{V}/{LOC}/endpoints", self.create_endpoint),
            ("GET", rf"/{V}/{EP}", self.get_endpoint),
            ("PATCH", rf"/{V}/{EP}", self.patch_endpoint),
            ("DELETE", rf"/{V}/{EP}", self.delete_endpoint),
            ("POST", rf"/{V}/{EP}:deployModel", self.deploy_model),
            ("POST", rf"/{V}/{EP}:undeployModel", self.undeploy_model),
            ("POST", rf"/{V}/{EP}:mutateDeployedModel", self.mutate),
            ("GET", rf"/{V}/{LOC}/models", self.list_models),
            ("GET", rf"/{V}/{MODEL}", self.get_model),
            ("PATCH", rf"/{V}/{MODEL}", self.patch_model),
            ("DELETE", rf"/{V}/{MODEL}", self.delete_model),
            ("GET", rf"/{V}/{TUNING_JOB}", self.get_tuning_job),
            ("GET", r"/_local/health", lambda c: {"ok": True}),
            ("GET", r"/_local/status", self.status),
            ("POST", r"/_local/faults", self.fault),
            ("POST", r"/_local/repair", self.repair),
            ("POST", r"/_local/schedules:tick", self.tick_schedules),
            ("POST", r"/_local/tuningJobs", lambda c: self.tuning_jobs.record(c.raw)),
            ("GET", r"/v3/projects/(?P<project>[^/]+)/timeSeries", self.list_time_series),
            ("GET", r"/v3/(?P<name>projects/[^/:]+)", self.get_project),
            ("POST", r"/_local/oauth2/token", lambda c: projects.token_response()),
        ]
        self.routes = [(method, re.compile(pattern + "$"), fn) for method, pattern, fn in r]

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        request = Request(scope, receive)
        response = await self.handle(request)
        await response(scope, receive, send)

    async def handle(self, request: Request) -> Response:
        path = request.url.path
        if re.search(r"/endpoints/[^/]+(:predict|:rawPredict|:streamRawPredict|/chat/completions|/invoke/)", path):
            refusal = self.shared_host_refusal(path)  # dedicated and PSC endpoints are not served here
            return error_response(refusal) if refusal else await self.dp.handle(request)
        if "/pipelineJobs" in path or "/schedules" in path:
            raw = await request.body()
            answer = await run_in_threadpool(self.pipelines.handle, request.method, path,
                                             dict(request.query_params), raw)
            if answer is not None:
                return JSONResponse(answer[1], status_code=answer[0])
        if "/customJobs" in path and self.custom_jobs is not None:
            raw = await request.body()
            answer = await run_in_threadpool(self.custom_jobs.handle, request.method, path,
                                             dict(request.query_params), raw)
            if answer is not None:
                return JSONResponse(answer[1], status_code=answer[0])
        allowed_elsewhere = False
        for method, regex, fn in self.routes:
            m = regex.match(path)
            if not m:
                continue
            if method != request.method:
                allowed_elsewhere = True
                continue
            if not path.startswith("/_local/") and self.cp.faults.take_control_429(f"{request.method} {path}"):
                return error_response(quota_exceeded(path))
            raw = await request.body()
            call = Call(m, request, raw)
            call.groups["_path"] = path
            try:
                result = await run_in_threadpool(fn, call)
            except ApiError as e:
                return error_response(e)
            return result if isinstance(result, Response) else JSONResponse(result)
        if allowed_elsewhere:
            return error_response(ApiError("UNIMPLEMENTED", f"Method {request.method} is not supported on {path}."))
        return error_response(not_found(f"Path {path}"))

    def shared_host_refusal(self, path: str) -> ApiError | None:
        """Vertex's refusal of a prediction sent to the regional API host for an endpoint
        reached elsewhere (``resources.shared_host_refusal``), or None to serve it."""
        from tune2serve.localstack.dataplane import ROUTE

        m = ROUTE.match(path)
        endpoint = self.cp.store.endpoint(m["endpoint_id"]) if m else None
        if endpoint is None or endpoint["name"] != m["endpoint"]:
            return None  # the data plane answers 404 for it
        return res.shared_host_refusal(endpoint)

    # -------------------------------------------------------------- rendering
    def _op(self, call: Call, op: dict[str, Any]) -> dict[str, Any]:
        version = op.get("version", call.version)
        out: dict[str, Any] = {"name": op["name"]}
        if op.get("done"):  # proto3 JSON: a false ``done`` is left out, as Vertex leaves it out
            out["done"] = True
        meta = op["metadata"]
        out["metadata"] = protos.pack(version, meta["type"], meta["payload"], call.int_enums)
        if "response" in op:
            out["response"] = protos.pack(version, op["response"]["type"], op["response"]["payload"], call.int_enums)
        if "error" in op:
            out["error"] = op["error"]
        return out

    def _endpoint(self, call: Call, e: dict[str, Any]) -> dict[str, Any]:
        return protos.render(call.version, "Endpoint", e, call.int_enums)

    # ---------------------------------------------------------------- handlers
    def deploy(self, call: Call) -> dict[str, Any]:
        if not hasattr(protos.types_for(call.version), "DeployRequest"):
            raise ApiError("UNIMPLEMENTED", f"{call.version} has no :deploy; use v1beta1.")
        return self._op(call, self.cp.deploy(call.version, call.groups["parent"], call.parse("DeployRequest")))

    def recommend_spec(self, call: Call) -> dict[str, Any]:
        if call.version != "v1beta1":
            raise ApiError("UNIMPLEMENTED", "recommendSpec is a v1beta1 method.")
        out = self.cp.recommend_spec(call.groups["parent"], call.parse("RecommendSpecRequest"))
        return protos.render(call.version, "RecommendSpecResponse", out, call.int_enums)

    def get_operation(self, call: Call) -> dict[str, Any]:
        return self._op(call, self.cp.get_operation(call.groups["op"]))

    def list_endpoints(self, call: Call) -> dict[str, Any]:
        eps = self.cp.list_endpoints(call.groups["parent"], call.query.get("filter", ""))
        return {"endpoints": [self._endpoint(call, e) for e in eps]} if eps else {}  # proto3 JSON: [] omitted

    def create_endpoint(self, call: Call) -> dict[str, Any]:
        body = call.parse("Endpoint")
        return self._op(call, self.cp.create_endpoint(call.version, call.groups["parent"], body,
                                                      call.query.get("endpointId")))

    def get_endpoint(self, call: Call) -> dict[str, Any]:
        return self._endpoint(call, self.cp.get_endpoint(call.groups["id"], call.name))

    def patch_endpoint(self, call: Call) -> dict[str, Any]:
        body = call.parse("Endpoint")
        return self._endpoint(call, self.cp.patch_endpoint(call.groups["id"], call.name, body, call.mask()))

    def delete_endpoint(self, call: Call) -> dict[str, Any]:
        return self._op(call, self.cp.delete_endpoint(call.version, call.groups["id"], call.name))

    def deploy_model(self, call: Call) -> dict[str, Any]:
        req = call.parse("DeployModelRequest")
        return self._op(call, self.cp.deploy_model(call.version, call.groups["id"], call.name, req))

    def undeploy_model(self, call: Call) -> dict[str, Any]:
        req = call.parse("UndeployModelRequest")
        return self._op(call, self.cp.undeploy_model(call.version, call.groups["id"], call.name, req))

    def mutate(self, call: Call) -> dict[str, Any]:
        req = call.parse("MutateDeployedModelRequest")
        mask = [p for p in req.get("updateMask", "").split(",") if p] or call.mask()
        mask = [re.sub(r"(?<!^)(?=[A-Z])", "_", p).lower() for p in mask]
        return self._op(call, self.cp.mutate_deployed_model(call.version, call.groups["id"], call.name, req, mask))

    def list_models(self, call: Call) -> dict[str, Any]:
        models = self.cp.list_models(call.groups["parent"], call.query.get("filter", ""))
        return {"models": [protos.render(call.version, "Model", m, call.int_enums) for m in models]} if models else {}

    def get_model(self, call: Call) -> dict[str, Any]:
        m = self.cp.get_model(call.groups["id"], call.name)
        return protos.render(call.version, "Model", m, call.int_enums)

    def patch_model(self, call: Call) -> dict[str, Any]:
        body = call.parse("Model")
        m = self.cp.patch_model(call.groups["id"], call.name, body, call.mask())
        return protos.render(call.version, "Model", m, call.int_enums)

    def delete_model(self, call: Call) -> dict[str, Any]:
        return self._op(call, self.cp.delete_model(call.version, call.groups["id"], call.name))

    def get_tuning_job(self, call: Call) -> dict[str, Any]:
        name = f"{call.groups['parent']}/tuningJobs/{call.groups['id']}"
        return self.tuning_jobs.get(call.version, name, call.int_enums)

    def list_time_series(self, call: Call) -> Response:
        """Cloud Monitoring's v3 REST ``projects.timeSeries.list`` (localstack/monitoring.py)."""
        from google.protobuf import json_format

        from tune2serve.localstack import monitoring

        request = monitoring.request_from_query(call.groups["project"], call.query)
        answer = monitoring.list_time_series(request, self.dp.metrics)
        return Response(json_format.MessageToJson(type(answer).pb(answer), use_integers_for_enums=call.int_enums),
                        media_type="application/json")

    def get_project(self, call: Call) -> Response:
        """Resource Manager v3 ``projects.get`` (localstack/projects.py)."""
        return JSONResponse(projects.get_project(call.groups["name"], self.cp.config.project))

    def status(self, call: Call) -> dict[str, Any]:
        with self.cp.store.lock:
            endpoints = list(self.cp.store.state.endpoints.values())
            deps = dict(self.cp.store.state.deployments)
        out = []
        for e in endpoints:
            live = self.cp.live_endpoint(e)
            for dm in live.get("deployedModels", []):
                dep = deps.get(dm["id"])
                dm["wantedReplicas"] = dep.replicas if dep else 0
                dm["replicas"] = [{"port": r.port, "pid": r.record.pid, "healthy": r.healthy, "engine": r.engine_tag}
                                  for r in self.cp.supervisor.replicas.get(dm["id"], [])]
            out.append(live)
        return {"endpoints": out, "faults": self.cp.faults.list()}

    def fault(self, call: Call) -> dict[str, Any]:
        try:
            body = json.loads(call.raw or b"{}")
            fault = Fault(**body)
        except (ValueError, TypeError) as e:
            raise invalid(f"Invalid fault: {e}; expected {{kind, target?, count?, ms?, percent?, match?}}.") from e
        if fault.problem():
            raise invalid(f"Invalid fault: {fault.problem()}.")
        return self.cp.inject(fault)

    def repair(self, call: Call) -> dict[str, Any]:
        self.cp.restore_replicas()
        return self.status(call)

    def tick_schedules(self, call: Call) -> dict[str, Any]:
        """Fires schedules without waiting for their cron (localstack/admin.py)."""
        try:
            body = json.loads(call.raw or b"{}")
        except ValueError as e:
            raise invalid(f"Invalid tick request: {e}; expected {{\"force\": bool}}.") from e
        if not isinstance(body, dict) or set(body) - {"force"} or not isinstance(body.get("force", False), bool):
            raise invalid(f"Invalid tick request {body!r}; expected {{\"force\": bool}}.")
        return {"started": self.pipelines.tick(force=body.get("force", False))}


def quota_exceeded(path: str) -> ApiError:
    """The 429 a project out of serving quota gets (the control-429 fault)."""
    region = m.group(1) if (m := re.search(r"/locations/([^/:]+)", path)) else "this region"
    return ApiError("RESOURCE_EXHAUSTED", "Quota exceeded for aiplatform.googleapis.com/custom_model_serving_cpus "
                    f"with base model: custom weights, in {region} (injected fault control-429). Request a "
                    "'Custom Model Serving' quota increase or retry later.")


class _Server:
    """A uvicorn server that leaves signal handling to ``serve_forever``."""

    @staticmethod
    def make(app: Any, port: int, **ssl: Any) -> Any:
        import uvicorn

        class Server(uvicorn.Server):
            @contextlib.contextmanager
            def capture_signals(self) -> Generator[None, None, None]:
                yield

        config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False,
                                lifespan="off", timeout_keep_alive=30, **ssl)
        return Server(config)


async def serve_forever(servers: list[Any]) -> None:
    loop = asyncio.get_running_loop()

    def stop() -> None:
        for s in servers:
            s.should_exit = True

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop)
    await asyncio.gather(*(s.serve() for s in servers))


def main(argv: list[str] | None = None) -> int:
    from tune2serve.components import logs
    from tune2serve.localstack.serving import Supervisor
    from tune2serve.localstack.state import StackConfig, StateStore
    from tune2serve.localstack.tls import tls_files

    parser = argparse.ArgumentParser(prog="tune2serve-local-vertex")
    parser.add_argument("--home", required=True)
    args = parser.parse_args(argv)
    home = Path(args.home).resolve()
    logs.configure(stream=sys.stderr)
    config = StackConfig.load(home)
    if config is None:
        sys.stderr.write(f"{home}/stack.json is missing: run `tune2serve local up`\n")
        return 2
    tls = tls_files(home)
    store, supervisor, faults = StateStore(home), Supervisor(home), FaultBook()
    supervisor.kill_stale()
    cp = ControlPlane(home, config, store, supervisor, faults)
    dp = DataPlane(store, supervisor, faults)
    stop_health = threading.Event()
    threading.Thread(target=supervisor.health_loop, args=(stop_health,), daemon=True).start()
    threading.Thread(target=cp.restore_replicas, daemon=True).start()
    pipelines = _pipeline_jobs(home)
    custom_jobs = _custom_jobs(home)
    control = _Server.make(ControlPlaneApp(cp, dp, pipelines, custom_jobs), config.vertex_port)
    data = _Server.make(dp_app(dp), config.dataplane_port, ssl_certfile=str(tls.server_cert),
                        ssl_keyfile=str(tls.server_key))
    metrics = _monitoring_server(dp, config.monitoring_port, tls)
    try:
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            runner.run(serve_forever([control, data]))
    finally:
        stop_health.set()
        if metrics is not None:
            metrics.stop(grace=1)
        pipelines.close()
        custom_jobs.close()
        supervisor.stop_all()
    return 0


def _monitoring_server(dp: DataPlane, port: int, tls: Any) -> Any:
    """Cloud Monitoring's gRPC MetricService over the data plane's counts (None for a
    stack made before it had a monitoring port: `local down` then `up` adds one)."""
    if not port:
        return None
    from tune2serve.localstack.monitoring import grpc_server

    return grpc_server(dp.metrics, port, tls.server_cert.read_bytes(), tls.server_key.read_bytes())


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop when installed (uvicorn[standard] brings it): the data plane relays every
    request, and uvloop's event loop and transports cut its per-request overhead."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop  # type: ignore[no-any-return]


def _pipeline_jobs(home: Path) -> Any:
    """The pipelineJobs/schedules surface (localstack/pipeline_jobs.py). The runs it
    starts get the stack's own environment (what `tune2serve local env` prints), so their
    steps reach this same GCS and Vertex server whatever this process inherited."""
    from tune2serve.localstack.pipeline_jobs import PipelineJobsService
    from tune2serve.localstack.stack import LocalStack

    return PipelineJobsService(home / "pipelines", LocalStack(home).env())


def _custom_jobs(home: Path) -> Any:
    """The customJobs surface (localstack/custom_jobs.py): each job's worker runs here with
    the stack's environment, as the pipeline jobs' steps do."""
    from tune2serve.localstack.custom_jobs import CustomJobsService
    from tune2serve.localstack.stack import LocalStack

    return CustomJobsService(home / "custom_jobs", LocalStack(home).env())


def dp_app(dp: DataPlane) -> Any:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        response = await dp.handle(Request(scope, receive))
        await response(scope, receive, send)

    return app


if __name__ == "__main__":
    raise SystemExit(main())
