#!/usr/bin/env bash
# Installs better-sqlite3 from the npm registry into tests/node/node_modules
# (built from source when no prebuilt binary can be fetched), then runs the
# Node client test.
set -euo pipefail
cd "$(dirname "$0")"
if ! node -e "require('better-sqlite3')" >/dev/null 2>&1; then
    npm install --no-audit --no-fund --silent >/dev/null 2>&1 || true
    # npm 11 runs no install scripts until they are approved.
    npm install-scripts approve better-sqlite3 >/dev/null 2>&1 || true
    npm rebuild better-sqlite3 >/dev/null 2>&1
fi
node client.test.js
