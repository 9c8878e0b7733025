#!/usr/bin/env bash
# Deploy PySandbox to Cloud Run with the settings of deploy/cloudrun/service.yaml.
#
#   PROJECT=my-project REGION=europe-west1 TAG=v1 deploy/cloudrun/deploy.sh [extra gcloud flags]
#
# The image must already be in Artifact Registry, for example:
#   gcloud artifacts repositories create pysandbox --repository-format docker --location "$REGION"
#   podman build --format docker -t "$REGION-docker.pkg.dev/$PROJECT/pysandbox/pysandbox:$TAG" .
#   podman push "$REGION-docker.pkg.dev/$PROJECT/pysandbox/pysandbox:$TAG"
#   (or: gcloud builds submit --tag "$REGION-docker.pkg.dev/$PROJECT/pysandbox/pysandbox:$TAG")
#
# The service is private: only principals with roles/run.invoker can call it, with an identity
# token (curl -H "Authorization: Bearer $(gcloud auth print-identity-token)" URL/execute ...).
# To open it to the internet, which lets anyone run code on your instances (within the
# sandbox, the rate limit and maxScale), deploy with PUBLIC=1, or afterwards:
#   gcloud run services add-iam-policy-binding pysandbox --region "$REGION" \
#     --member allUsers --role roles/run.invoker
# (An organization policy "Domain restricted sharing" may forbid allUsers.)
#
# Environment: PROJECT, REGION, TAG (required); SERVICE (default pysandbox); IMAGE (default the
# Artifact Registry path above); MAX_INSTANCES (default 10); SERVICE_ACCOUNT (recommended: a
# dedicated account with no roles); PUBLIC=1 to allow unauthenticated calls.
# The probe flags need a recent Google Cloud SDK; with an older one use
#   gcloud run services replace deploy/cloudrun/service.yaml
set -euo pipefail

: "${PROJECT:?set PROJECT to the Google Cloud project id}"
: "${REGION:?set REGION, e.g. europe-west1}"
SERVICE=${SERVICE:-pysandbox}
if [ -z "${IMAGE:-}" ]; then
  : "${TAG:?set TAG (the image tag) or IMAGE (the whole image reference)}"
  IMAGE="$REGION-docker.pkg.dev/$PROJECT/pysandbox/pysandbox:$TAG"
fi

# CONCURRENCY sandboxes per instance (one per vCPU), QUEUE_SIZE waiting (a burst of warm runs,
# a few ms each, waits rather than being refused); Cloud Run's per-instance concurrency is their
# sum, so an instance is never sent more than it can hold. Cloud Run sends SIGTERM and kills 10 s
# later: SHUTDOWN_GRACE_MS (8 s) lets runs in flight finish, with room to stop the rest and exit.
CPU=2
CONCURRENCY=2
QUEUE_SIZE=32
SHUTDOWN_GRACE_MS=8000
# --session-affinity: a client that keeps Cloud Run's cookie reaches the instance that holds its
# sessions, best effort (README "Sessions behind a load balancer"); /execute does not care.

args=(
  run deploy "$SERVICE"
  --project "$PROJECT"
  --region "$REGION"
  --image "$IMAGE"
  --execution-environment gen2
  --cpu "$CPU"
  --memory 2Gi
  --concurrency $((CONCURRENCY + QUEUE_SIZE))
  --timeout 60
  --port 8080
  --cpu-boost
  --session-affinity
  --min-instances 0
  --max-instances "${MAX_INSTANCES:-10}"
  --ingress all
  --set-env-vars "TRUST_PROXY=1,LIMIT_WALL_MS_MAX=20000,CONCURRENCY=$CONCURRENCY,QUEUE_SIZE=$QUEUE_SIZE,SHUTDOWN_GRACE_MS=$SHUTDOWN_GRACE_MS,LIMIT_WALL_MS=10000,LIMIT_MEMORY_MB=512"
  --startup-probe "httpGet.path=/readyz,httpGet.port=8080,periodSeconds=2,timeoutSeconds=2,failureThreshold=30"
  --liveness-probe "httpGet.path=/healthz,httpGet.port=8080,periodSeconds=30,timeoutSeconds=5,failureThreshold=3"
)
[ -z "${SERVICE_ACCOUNT:-}" ] || args+=(--service-account "$SERVICE_ACCOUNT")
if [ "${PUBLIC:-0}" = 1 ]; then args+=(--allow-unauthenticated); else args+=(--no-allow-unauthenticated); fi

gcloud "${args[@]}" "$@"

url=$(gcloud run services describe "$SERVICE" --project "$PROJECT" --region "$REGION" --format 'value(status.url)')
echo "deployed: $url"
echo "check:    curl -H \"Authorization: Bearer \$(gcloud auth print-identity-token)\" $url/readyz"
