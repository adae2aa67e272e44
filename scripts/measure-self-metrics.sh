#!/bin/bash
# Usage: scripts/measure-self-metrics.sh [BINARY] [REDIS_PORT]  (needs redis-server and curl)
# RSS and CPU of spillway (release) with six procfs inputs at 1 s, after 60 s:
# A: internal=false, no http_listen; B: internal on (default), no http_listen;
# C: internal on, http_listen, not scraped; D: internal on, http_listen, scraped every 1 s.
set -u
BIN=$(readlink -f "${1:-.build/release/spillway}"); M=$(mktemp -d); cd $M; RPORT=${2:-16390}
redis-server --port $RPORT --bind 127.0.0.1 --save '' --appendonly no > redis.log 2>&1 & RPID=$!
sleep 0.5
mk() { # dir internal http
  mkdir -p $M/$1
  { echo "[agent]"; echo "hostname = \"$1\""; echo 'interval = "1s"'; echo "data_dir = \"$M/$1/data\""; echo "internal = $2"
    [ -n "$3" ] && echo "http_listen = \"127.0.0.1:$3\""
    echo "[outputs.redis]"; echo "url = \"redis://127.0.0.1:$RPORT/0\""
    for i in cpu mem disk diskio net system; do echo "[[inputs.$i]]"; done; } > $M/$1/agent.toml
}
mk a false ""; mk b true ""; mk c true 19481; mk d true 19482
for x in a b c d; do $BIN run --config $M/$x/agent.toml 2> $M/$x/log & echo $! > $M/$x/pid; done
sleep 2
( end=$((SECONDS+58)); while [ $SECONDS -lt $end ]; do curl -s -o /dev/null http://127.0.0.1:19482/metrics; curl -s -o /dev/null http://127.0.0.1:19482/health; sleep 1; done ) &
SCRAPER=$!
sleep 58
wait $SCRAPER
TCK=$(getconf CLK_TCK)
for x in a b c d; do
  p=$(cat $M/$x/pid)
  rss=$(awk '/VmRSS/{print $2}' /proc/$p/status); hwm=$(awk '/VmHWM/{print $2}' /proc/$p/status)
  read ut st <<<"$(awk '{print $14, $15}' /proc/$p/stat)"
  start=$(awk '{print $22}' /proc/$p/stat); up=$(awk -v s=$start -v t=$TCK -v u=$(cut -d' ' -f1 /proc/uptime) 'BEGIN{printf "%.1f", u - s/t}')
  cpu=$(awk -v a=$ut -v b=$st -v t=$TCK -v up=$up 'BEGIN{printf "%.3f", (a+b)/t; }')
  pct=$(awk -v a=$ut -v b=$st -v t=$TCK -v up=$up 'BEGIN{printf "%.3f", 100*(a+b)/t/up }')
  thr=$(ls /proc/$p/task | wc -l)
  echo "$x rss_kib=$rss hwm_kib=$hwm cpu_s=$cpu uptime_s=$up cpu_pct=$pct threads=$thr"
done
for x in a b c d; do kill $(cat $M/$x/pid); done
sleep 2; kill $RPID; rm -rf $M
