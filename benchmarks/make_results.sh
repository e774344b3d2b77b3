#!/usr/bin/env bash
# Assemble benchmarks/RESULTS.md from the per-issue sections in benchmarks/results/.
set -euo pipefail
cd "$(dirname "$0")"
{
  echo "# edgekit: measured results"
  echo
  echo "Each section says the machine, the command and the figures; speed is compared as ratios measured in the same run."
  echo "Sources: \`benchmarks/results/*.md\` (this file is assembled by \`benchmarks/make_results.sh\`)."
  for f in results/[A-Z]_*.md; do
    echo; echo "---"; echo
    sed -E 's/^(#+) /\1# /' "$f"
  done
} > RESULTS.md.tmp && mv RESULTS.md.tmp RESULTS.md
