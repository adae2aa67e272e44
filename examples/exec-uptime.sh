#!/bin/sh
# An [[inputs.exec]] example: prints one record of Influx line protocol and exits 0.
#   uptime seconds=<float>,idle_seconds=<float>,users=<int>i
# No timestamp: the record gets the collection's tick. Reads /proc/uptime (Linux).
set -eu
read -r up idle _ < /proc/uptime
users=$(who 2>/dev/null | wc -l | tr -d ' ')
printf 'uptime,source=exec-uptime.sh seconds=%s,idle_seconds=%s,users=%si\n' "$up" "$idle" "${users:-0}"
