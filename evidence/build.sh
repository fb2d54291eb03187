#!/usr/bin/env bash
# Build evidence/pi-chat-page.md from a fresh pibridge: a Showboat document
# with Rodney screenshots of the PI page, then check it with `showboat verify`.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-.venv/bin/python}
BIN=$(dirname "$PYTHON")
SHOWBOAT="$BIN/showboat"
DOC=evidence/pi-chat-page.md
export PIBRIDGE_EVIDENCE_RUN=${PIBRIDGE_EVIDENCE_RUN:-/tmp/pibridge-evidence}
RUN=$PIBRIDGE_EVIDENCE_RUN
step() { "$SHOWBOAT" exec "$DOC" bash "$PYTHON evidence/demo.py $*"; }
image() { "$SHOWBOAT" image "$DOC" "![$2]($RUN/$1.png)"; }
note() { "$SHOWBOAT" note "$DOC" "$1"; }

trap '"$PYTHON" evidence/demo.py down >/dev/null 2>&1 || true' EXIT
rm -f "$DOC" evidence/*.png

"$SHOWBOAT" init "$DOC" "pibridge: the PI chat page"
note "A fresh pibridge (offline model, new state directory) and a headless Chromium driven by Rodney. The page is opened the way the server prints it, with \`?token=...\`; the server trades the token for an HttpOnly cookie and redirects, so the token leaves the address bar."
step up
step open agent_mode=pi
step layout
step shot expanded
image expanded "PI panel expanded at ?agent_mode=pi, before any message"

note "A backend chat reply at \`?agent_mode=pi\`: pi runs on the server in the workspace; the page only streams its events. A tool call is shown as it runs."
step send "'Hello pi, please run [bash: echo hello]'"
step reply
step shot reply
image reply "A streamed reply with a bash tool call in the right rail"

note "Sessions: create a second one, switch back to the first, stop it. A stopped session says so and resumes on the next message."
step new
step send "'This is the second session'"
step sessions
step switch 0
step sessions
step stop
step sessions
step shot stopped
image stopped "The first session, stopped"

note "Mid-stream: a slow, long reply. The composer stays pinned at the bottom of the rail while the message list scrolls."
step send-nowait "'Stream a long answer [slow: 25] [long: 160]'"
step wait-text "'line 30 of 160'"
step layout
step shot streaming
image streaming "Mid-stream: composer at the bottom, the list scrolling"
step wait-text "'line 160 of 160'"
step layout

note "The rail collapses (the choice is kept in localStorage) and expands again."
step toggle
step layout
step shot collapsed
image collapsed "PI panel collapsed"
step open
step layout
step toggle
step layout
step down

"$SHOWBOAT" verify "$DOC"
echo "evidence written to $DOC and verified"
