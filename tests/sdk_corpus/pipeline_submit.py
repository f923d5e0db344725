"""Submit the compiled promotion pipeline with the SDK's ``PipelineJob.submit()``, as the
Vertex AI Pipelines docs show it (template path, pipeline root, parameter values), and
cancel it; then a run whose integer parameter is given as a string, which Vertex refuses
when the job is created. Nothing about the local stack in it: `tune2serve local run`
points it there.

Reads TEMPLATE (compiled/promote_checkpoint.yaml), BUCKET and MODEL_GCS. Prints one JSON
line per call; exits 1 when one did not do what Vertex does.
"""

import json
import os
import sys
import time

from google.api_core import exceptions
from google.cloud import aiplatform

PROJECT_ID = os.environ["GOOGLE_CLOUD_PROJECT"]
REGION = os.environ["GOOGLE_CLOUD_REGION"]
failures = []


def report(call, ok, **detail):
    print(json.dumps({"call": call, "ok": bool(ok), **detail}), flush=True)
    if not ok:
        failures.append(call)


aiplatform.init(project=PROJECT_ID, location=REGION)
parameters = {"source": os.environ["MODEL_GCS"], "export_dest": f"gs://{os.environ['BUCKET']}/corpus-export",
              "project": PROJECT_ID}
job = aiplatform.PipelineJob(display_name="corpus-submit", template_path=os.environ["TEMPLATE"],
                             pipeline_root=f"gs://{os.environ['BUCKET']}/pipeline-root",
                             parameter_values=parameters, enable_caching=False)
started = time.monotonic()
job.submit()
seconds = time.monotonic() - started
# The SDK's bucket-ownership check asks Resource Manager for the project number; answered
# on this machine, submit returns in a second or two instead of retrying for ~50 s.
report("PipelineJob.submit", seconds < 15 and job.resource_name.startswith(f"projects/{PROJECT_ID}/"),
       seconds=round(seconds, 2), job=job.resource_name)
job.cancel()
report("PipelineJob.cancel", True)

wrong = aiplatform.PipelineJob(display_name="corpus-wrong-type", template_path=os.environ["TEMPLATE"],
                               pipeline_root=f"gs://{os.environ['BUCKET']}/pipeline-root",
                               parameter_values={**parameters, "canary_percent": "10"})
try:
    wrong.submit()
    report("a string for an integer parameter is refused at create", False)
except exceptions.BadRequest as e:  # HTTP 400 INVALID_ARGUMENT
    report("a string for an integer parameter is refused at create", "canary_percent" in str(e), error=str(e)[:300])
sys.exit(1 if failures else 0)
