#!/usr/bin/env bash
# Build the l4p 4D viewer's JavaScript (web/viewer/src/viewer.js + the npm package three) into ONE
# minified IIFE, l4p_framework/viz/static/viewer.bundle.js, and copy three's licence beside it
# (THREE_LICENSE). Both files are committed and shipped as package data: `l4p view` and
# `l4p run --viewer` inline the bundle into each viewer.html and never need node.
# Needs node >= 18 and npm; installs the pinned packages of web/viewer/package-lock.json (npm ci).
set -euo pipefail
cd "$(dirname "$0")/../web/viewer"
STATIC=../../l4p_framework/viz/static
npm ci --no-audit --no-fund --loglevel=error
node_modules/.bin/esbuild src/viewer.js --bundle --minify --format=iife --target=es2020 \
  --legal-comments=eof --log-level=warning --outfile="$STATIC/viewer.bundle.js"
cp node_modules/three/LICENSE "$STATIC/THREE_LICENSE"
three=$(node -p "require('./node_modules/three/package.json').version")
echo "built $STATIC/viewer.bundle.js ($(wc -c < "$STATIC/viewer.bundle.js") bytes, three $three)"
