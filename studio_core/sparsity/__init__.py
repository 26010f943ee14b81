"""Step 5, Pruning Aware Init: 2:4 structured sparsity that survives training and merge.

- `pattern`: masks from scores, the violation checker, magnitude and Wanda scores
- `prune`:   which layers, calibration (Wanda), masks on the base weights, digests, masks on disk
- `delta`:   the adapter's update kept inside the mask during training and in peft's merge
- `storage`: compressed 2:4 storage (kept values + 2-bit positions), lossless
- `run`:     what the run's stages call (Training Init prunes before the adapter is built; step 5 records and
             verifies it; Training Exec's merge refuses any violation; the compressed merged model)

The config's checks for pruning (which methods and targets can keep 2:4) are `config.pruning_problems`.
"""

from __future__ import annotations
