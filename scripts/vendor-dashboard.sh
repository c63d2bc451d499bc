#!/usr/bin/env bash
# Reproduces src/shoal/dashboard/static/vendor/ from the npm registry: the built
# files of the dashboard's two JavaScript libraries and their licences, at pinned
# versions. Needs npm (only here: running shoal needs neither Node.js nor a network).
set -euo pipefail
cd "$(dirname "$0")/.."

CYTOSCAPE=3.34.4
UPLOT=1.6.32
VENDOR=src/shoal/dashboard/static/vendor

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm pack --silent "cytoscape@$CYTOSCAPE" "uplot@$UPLOT" >/dev/null)
for tarball in "$work"/*.tgz; do
    name=$(basename "$tarball" .tgz)
    mkdir -p "$work/$name"
    tar -xzf "$tarball" -C "$work/$name" --strip-components=1
done

rm -rf "$VENDOR"
mkdir -p "$VENDOR/cytoscape" "$VENDOR/uplot"
cp "$work/cytoscape-$CYTOSCAPE/dist/cytoscape.min.js" "$VENDOR/cytoscape/"
cp "$work/cytoscape-$CYTOSCAPE/LICENSE" "$VENDOR/cytoscape/LICENSE"
cp "$work/uplot-$UPLOT/dist/uPlot.iife.min.js" "$work/uplot-$UPLOT/dist/uPlot.min.css" "$VENDOR/uplot/"
cp "$work/uplot-$UPLOT/LICENSE" "$VENDOR/uplot/LICENSE"
cat > "$VENDOR/VERSIONS" <<VERSIONS
cytoscape $CYTOSCAPE (MIT) https://www.npmjs.com/package/cytoscape
uplot $UPLOT (MIT) https://www.npmjs.com/package/uplot
VERSIONS
echo "vendored cytoscape $CYTOSCAPE and uplot $UPLOT into $VENDOR"
