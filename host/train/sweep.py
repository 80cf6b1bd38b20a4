"""Training-fraction sweep (the paper's Table 5; docs/method.md) for the object classifier, and
the same protocol for the aperture regressor.

For each train+validation share (80 % down to 20 % of each object's trials; the rest is the test
set), split with the same seed, train the decoder and score it on that share's test trials
(accuracy and relaxed accuracy; or R2, Pearson r and RMSE). At 30 % and 20 % the validation share
of train+validation rises to 30 % and 40 % (the paper's rule, `host.data.split.validation_share`)
so every class keeps a validation trial.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from host.data.prepare import prepare
from host.files import StagedDir, atomic_path, write_json, write_text
from host.train.evaluate import evaluate
from host.train.fit import TrainConfig, train

SHARES = (0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2)
# The paper's figures on real data (train+val share: accuracy, relaxed), for the printed table.
PAPER = {0.8: (0.741, 0.983), 0.7: (0.701, 0.971), 0.6: (0.69, 0.937), 0.5: (0.628, 0.94),
         0.4: (0.638, 0.928), 0.3: (0.592, 0.875), 0.2: (0.51, 0.81)}


def sweep(recording: Path, config: TrainConfig, shares=SHARES, data_options: dict | None = None,
          on_row: Callable[[dict], None] | None = None) -> list[dict]:
    """Train and score one decoder of `config.task` per share; returns one row per share (each also
    handed to `on_row` as soon as it is measured: a sweep takes a while)."""
    rows = []
    for share in shares:  # one full training per share: the loop is over models, not data
        prepared = prepare(recording, train_val_share=share, seed=config.seed, **(data_options or {}))
        result = train(prepared, config)
        m = evaluate(result.model, prepared, config.task, "test")
        s = prepared.split
        row = {"train_val_share": share, "validation_share": s.validation_share,
               "train_trials": len(s.train), "validation_trials": len(s.validation),
               "test_trials": len(s.test), "test_windows": m["windows"], "epochs": result.epochs_run}
        if config.task == "aperture":
            row.update({k: m[k] for k in ("r2", "pearson_r", "rmse", "units")})
        else:
            row.update({"accuracy": m["accuracy"], "relaxed_accuracy": m["relaxed_accuracy"],
                        "paper_accuracy": PAPER.get(share, (None, None))[0],
                        "paper_relaxed": PAPER.get(share, (None, None))[1]})
        rows.append(row)
        if on_row:
            on_row(row)
    return rows


def plot(rows: list[dict], title: str, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shares = [100 * r["train_val_share"] for r in rows]
    fig, ax = plt.subplots(figsize=(6, 4))
    if "r2" in rows[0]:
        ax.plot(shares, [r["r2"] for r in rows], "o-", label="test R2")
        ax.plot(shares, [r["pearson_r"] for r in rows], "s-", label="test Pearson r")
        ax.set_ylabel("score")
        ax.set_ylim(min(0.0, *(r["r2"] for r in rows)), 1)
    else:
        ax.plot(shares, [100 * r["accuracy"] for r in rows], "o-", label="accuracy")
        ax.plot(shares, [100 * r["relaxed_accuracy"] for r in rows], "s-", label="relaxed accuracy")
        paper = [r for r in rows if r["paper_accuracy"] is not None]
        ax.plot([100 * r["train_val_share"] for r in paper], [100 * r["paper_accuracy"] for r in paper], "o:",
                color="grey", label="paper accuracy (real data)")
        ax.set_ylabel("test accuracy (%)")
        ax.set_ylim(0, 100)
    ax.set_xlabel("train + validation share of trials (%)")
    ax.invert_xaxis()
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left", fontsize=8)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)
    return path


def run_sweep(recording: Path, config: TrainConfig, models_dir: Path, name: str | None, shares=SHARES,
              data_options: dict | None = None, on_row: Callable[[dict], None] | None = None) -> Path:
    """Sweep, then write sweep.json, sweep.tsv and sweep.png into models/<name>/ atomically."""
    rows = sweep(recording, config, shares, data_options, on_row)
    session = Path(recording).name.split(".")[0]
    name = name or f"{session}-{config.task}-sweep"
    with StagedDir(models_dir / name) as staged:
        write_json(staged.path / "sweep.json", {"recording": str(recording), "config": config.__dict__, "rows": rows})
        write_text(staged.path / "sweep.tsv", "\t".join(rows[0]) + "\n" + "\n".join(
            "\t".join(json.dumps(v) for v in r.values()) for r in rows) + "\n")
        what = "aperture regressor" if config.task == "aperture" else "object classifier"
        plot(rows, f"{session}: {what} vs training share (seed {config.seed})", staged.path / "sweep.png")
        return staged.commit()
