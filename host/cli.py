"""The `grasptpu` command: one subcommand per pipeline stage, host -> models/ -> board."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click

from host.errors import GrasptpuError

DEFAULT_DATA_DIR = Path("data")


class _Group(click.Group):
    """Turns a GrasptpuError into one line on stderr and exit code 2, never a traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except GrasptpuError as exc:
            click.echo(f"grasptpu: error: {exc}", err=True)
            sys.exit(2)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
def main() -> None:
    """grasptpu: monkey motor-cortex spikes -> BiLSTM grasp decoder -> Coral Edge TPU board.

    Stages: synth (or your own Neo file) -> prepare -> train -> quantize -> compile -> deploy -> bench.
    """


@main.command()
@click.option("--session", "sessions", multiple=True, metavar="NAME",
              help="Session(s) to write (MRec40 MRec41 MRec42 ZRec32 ZRec35 ZRec50). Default: the embedded default, ZRec50.")
@click.option("--all", "all_sessions", is_flag=True, help="Write all six sessions.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=DEFAULT_DATA_DIR,
              help="Folder for the <session>.neo.mat files.")
@click.option("--seed", type=int, default=0, help="Generator seed (each session also mixes in its name).")
@click.option("--difficulty", type=click.FloatRange(min=0.0, min_open=True), default=1.0,
              help="1 = default (hard but learnable); higher = weaker object tuning, more noise.")
@click.option("--trials", type=click.IntRange(min=1), default=None, help="Override the trial count (small test sessions).")
@click.option("--units", type=click.IntRange(min=1), default=None, help="Override the unit count (small test sessions).")
def synth(sessions: tuple[str, ...], all_sessions: bool, out: Path, seed: int, difficulty: float,
          trials: int | None, units: int | None) -> None:
    """Write synthetic recording sessions as NeoMatlabIO `.neo.mat` files (the embedded default data).

    The files have the real recordings' structure (one Segment per trial, annotations obj and
    correct, events[0] with phase labels) and are read by neo.io.NeoMatlabIO unchanged.
    """
    from tqdm import tqdm

    from host import matfile, synth as synth_mod

    names = list(synth_mod.SESSIONS) if all_sessions else (list(sessions) or [synth_mod.DEFAULT_SESSION])
    out.mkdir(parents=True, exist_ok=True)
    for name in names:
        t0 = time.perf_counter()
        rec = synth_mod.generate(name, seed=seed, difficulty=difficulty, n_trials=trials, n_units=units,
                                 progress=True)
        t1 = time.perf_counter()
        path = out / f"{name}.neo.mat"
        with tqdm(total=rec.n_trials, desc=f"writing {path.name}", unit="trial", disable=None, leave=False) as bar:
            matfile.save_recording(rec, path, bar.update)
        t2 = time.perf_counter()
        size_mb = path.stat().st_size / 1e6
        click.echo(f"{path}: {rec.n_units} units x {rec.n_trials} trials, {len(rec.spike_times_s)} spikes, "
                   f"{size_mb:.0f} MB (generate {t1 - t0:.1f} s, write {t2 - t1:.1f} s)")


@main.command()
@click.argument("recording", type=click.Path(path_type=Path))
@click.option("--bin-ms", type=click.FloatRange(min=1.0), default=40.0, help="Bin width in milliseconds.")
@click.option("--window-bins", type=click.IntRange(min=1), default=12, help="Bins per window (12 x 40 ms = 480 ms).")
@click.option("--label-bin", type=click.Choice(["last", "next"]), default="last",
              help="Label a window by its last bin (paper) or the bin after it (reference scripts).")
@click.option("--train-share", type=click.FloatRange(0.05, 0.95), default=0.8,
              help="Share of each object's trials for train+validation; the rest is test.")
@click.option("--val-share", type=click.FloatRange(0.05, 0.95), default=None,
              help="Share of train+validation used for validation. Default: METHOD's rule (20 %, 30 % at a 30 % train share, 40 % at 20 %).")
@click.option("--seed", type=int, default=0, help="Split seed.")
@click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Binned-session cache. Default: $GRASPTPU_CACHE or ~/.cache/grasptpu.")
@click.option("--no-cache", is_flag=True, help="Always load and bin; neither read nor write the cache.")
def prepare(recording: Path, bin_ms: float, window_bins: int, label_bin: str, train_share: float,
            val_share: float | None, seed: int, cache_dir: Path | None, no_cache: bool) -> None:
    """Load a Neo recording, bin it, split trials and cut windows; print what came out.

    RECORDING is a Neo file: .mat (NeoMatlabIO layout), .nix or .pkl (Neo pickle).
    """
    from host.prepare import prepare as run, summary

    t0 = time.perf_counter()
    prepared = run(recording, bin_ms=bin_ms, window_bins=window_bins, label_bin=label_bin,
                   train_val_share=train_share, val_share=val_share, seed=seed, cache_dir=cache_dir,
                   use_cache=not no_cache, progress=True)
    click.echo(summary(prepared))
    timing = ", ".join(f"{k} {v:.2f} s" for k, v in prepared.seconds.items())
    click.echo(f"  time: {time.perf_counter() - t0:.2f} s ({timing})")


if __name__ == "__main__":
    main()
