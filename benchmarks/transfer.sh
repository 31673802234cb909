#!/usr/bin/env bash
# Cold-start transfer benchmarks of BENCHMARKS.md: the interest model and every baseline on the
# same splits, plus ablations. Reads ../shared/data (or $MMI_SHARED_DATA); writes runs/bench/.
#   bash benchmarks/transfer.sh [amazon|blend|ablations|lastfm|cdrib|ml1m|baselines]...   (default: all, ~6 h on 2 cores)
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${MMI_SHARED_DATA:-../shared/data}
OUT=${OUT:-runs/bench}
mmi() { python -m multimodal_interest.cli -q "$@"; }
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}

amazon_store() {  # embedding is resumable: a finished store is reused, not re-encoded
  mmi fetch amazon-art-office --from-dir "$DATA"
  mmi embed amazon-art-office --store "$OUT/amazon/store"
}
amazon() {
  amazon_store
  mmi evaluate amazon-art-office --source art --target office --both --sampled \
      --store "$OUT/amazon/store" --output "$OUT/amazon"
}
blend() {  # the interest model + item kNN blend beside its parts (the full amazon job runs it too)
  amazon_store
  mmi evaluate amazon-art-office --source art --target office --both --sampled \
      --methods interest-model,item-knn,popularity,interest-model+item-knn \
      --store "$OUT/amazon/store" --output "$OUT/amazon-blend"
}
ablations() {  # the fusion transformer (the default before the linear model) beside the two best baselines
  amazon_store
  mmi evaluate amazon-art-office --source art --target office --both --methods interest-model,item-knn,popularity \
      --store "$OUT/amazon/store" --set kind=transformer --output "$OUT/amazon-transformer"
}
lastfm() {  # one platform, the authors' labels: the model on tag text, audio, both
  mmi fetch lastfm-2k --from-dir "$DATA"
  mmi embed lastfm-2k --store "$OUT/lastfm/store" --modalities minilm_l6,vggish
  mmi evaluate lastfm-2k --source lastfm --target lastfm --store "$OUT/lastfm/store" --modalities minilm_l6 \
      --content-modality minilm_l6 --output "$OUT/lastfm-text"
  for mods in vggish minilm_l6,vggish; do
    mmi evaluate lastfm-2k --source lastfm --target lastfm --store "$OUT/lastfm/store" --modalities "$mods" \
        --methods interest-model,item-knn --output "$OUT/lastfm-${mods/,/+}"
  done
}
cdrib() {  # ids only: the model's blocks are the source item ids and the constant
  mmi fetch cdrib-game-video --from-dir "$DATA"
  mmi evaluate cdrib-game-video --source game --target video --both --sampled --split cold20_seed900 \
      --methods interest-model,popularity,item-knn,emcdr,ptupcdr,cmf --output "$OUT/cdrib-game-video"
}
ml1m() {  # SYNTHETIC platforms: MovieLens-1M cut by genre
  mmi fetch movielens-1m --from-dir "$DATA"
  mmi embed movielens-1m --store "$OUT/ml1m/store"
  mmi evaluate movielens-1m --source comedy --target drama --split cold20_seed900 \
      --store "$OUT/ml1m/store" --output "$OUT/ml1m"
}

# The strong simple baselines (EASE, RP3beta, user kNN, tuned item kNN, iALS, BM25 kNN) beside
# popularity, on every dataset; the model's rows of BENCHMARKS.md come from the jobs above.
STRONG=popularity,item-knn,ease,ease-merged,rp3beta,user-knn,ials,bm25-knn
baselines() {
  amazon_store
  mmi evaluate amazon-art-office --source art --target office --both --sampled --methods "$STRONG" \
      --store "$OUT/amazon/store" --output "$OUT/amazon-baselines"
  mmi fetch cdrib-game-video --from-dir "$DATA"
  mmi evaluate cdrib-game-video --source game --target video --both --sampled --split cold20_seed900 \
      --methods "${STRONG%,bm25-knn}" --output "$OUT/cdrib-game-video-baselines"  # ids only: no text
  mmi fetch movielens-1m --from-dir "$DATA"
  mmi embed movielens-1m --store "$OUT/ml1m/store"
  mmi evaluate movielens-1m --source comedy --target drama --split cold20_seed900 --methods "$STRONG" \
      --store "$OUT/ml1m/store" --output "$OUT/ml1m-baselines"
  mmi fetch lastfm-2k --from-dir "$DATA"
  mmi embed lastfm-2k --store "$OUT/lastfm/store" --modalities minilm_l6,vggish
  mmi evaluate lastfm-2k --source lastfm --target lastfm --store "$OUT/lastfm/store" --modalities minilm_l6 \
      --content-modality minilm_l6 --methods "$STRONG" --output "$OUT/lastfm-baselines"
}

for job in "${@:-amazon ablations lastfm cdrib ml1m baselines}"; do
  for j in $job; do echo "== $j $(date -u +%FT%TZ)"; "$j"; done
done
