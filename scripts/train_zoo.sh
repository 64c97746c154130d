#!/usr/bin/env bash
# Train (or continue) the QM9 zoo: five architectures x {gap, U0}, each on 20,000 molecules of the standard QM9
# split, in rounds of at most ROUND_MINUTES per model (every model advances each round; at least one epoch). Every
# run resumes from its zoo/<id>/train_state.pt, so this script can be stopped at any time and rerun in a later
# session, and each round leaves a usable model and card behind. Run from the repository root:
#   ROUNDS=1 ROUND_MINUTES=12 bash scripts/train_zoo.sh            # CPU, in the background with nice
#   DEVICE=cuda bash scripts/train_zoo.sh      # the GPU machine continues the same runs faster
# Another N_TRAIN (e.g. 110000, all of QM9's training pool) is another run: it refuses a folder holding a
# train_state.pt of a different split, so point it elsewhere (ZOO=zoo-full).
set -euo pipefail
PYTHON=${PYTHON:-.venv/bin/python}
DEVICE=${DEVICE:-cpu}
N_TRAIN=${N_TRAIN:-20000}
N_VAL=${N_VAL:-1000}
N_TEST=${N_TEST:-2000}
EPOCHS=${EPOCHS:-500}
PATIENCE=${PATIENCE:-30}
ROUNDS=${ROUNDS:-1}
ROUND_MINUTES=${ROUND_MINUTES:-12}
MODELS=${MODELS:-"painn:gap painn:U0 dimenetpp:gap dimenetpp:U0 schnet:gap schnet:U0 mace:gap mace:U0 visnet:gap visnet:U0"}
for round in $(seq 1 "$ROUNDS"); do
  for spec in $MODELS; do
    arch=${spec%%:*}; target=${spec##*:}
    echo "== round $round: $arch $target ($(date +%H:%M:%S))"
    "$PYTHON" -m cpd_core train --arch "$arch" --target "$target" --n-train "$N_TRAIN" --n-val "$N_VAL" \
      --n-test "$N_TEST" --epochs "$EPOCHS" --patience "$PATIENCE" --seed 0 --out "${ZOO:-zoo}/$arch-qm9-$target" \
      --device "$DEVICE" --max-minutes "$ROUND_MINUTES"
  done
done
"$PYTHON" -c "from cpd_core.training.cards import zoo_readme; import os; z = os.environ.get('ZOO', 'zoo'); open(f'{z}/README.md', 'w').write(zoo_readme(z))"
