#!/usr/bin/env bash
# Writes every measurement table the docs include (docs/tables/*.md); the benchmark's figures go
# to $TMPDIR. Each line is one command; run one alone to refresh its table.
# Run from the repository's root, with nothing else on the machine: the tables report seconds.
set -euo pipefail
run() { echo "+ python -m captum_masks $*" >&2; python -m captum_masks "$@"; }

# Speed and scale (docs/guide/speed.md, docs/guide/whole_datasets.md)
run speed --threads 2 --table docs/tables/speed.md --methods MeaningfulPerturbation NeuroMaskAttr GuidedFeatureInversion ExtremalPerturbation AmortizedExplainer IntegratedGradients Occlusion LayerGradCam
run scaling --threads 2 --table docs/tables/scaling.md --methods MeaningfulPerturbation NeuroMaskAttr ExtremalPerturbation IntegratedGradients

# Held-out quality (docs/guide/evaluation.md, the method pages); the Lite0 photo tables also run
# the warm starts (optimization.start=auto) and GuidedFeatureInversion's 30 stage-2 iterations
run benchmark --suite photos --n 12 --threads 1 --table docs/tables/photos.md --out "${TMPDIR:-/tmp}/benchmark_photos.png" \
  --methods MeaningfulPerturbation/deletion 'MeaningfulPerturbation/deletion[optimization.start=auto]' MeaningfulPerturbation/preservation NeuroMaskAttr 'NeuroMaskAttr[optimization.start=auto]' GuidedFeatureInversion 'GuidedFeatureInversion[optimization.n_iter=30]' GuidedFeatureInversion/inversion ExtremalPerturbation 'ExtremalPerturbation[optimization.start=auto]' RISE Saliency IntegratedGradients Occlusion FeatureAblation LayerGradCam
run benchmark --suite photos-pairs --n 8 --threads 1 --table docs/tables/photos-pairs.md --out "${TMPDIR:-/tmp}/benchmark_photos-pairs.png" \
  --methods MeaningfulPerturbation/deletion 'MeaningfulPerturbation/deletion[optimization.start=auto]' MeaningfulPerturbation/preservation NeuroMaskAttr 'NeuroMaskAttr[optimization.start=auto]' GuidedFeatureInversion 'GuidedFeatureInversion[optimization.n_iter=30]' GuidedFeatureInversion/inversion ExtremalPerturbation 'ExtremalPerturbation[optimization.start=auto]' RISE Saliency IntegratedGradients Occlusion FeatureAblation LayerGradCam
run benchmark --suite photos-lite2 --n 12 --threads 2 --table docs/tables/photos-lite2.md --out "${TMPDIR:-/tmp}/benchmark_photos-lite2.png"
run benchmark --suite photos-pairs-lite2 --n 8 --threads 2 --table docs/tables/photos-pairs-lite2.md --out "${TMPDIR:-/tmp}/benchmark_photos-pairs-lite2.png"
run benchmark --suite synthetic --n 100 --threads 2 --table docs/tables/synthetic.md --out "${TMPDIR:-/tmp}/benchmark_synthetic.png"
run benchmark --suite synthetic-pairs --n 100 --threads 2 --table docs/tables/synthetic-pairs.md --out "${TMPDIR:-/tmp}/benchmark_synthetic-pairs.png"

# Calibration: each method's defaults beside the paper's setting of each departure (the method pages)
run benchmark --suite photos-pairs --split calibration --n 6 --threads 1 --table docs/tables/calibration-meaningful-perturbation.md --out "${TMPDIR:-/tmp}/calibration.png" --methods \
  MeaningfulPerturbation/deletion 'MeaningfulPerturbation/deletion[l1_weight=0.08]' 'MeaningfulPerturbation/deletion[l1_weight=0.4]' \
  'MeaningfulPerturbation/deletion[optimization.tolerance=None]'
run benchmark --suite photos-pairs --split calibration --n 6 --threads 2 --table docs/tables/calibration-neuromask.md --out "${TMPDIR:-/tmp}/calibration.png" --methods \
  NeuroMaskAttr 'NeuroMaskAttr[mask.block=1]' 'NeuroMaskAttr[mask.temperature=1.0]' \
  'NeuroMaskAttr[sparse_weight=0.00011]' 'NeuroMaskAttr[sparse_weight=0.00011 optimization.n_iter=300]' \
  'NeuroMaskAttr[mask.temperature=0.3 mask.init_range=(-10.0,10.0) optimization.lr=0.03]'
run benchmark --suite photos-pairs --split calibration --n 6 --threads 2 --table docs/tables/calibration-guided-feature-inversion.md --out "${TMPDIR:-/tmp}/calibration.png" --methods \
  GuidedFeatureInversion 'GuidedFeatureInversion[target_start=inversion]' \
  'GuidedFeatureInversion[area_weight=0.0]' 'GuidedFeatureInversion[optimization.lr=0.01]'
run benchmark --suite photos --split calibration --n 6 --threads 2 --table docs/tables/calibration-extremal-perturbation.md --out "${TMPDIR:-/tmp}/calibration.png" --methods \
  ExtremalPerturbation 'ExtremalPerturbation[mask.margin=0.0]' \
  'ExtremalPerturbation[optimization.n_iter=300 optimization.lr=0.05]'

# Other input kinds, transformers and the trained explainer (docs/guide/input_kinds.md,
# docs/guide/transformers.md, the AmortizedExplainer page)
run tabular --split held-out --threads 1 --table docs/tables/tabular.md
run kinds --split held-out --n 40 --threads 1 --table docs/tables/kinds.md
run kinds --kinds vit-32 text --split held-out --n 40 --threads 1 --table docs/tables/transformers.md
run class-masking --n 200 --threads 2 --table docs/tables/class-masking.md
run explainer-epochs --suite synthetic-pairs --epochs 6 --threads 2 --table docs/tables/explainer-epochs.md
run explainer-epochs --suite photo-objects --epochs 5 --threads 2 --table docs/tables/explainer-epochs-photo-objects.md
