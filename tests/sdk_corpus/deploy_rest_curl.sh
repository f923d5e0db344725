#!/usr/bin/env bash
# Deploy custom weights with the REST API and curl, query with curl, clean up with curl:
# the request shapes of "Deploy models with custom weights" (the :deploy bodies as the
# page prints them, trailing commas included; the PSC form) and of the endpoints REST
# reference. Only the host differs from the docs: the regional API host is
# $TUNE2SERVE_VERTEX_API_ENDPOINT, which `tune2serve local run` sets (with CURL_CA_BUNDLE,
# so curl trusts the dedicated endpoint's certificate).
#
# Reads MODEL_GCS; PROJECT_ID/REGION from GOOGLE_CLOUD_PROJECT/GOOGLE_CLOUD_REGION.
# Prints one JSON line per call ({"call", "ok", ...}); exits 1 when one failed.
set -u
PROJECT_ID="${GOOGLE_CLOUD_PROJECT}"
REGION="${GOOGLE_CLOUD_REGION}"
API="${TUNE2SERVE_VERTEX_API_ENDPOINT}"
TOKEN="local"  # the docs use $(gcloud auth print-access-token); the local stack checks no token
SUFFIX="$(date +%s%N | tail -c 9)"
FAILED=0

json() {  # json EXPR < document: a value from a JSON document (Python's json module)
  python3 -c "import json,sys; d=json.load(sys.stdin); print(eval(sys.argv[1]))" "$1"
}
report() {  # report CALL OK DETAIL
  printf '{"call": "%s", "ok": %s, "detail": %s}\n' "$1" "$2" "$(printf '%s' "$3" | python3 -c 'import json,sys; print(json.dumps(sys.stdin.read()[:300]))')"
  [ "$2" = true ] || FAILED=1
}
wait_operation() {  # wait_operation OPERATION_NAME: the finished operation
  local op
  for _ in $(seq 1 240); do
    op="$(curl -sS -H "Authorization: Bearer ${TOKEN}" "${API}/v1beta1/$1")"
    if [ "$(printf '%s' "$op" | json 'd.get("done", False)')" = True ]; then printf '%s' "$op"; return; fi
    sleep 1
  done
  printf '%s' "$op"
}

# --- deploy, public dedicated endpoint: the page's body with an explicit machine type
MODEL_ID="corpus-rest-${SUFFIX}"
OP="$(curl -sS -X POST \
  -H "Authorization: Bearer ${TOKEN}" \
  -H "Content-Type: application/json" \
  "${API}/v1beta1/projects/${PROJECT_ID}/locations/${REGION}:deploy" \
  -d '{
    "custom_model": {
    "gcs_uri": "'"${MODEL_GCS}"'"
  },
  "destination": "projects/'"${PROJECT_ID}"'/locations/'"${REGION}"'",
  "model_config": {
     "model_user_id": "'"${MODEL_ID}"'",
  },
  "deploy_config": {
    "dedicated_resources": {
      "machine_spec": {
        "machine_type": "g2-standard-12",
        "accelerator_type": "NVIDIA_L4",
        "accelerator_count": 1
      },
      "min_replica_count": 1
    }
  }
}')"
OP_NAME="$(printf '%s' "$OP" | json 'd.get("name", "")')"
report ":deploy (trailing commas, as the docs print it)" "$([ -n "$OP_NAME" ] && echo true || echo false)" "$OP"
DONE="$(wait_operation "$OP_NAME")"
ENDPOINT="$(printf '%s' "$DONE" | json 'd["response"]["endpoint"]')"
MODEL="$(printf '%s' "$DONE" | json 'd["response"]["model"]')"
report "operation done" "$([ "${MODEL##*/}" = "$MODEL_ID" ] && echo true || echo false)" "$DONE"

EP_JSON="$(curl -sS -H "Authorization: Bearer ${TOKEN}" "${API}/v1beta1/${ENDPOINT}")"
ENDPOINT_URL="$(printf '%s' "$EP_JSON" | json 'd["dedicatedEndpointDns"]')"
ENDPOINT_ID="${ENDPOINT##*/}"
DEPLOYED_ID="$(printf '%s' "$EP_JSON" | json 'd["deployedModels"][0]["id"]')"
report "GET endpoint (dedicatedEndpointDns, no default-valued fields)" \
  "$(printf '%s' "$EP_JSON" | json '"true" if d["dedicatedEndpointEnabled"] and "description" not in d and "enableAccessLogging" not in d["deployedModels"][0] else "false"')" "$EP_JSON"

# --- the four query forms at the dedicated endpoint
ANSWER="$(curl -sS -X POST \
  -H "Authorization: Bearer ${TOKEN}" \
  -H "Content-Type: application/json" \
  "https://${ENDPOINT_URL}/v1beta1/projects/${PROJECT_ID}/locations/${REGION}/endpoints/${ENDPOINT_ID}/chat/completions" \
  -d '{
  "model": "'"${MODEL_ID}"'",
  "temperature": 0,
  "top_p": 1,
  "max_tokens": 16,
  "ignore_eos": true,
  "messages": [
    {
      "role": "user",
      "content": "How to tell the time by looking at the sky?"
    }
  ]
}')"
report "chat/completions (unary)" "$(printf '%s' "$ANSWER" | json '"true" if d["choices"][0]["message"]["content"] is not None else "false"')" "$ANSWER"

STREAM="$(curl -sS -X POST \
  -H "Authorization: Bearer ${TOKEN}" \
  -H "Content-Type: application/json" \
  "https://${ENDPOINT_URL}/v1beta1/projects/${PROJECT_ID}/locations/${REGION}/endpoints/${ENDPOINT_ID}/chat/completions" \
  -d '{
  "model": "'"${MODEL_ID}"'",
  "stream": true,
  "temperature": 0,
  "top_p": 1,
  "max_tokens": 16,
  "ignore_eos": true,
  "messages": [{"role": "user", "content": "How to tell the time by looking at the sky?"}]
}')"
report "chat/completions (stream)" "$(printf '%s' "$STREAM" | grep -q '^data:' && echo true || echo false)" "$STREAM"

ANSWER="$(curl -sS -X POST \
  -H "Authorization: Bearer ${TOKEN}" \
  -H "Content-Type: application/json" \
  "https://${ENDPOINT_URL}/v1beta1/projects/${PROJECT_ID}/locations/${REGION}/endpoints/${ENDPOINT_ID}:predict" \
  -d '{
  "instances": [
    {
      "prompt": "How to tell the time by looking at the sky?",
      "temperature": 0,
      "top_p": 1,
      "max_tokens": 16,
      "ignore_eos": true,
    },
  ],
}')"
report ":predict (instances)" "$(printf '%s' "$ANSWER" | json '"true" if len(d["predictions"]) == 1 else "false"')" "$ANSWER"

STREAM="$(curl -sS -X POST \
  -N \
  --output - \
  -H "Authorization: Bearer ${TOKEN}" \
  -H "Content-Type: application/json" \
  "https://${ENDPOINT_URL}/v1beta1/projects/${PROJECT_ID}/locations/${REGION}/endpoints/${ENDPOINT_ID}:streamRawPredict" \
  -d '{
  "instances": [
    {
      "prompt": "How to tell the time by looking at the sky?",
      "temperature": 0,
      "top_p": 1,
      "max_tokens": 16,
      "ignore_eos": true,
      "stream": true
    }
  ]
}')"
report ":streamRawPredict" "$(printf '%s' "$STREAM" | grep -q '^data:' && echo true || echo false)" "$STREAM"

# the regional host refuses predictions for a dedicated endpoint (code that forgot the DNS name)
REFUSED="$(curl -sS -X POST -H "Authorization: Bearer ${TOKEN}" -H "Content-Type: application/json" \
  "${API}/v1/projects/${PROJECT_ID}/locations/${REGION}/endpoints/${ENDPOINT_ID}:predict" \
  -d '{"instances": [{"prompt": "hi", "max_tokens": 4}]}')"
report ":predict at the regional host is refused" \
  "$(printf '%s' "$REFUSED" | json '"true" if d["error"]["status"] == "FAILED_PRECONDITION" and "dedicated dns name" in d["error"]["message"] else "false"')" "$REFUSED"

# --- clean up: undeploy, delete the endpoint, delete the model
OP="$(curl -sS -X POST -H "Authorization: Bearer ${TOKEN}" -H "Content-Type: application/json" \
  "${API}/v1/${ENDPOINT}:undeployModel" -d '{"deployed_model_id": "'"${DEPLOYED_ID}"'"}')"
wait_operation "$(printf '%s' "$OP" | json 'd["name"]')" > /dev/null
OP="$(curl -sS -X DELETE -H "Authorization: Bearer ${TOKEN}" "${API}/v1/${ENDPOINT}")"
wait_operation "$(printf '%s' "$OP" | json 'd["name"]')" > /dev/null
OP="$(curl -sS -X DELETE -H "Authorization: Bearer ${TOKEN}" "${API}/v1/${MODEL}")"
wait_operation "$(printf '%s' "$OP" | json 'd["name"]')" > /dev/null
GONE="$(curl -sS -o /dev/null -w '%{http_code}' -H "Authorization: Bearer ${TOKEN}" "${API}/v1/${ENDPOINT}")"
report "undeployModel + DELETE endpoint + DELETE model" "$([ "$GONE" = 404 ] && echo true || echo false)" "$GONE"

# --- deploy, private endpoint (PSC): the page's VPC-SC body (its custom_model.model_id
# field is not in DeployRequest.CustomModel, which the API refuses; left out here)
OP="$(curl -sS -X POST \
  -H "Authorization: Bearer ${TOKEN}" \
  -H "Content-Type: application/json" \
  "${API}/v1beta1/projects/${PROJECT_ID}/locations/${REGION}:deploy" \
  -d '{
    "custom_model": {
      "gcs_uri": "'"${MODEL_GCS}"'"
    },
    "destination": "projects/'"${PROJECT_ID}"'/locations/'"${REGION}"'",
    "endpoint_config": {
      "endpoint_display_name": "psc-ep1",
      "private_service_connect_config": {
        "enablePrivateServiceConnect": true,
        "projectAllowlist": ["'"${PROJECT_ID}"'"]
      }
    },
    "deploy_config": {
      "dedicated_resources": {
        "machine_spec": {
          "machine_type": "g2-standard-24",
          "accelerator_type": "NVIDIA_L4",
          "accelerator_count": 2
        },
        "min_replica_count": 1,
        "max_replica_count": 1
      }
    }
  }')"
DONE="$(wait_operation "$(printf '%s' "$OP" | json 'd.get("name", "")')")"
PSC_ENDPOINT="$(printf '%s' "$DONE" | json 'd["response"]["endpoint"]')"
PSC_MODEL="$(printf '%s' "$DONE" | json 'd["response"]["model"]')"
EP_JSON="$(curl -sS -H "Authorization: Bearer ${TOKEN}" "${API}/v1beta1/${PSC_ENDPOINT}")"
report "PSC endpoint: privateEndpoints.serviceAttachment, no dedicatedEndpointDns" \
  "$(printf '%s' "$EP_JSON" | json '"true" if d["deployedModels"][0]["privateEndpoints"]["serviceAttachment"].startswith("projects/") and "dedicatedEndpointDns" not in d and d["privateServiceConnectConfig"]["enablePrivateServiceConnect"] else "false"')" "$EP_JSON"
PSC_DEPLOYED="$(printf '%s' "$EP_JSON" | json 'd["deployedModels"][0]["id"]')"
OP="$(curl -sS -X POST -H "Authorization: Bearer ${TOKEN}" -H "Content-Type: application/json" \
  "${API}/v1/${PSC_ENDPOINT}:undeployModel" -d '{"deployed_model_id": "'"${PSC_DEPLOYED}"'"}')"
wait_operation "$(printf '%s' "$OP" | json 'd["name"]')" > /dev/null
curl -sS -X DELETE -H "Authorization: Bearer ${TOKEN}" "${API}/v1/${PSC_ENDPOINT}" > /dev/null
sleep 1
curl -sS -X DELETE -H "Authorization: Bearer ${TOKEN}" "${API}/v1/${PSC_MODEL}" > /dev/null
exit "$FAILED"
