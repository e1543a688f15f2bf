#!/usr/bin/env bash
# Compile the iris pipeline into a zipapp, start its server, send it a request.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="${1:-dist}"
port="${KBUILD_DEMO_PORT:-8080}"

artifact="$(python3 -m kbuild -q "$here/pipeline.yaml" -o "$out")"
echo "built $artifact"

python3 "$artifact" serve --http-port "$port" &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null' EXIT
for _ in $(seq 1 120); do
  if python3 -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:$port/v2/health/ready')" 2>/dev/null; then
    break
  fi
  sleep 0.5
done
echo "POST /predict {\"features\": [[5.1, 3.5, 1.4, 0.2]]}"
python3 -c "
import json, urllib.request
req = urllib.request.Request('http://127.0.0.1:$port/predict', data=json.dumps({'features': [[5.1, 3.5, 1.4, 0.2]]}).encode(),
                             headers={'Content-Type': 'application/json'})
print(urllib.request.urlopen(req).read().decode())
"
