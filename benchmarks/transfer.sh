#!/usr/bin/env bash
# Cold-start transfer benchmarks of BENCHMARKS.md: the interest model and every baseline on the
# same splits, plus ablations. Reads ../shared/data (or $MMI_SHARED_DATA); writes runs/bench/.
#   bash benchmarks/transfer.sh [amazon|ablations|cdrib|ml1m]...   (default: all, ~1.5 h on 2 cores)
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${MMI_SHARED_DATA:-../shared/data}
OUT=${OUT:-runs/bench}
mmi() { python -m multimodal_interest.cli -q "$@"; }
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}

amazon() {
  mmi fetch amazon-art-office --from-dir "$DATA"
  mmi embed amazon-art-office --store "$OUT/amazon/store"
  mmi evaluate amazon-art-office --source art --target office --both --sampled \
      --store "$OUT/amazon/store" --output "$OUT/amazon"
}
ablations() {  # the interest model alone: without the within-platform objective; with item ids
  for setting in within_weight=0 item_ids=true; do
    mmi evaluate amazon-art-office --source art --target office --both --methods interest-model,popularity \
        --store "$OUT/amazon/store" --set "$setting" --output "$OUT/amazon-${setting%%=*}"
  done
}
cdrib() {  # ids only: the model learns item id embeddings
  mmi fetch cdrib-game-video --from-dir "$DATA"
  mmi evaluate cdrib-game-video --source game --target video --both --sampled --split cold20_seed900 \
      --methods interest-model,popularity,item-knn,emcdr,ptupcdr,cmf --output "$OUT/cdrib-game-video"
}
ml1m() {  # SYNTHETIC platforms: MovieLens-1M cut by genre
  mmi fetch movielens-1m --from-dir "$DATA"
  mmi embed movielens-1m --store "$OUT/ml1m/store"
  mmi evaluate movielens-1m --source comedy --target drama --both --split cold20_seed900 \
      --store "$OUT/ml1m/store" --output "$OUT/ml1m"
}

for job in "${@:-amazon ablations cdrib ml1m}"; do
  for j in $job; do echo "== $j $(date -u +%FT%TZ)"; "$j"; done
done
