#!/bin/sh
# An [[inputs.execd]] example: a long-running process printing one record of line protocol per
# second on stdout (a line is a record), until it is stopped (SIGTERM from the agent).
#   ticker,source=execd-ticker.sh n=<count>i,load1=<float>   (no timestamp: the time the line arrives)
set -u
trap 'exit 0' TERM INT
n=0
while :; do
    n=$((n + 1))
    read -r load1 _ < /proc/loadavg
    printf 'ticker,source=execd-ticker.sh n=%di,load1=%s\n' "$n" "$load1"
    sleep 1 &
    wait $!
done
