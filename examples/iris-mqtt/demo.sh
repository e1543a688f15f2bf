#!/usr/bin/env bash
# Compile the iris MQTT pipeline, start a mosquitto broker and the artifact,
# send a request with mosquitto_pub and read the answer with mosquitto_sub.
# Needs mosquitto and mosquitto-clients on PATH (Debian: apt-get install
# mosquitto mosquitto-clients; or the folder scripts/test-tools.sh prints).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="${1:-dist}"
port="${KBUILD_DEMO_MQTT_PORT:-18830}"
http="${KBUILD_DEMO_PORT:-8080}"
work="$(mktemp -d)"

artifact="$(python3 -m kbuild -q "$here/pipeline.yaml" -o "$out")"
echo "built $artifact"

printf 'listener %s 127.0.0.1\nallow_anonymous true\n' "$port" > "$work/mosquitto.conf"
mosquitto -c "$work/mosquitto.conf" > "$work/mosquitto.log" 2>&1 &
broker=$!
KBUILD_MQTT_BROKER="127.0.0.1:$port" python3 "$artifact" --http-port "$http" &
server=$!
trap 'kill $server $broker 2>/dev/null; wait $server $broker 2>/dev/null; rm -rf "$work"' EXIT
for _ in $(seq 1 120); do  # ready means subscribed
  if python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$http/v2/health/ready')" 2>/dev/null; then
    break
  fi
  sleep 0.5
done
mosquitto_sub -h 127.0.0.1 -p "$port" -t iris/responses -C 1 -W 30 > "$work/answer" &
reader=$!
sleep 0.5
echo 'mosquitto_pub -t iris/requests/demo -m {"id": "demo-1", "features": [[5.1, 3.5, 1.4, 0.2]]}'
mosquitto_pub -h 127.0.0.1 -p "$port" -q 1 -t iris/requests/demo -m '{"id": "demo-1", "features": [[5.1, 3.5, 1.4, 0.2]]}'
wait $reader
cat "$work/answer"
