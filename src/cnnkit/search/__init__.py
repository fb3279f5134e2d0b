"""Architecture search on the user's data and compute budget: `cnnkit search` (cnnkit.cli.search).

    from cnnkit.search import search
    result = search("searches/regnet1", space="regnet", strategy="random", budget="10m",
                    constraints=["macs<=19M"])
    result["winner"]["spec_file"]        # train it: cnnkit train --config searches/regnet1/winner_recipe.yaml

Spaces (cnnkit.search.spaces, .scaling, .cells): regnet (RegNetX design space), scaling (EfficientNet's
compound scaling of FastNet), cells (a DARTS cell space, first-order DARTS or random cells).
Strategies (cnnkit.search.strategies): random, evolution (aging), halving (successive halving).
Every candidate is trained by the classify task's setup and the Trainer (cnnkit.search.proxy).

The cluster route: the search is one process (or --workers processes on one machine). For several machines,
use an existing engine rather than this loop: Optuna with a shared RDB storage (each machine runs
`optuna.create_study(storage="postgresql://...", load_if_exists=True)` and an objective that calls
`cnnkit.search.proxy.train_candidate` on `RegNetSpace().spec(arch, 28)` written as YAML), or Ray Tune with the
same objective. Neither is a dependency of cnnkit.
"""

from cnnkit.search.run import search  # noqa: F401
