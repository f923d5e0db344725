"""Deploy custom weights with the Vertex AI SDK for Python, query the endpoint in the
documented ways, clean up — code as a user writes it from "Deploy models with custom
weights" (Model Garden) and the online-prediction reference, with nothing about the
local stack in it: `tune2serve local run -- python deploy_python_sdk.py` points it there.

Reads MODEL_GCS (the uploaded model folder); the project and region are the SDK's
defaults (GOOGLE_CLOUD_PROJECT / GOOGLE_CLOUD_REGION). Prints one JSON line per call:
{"call": NAME, "ok": bool, ...}; exits 1 when a call did not do what the docs say.
"""

import json
import os
import sys

import google.auth
import google.auth.transport.requests
import requests
import vertexai
from google.api_core import exceptions
from google.cloud import aiplatform, aiplatform_v1
from vertexai.preview import model_garden

PROJECT_ID = os.environ["GOOGLE_CLOUD_PROJECT"]
REGION = os.environ["GOOGLE_CLOUD_REGION"]
MODEL_GCS = os.environ["MODEL_GCS"]
PROMPT = "How to tell the time by looking at the sky?"
failures = []


def report(call, ok, **detail):
    print(json.dumps({"call": call, "ok": bool(ok), **detail}), flush=True)
    if not ok:
        failures.append(call)


def bearer():
    creds, _ = google.auth.default(scopes=["https://www.googleapis.com/auth/cloud-platform"])
    creds.refresh(google.auth.transport.requests.Request())
    return {"Authorization": f"Bearer {creds.token}", "Content-Type": "application/json"}


vertexai.init(project=PROJECT_ID, location=REGION)
model = model_garden.CustomModel(gcs_uri=MODEL_GCS)

options = model.list_deploy_options()
report("list_deploy_options", "machine_type=" in options, options=options.splitlines()[:4])

endpoint = model.deploy(
    machine_type="g2-standard-12",
    accelerator_type="NVIDIA_L4",
    accelerator_count=1,
    model_display_name="corpus-sdk-model",
    endpoint_display_name="corpus-sdk-endpoint",
)
endpoint = aiplatform.Endpoint(endpoint.resource_name)
dns = endpoint.gca_resource.dedicated_endpoint_dns
deployed = endpoint.gca_resource.deployed_models[0]
report("CustomModel.deploy", bool(dns) and endpoint.gca_resource.traffic_split[deployed.id] == 100,
       endpoint=endpoint.resource_name, model=deployed.model)

# 1. predict: {"instances": [...]} at the dedicated DNS name
base = f"https://{dns}/v1beta1/{endpoint.resource_name}"
instance = {"prompt": PROMPT, "temperature": 0, "top_p": 1, "max_tokens": 16, "ignore_eos": True}
answer = requests.post(f"{base}:predict", headers=bearer(), json={"instances": [instance]}, timeout=120)
report("predict", answer.ok and isinstance(answer.json().get("predictions"), list), status=answer.status_code)

# 2. chat completions, unary (the OpenAI-compatible route of Model Garden endpoints)
chat = {"model": deployed.model, "temperature": 0, "top_p": 1, "max_tokens": 16, "ignore_eos": True,
        "messages": [{"role": "user", "content": PROMPT}]}
answer = requests.post(f"{base}/chat/completions", headers=bearer(), json=chat, timeout=120)
report("chat.completions", answer.ok and answer.json()["choices"][0]["message"]["content"] is not None,
       status=answer.status_code)

# 2b. rawPredict through the SDK on the dedicated endpoint
raw = endpoint.raw_predict(body=json.dumps({"instances": [instance]}).encode(),
                           headers={"Content-Type": "application/json"}, use_dedicated_endpoint=True)
report("Endpoint.raw_predict", raw.status_code == 200 and "predictions" in raw.json(), status=raw.status_code)

# 3. streamRawPredict: server-sent events, one chunk per piece of the answer
stream = requests.post(f"{base}:streamRawPredict", headers=bearer(), stream=True, timeout=120,
                       json={"instances": [{**instance, "stream": True}]})
chunks = [line for line in stream.iter_lines() if line.startswith(b"data:")]
report("streamRawPredict", stream.ok and len(chunks) >= 1, status=stream.status_code, chunks=len(chunks))

# 4. Endpoint.predict with use_dedicated_endpoint=True
prediction = endpoint.predict(instances=[instance], use_dedicated_endpoint=True)
report("Endpoint.predict(use_dedicated_endpoint=True)", len(prediction.predictions) == 1,
       deployed_model_id=prediction.deployed_model_id)

# Without use_dedicated_endpoint this SDK (1.1xx) still sends the request to the dedicated
# DNS name of a dedicated endpoint; the regional host refuses such requests (400
# FAILED_PRECONDITION: deploy_rest_curl.sh sends one there).
plain = endpoint.predict(instances=[instance])
report("Endpoint.predict() (routed to the dedicated DNS by the SDK)", plain.deployed_model_id == deployed.id)

# The docs' GAPIC form, for the regional host: Vertex refuses predictions there for a
# dedicated endpoint (400 FAILED_PRECONDITION, "…use its dedicated dns name…").
client = aiplatform_v1.PredictionServiceClient(client_options={"api_endpoint": f"{REGION}-aiplatform.googleapis.com"})
try:
    client.predict(endpoint=endpoint.resource_name, instances=[instance])
    report("PredictionServiceClient.predict at the regional host is refused", False)
except exceptions.BadRequest as e:  # HTTP 400 FAILED_PRECONDITION
    report("PredictionServiceClient.predict at the regional host is refused", "dedicated dns name" in str(e),
           error=str(e)[:200])

# Clean-up: undeploy everything, delete the endpoint and the model
endpoint.undeploy_all()
endpoint.delete()
aiplatform.Model(deployed.model).delete()
left = [e.resource_name for e in aiplatform.Endpoint.list() if e.resource_name == endpoint.resource_name]
report("undeploy_all + delete", left == [])
sys.exit(1 if failures else 0)
