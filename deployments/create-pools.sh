#!/usr/bin/env bash
# Create (or update) the work pools prefect.yaml deploys to, so that
# `prefect --no-prompt deploy --all` works against a fresh server. Idempotent.
#
#   deployments/create-pools.sh                    # local: both pools are process pools
#   COMPRESS_POOL_TYPE=ecs deployments/create-pools.sh   # compression on ECS (needs prefect-aws)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
prefect="${PREFECT:-prefect}"

create() {  # name type template
    $prefect --no-prompt work-pool create "$1" --type "$2" --base-job-template "$here/work-pools/$3.json" --overwrite
}

create dicom-process "${PROCESS_POOL_TYPE:-process}" "${PROCESS_POOL_TEMPLATE:-process}"
create dicom-compress "${COMPRESS_POOL_TYPE:-process}" "${COMPRESS_POOL_TEMPLATE:-${COMPRESS_POOL_TYPE:-process}}"
