"""The `grasptpu` command: one subcommand per pipeline stage, host -> models/ -> board."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import click
import numpy as np

from device.contract import TASKS, DeviceError
from host.errors import GrasptpuError

DEFAULT_DATA_DIR = Path("data")
SEED_MAX = 2**32 - 1  # numpy's generators (and KerasTuner's) take seeds of 0 to 2**32 - 1
# TensorFlow's C++ INFO/WARNING lines (CPU features, MLIR passes) bury the figures a user reads;
# errors still show. Set TF_CPP_MIN_LOG_LEVEL=0 to see everything.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _options(*options):
    """One decorator applying click options in the order listed."""
    def apply(func):
        for option in reversed(options):
            func = option(func)
        return func
    return apply


class _DataOption(click.Option):
    """An option declared by `data_options`; `_data_args` hands each one on to a local tune-worker."""


def data_options(func):
    """Options that decide how a recording becomes windows (shared by every training command).

    The two options on reading an untrusted file arrive packed as one `reading` dict (passed on to
    `host.data.prepare.prepare`), so each command's signature lists them once."""
    import functools

    from host.data.binning import MAX_TRIAL_BINS

    option = functools.partial(click.option, cls=_DataOption)
    options = [
        option("--bin-ms", type=click.FloatRange(min=1.0), default=40.0, help="Bin width in milliseconds."),
        option("--label-bin", type=click.Choice(["last", "next"]), default="last",
               help="Window label: its last bin (paper) or the bin after it (reference scripts)."),
        option("--seed", type=click.IntRange(0, SEED_MAX), default=0, help="Seed for the split, the weights and the batch order."),
        option("--allow-pickle", is_flag=True,
               help="Read a Neo pickle (.pkl): unpickling runs any code the file holds, so only for files you wrote."),
        option("--max-trial-bins", type=click.IntRange(min=1), default=MAX_TRIAL_BINS,
               help="Refuse a trial longer than this many bins (a damaged t_stop would otherwise fill memory)."),
        option("--layout", "layout_file", type=click.Path(path_type=Path), default=None,
               help="Layout file (TOML) saying what the recording's trials mean: class annotation, region of "
                    "interest events, trials to keep (docs/layouts.md). Default: the paper's layout."),
    ]

    @functools.wraps(func)
    def packed(*args, allow_pickle: bool, max_trial_bins: int, layout_file: Path | None, **kwargs):
        from host.data.layout import load_layout

        return func(*args, reading={"allow_pickle": allow_pickle, "max_trial_bins": max_trial_bins,
                                    "layout": load_layout(layout_file)}, **kwargs)

    return _options(*options)(packed)


def _data_args(ctx: click.Context) -> list[str]:
    """The data options `ctx`'s command received, as arguments that give another command the same
    ones (a local tune-worker): derived from the declarations, so a new data option is never left out."""
    args = []
    for param in ctx.command.params:
        value = ctx.params.get(param.name)
        if not isinstance(param, _DataOption) or value is None:
            continue
        if param.is_flag:
            args += [param.opts[0]] if value else param.secondary_opts[:1]
        else:
            args += [param.opts[0], str(value)]
    return args


def search_options(func):
    """Options of a hyperparameter search, the chief's (tune) and each worker's (tune-worker) alike."""
    return _options(
        click.option("--task", type=click.Choice(TASKS), default="object",
                     help="The decoder to tune; classifiers are scored by validation accuracy, aperture by validation "
                          "loss."),
        click.option("--max-trials", type=click.IntRange(min=1), default=20, help="Tuner trial budget (models trained)."),
        click.option("--epochs", type=click.IntRange(min=1), default=30, help="Maximum epochs per trial."),
    )(func)


def _config_options(names: tuple[str, ...] | None = None) -> list:
    """One click option per TrainConfig field that declares itself an option (its default, help
    text and bounds live on the field, host.train.config.TrainConfig, and nowhere else); only the
    fields `names` if given."""
    import dataclasses

    from host.train.config import TrainConfig

    options = []
    for f in dataclasses.fields(TrainConfig):
        if "help" not in f.metadata or (names is not None and f.name not in names):
            continue
        flag = "--" + f.name.replace("_", "-")
        if f.type in (bool, "bool"):
            options.append(click.option(f"{flag}/--no-{flag[2:]}", f.name, default=f.default, help=f.metadata["help"]))
        elif "choices" in f.metadata:
            options.append(click.option(flag, f.name, type=click.Choice(f.metadata["choices"]), default=f.default,
                                        show_default=True, help=f.metadata["help"]))
        else:
            options.append(click.option(flag, f.name, type=click.IntRange(min=f.metadata.get("min")), default=f.default,
                                        help=f.metadata["help"]))
    return options


def training_options(func):
    """Options of a training run (train, sweep): the hyperparameters' sources and TrainConfig's options."""
    options = [
        click.option("--models-dir", type=click.Path(file_okay=False, path_type=Path), default=Path("models")),
        click.option("--preset", type=click.Choice(["auto", "one-layer", "two-layer", "one-layer-light"]), default="auto",
                     help="One of the paper's two selected hyperparameter sets (1 or 2 BiLSTM layers), or one-layer-light "
                          "(ours: dropout 0.2, no L1/L2, learning rate 0.01); auto = one-layer-light for the aperture task, "
                          "else the paper's choice for its sessions (MRec..: two-layer, ZRec..: one-layer), else one-layer."),
        click.option("--hp", "hp_pairs", multiple=True, metavar="NAME=VALUE",
                     help="Override one hyperparameter, e.g. --hp units=64 --hp dropout=0.4."),
        click.option("--hp-file", type=click.Path(dir_okay=False, path_type=Path), default=None,
                     help="best_hyperparameters.json from `grasptpu tune` (then --hp overrides it)."),
        *_config_options(),
    ]
    return data_options(_options(*options)(func))


class _Group(click.Group):
    """Turns a GrasptpuError, or a DeviceError from the contract's checks of a model folder (the
    host reads folders with the board's own checks), into one line on stderr and exit code 2,
    never a traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (GrasptpuError, DeviceError) as exc:
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
@click.option("--seed", type=click.IntRange(0, SEED_MAX), default=0, help="Generator seed (each session also mixes in its name).")
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

    from host.data import matfile
    from host.data import synth as synth_mod

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
@click.option("--allow-pickle", is_flag=True,
              help="Read a Neo pickle (.pkl): unpickling runs any code the file holds, so only for files you wrote.")
@click.option("--layout", "layout_file", type=click.Path(path_type=Path), default=None,
              help="A layout whose [segments] table cuts continuous segments into trials: inspect those trials.")
def inspect(recording: Path, allow_pickle: bool, layout_file: Path | None) -> None:
    """What a recording holds, in the terms of a layout file: trials, units, event labels with their
    counts and typical onsets, per-trial annotations (Neo) or trials-table columns (NWB) with their
    values, trial durations; and a suggested layout when it is not the paper's.

    RECORDING is a Neo file (.mat, .nix, .pkl with --allow-pickle) or an NWB file (.nwb).
    """
    from host.data.cut import cut_segments
    from host.data.inspect import inspect_recording
    from host.data.layout import load_layout
    from host.data.load import load_recording
    from host.render import inspection

    layout = load_layout(layout_file) if layout_file else None
    rec = load_recording(recording, progress=True, allow_pickle=allow_pickle)
    if layout is not None and layout.segments is not None:
        rec = cut_segments(rec, layout.segments, recording)
    click.echo(inspection(inspect_recording(rec)))


@main.command()
@click.argument("recording", type=click.Path(path_type=Path))
@click.option("--window-bins", type=click.IntRange(min=1), default=12, help="Bins per window (12 x 40 ms = 480 ms).")
@click.option("--train-share", type=click.FloatRange(0.05, 0.95), default=0.8,
              help="Share of each object's trials for train+validation; the rest is test.")
@click.option("--val-share", type=click.FloatRange(0.05, 0.95), default=None,
              help="Share of train+validation used for validation. Default: the paper's rule (20 %, 30 % at a 30 % train share, 40 % at 20 %).")
@click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Binned-session cache. Default: $GRASPTPU_CACHE or ~/.cache/grasptpu.")
@click.option("--no-cache", is_flag=True, help="Always load and bin; neither read nor write the cache.")
@data_options
def prepare(recording: Path, bin_ms: float, window_bins: int, label_bin: str, train_share: float, reading: dict,
            val_share: float | None, seed: int, cache_dir: Path | None, no_cache: bool) -> None:
    """Load a Neo recording, bin it, split trials and cut windows; print what came out.

    RECORDING is a Neo file: .mat (NeoMatlabIO layout), .nix, or .pkl (Neo pickle, only with --allow-pickle).
    """
    from host.data.prepare import prepare as run
    from host.render import prepared_summary

    t0 = time.perf_counter()
    prepared = run(recording, bin_ms=bin_ms, window_bins=window_bins, label_bin=label_bin, **reading,
                   train_val_share=train_share, val_share=val_share, seed=seed, cache_dir=cache_dir,
                   use_cache=not no_cache, progress=True)
    click.echo(prepared_summary(prepared))
    timing = ", ".join(f"{k} {v:.2f} s" for k, v in prepared.seconds.items())
    click.echo(f"  time: {time.perf_counter() - t0:.2f} s ({timing})")


def _hp_overrides(pairs: tuple[str, ...]) -> dict:
    from host.train.model import SEARCH_SPACE

    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or key not in SEARCH_SPACE:
            raise GrasptpuError(f"--hp {pair!r}: expected NAME=VALUE with NAME one of {', '.join(SEARCH_SPACE)}")
        kind = type(SEARCH_SPACE[key][0])
        try:
            out[key] = kind(value)
        except ValueError:
            raise GrasptpuError(f"--hp {pair!r}: {key} takes {kind.__name__} values, e.g. {SEARCH_SPACE[key][0]}") from None
    return out


def _train_config(recording: Path, task: str, preset: str, hp_pairs: tuple[str, ...], hp_file: Path | None,
                  seed: int, options: dict):
    """The TrainConfig of a training command: hyperparameters from the preset or a tuning file,
    overridden by --hp, and the TrainConfig options the command received."""
    from host.train import model as model_mod
    from host.train.config import TrainConfig, preset_for
    from host.train.tune import load_best

    if hp_file:
        base = load_best(hp_file)
        click.echo(f"hyperparameters: {hp_file}" + (" (--preset ignored)" if preset != "auto" else ""))
    else:
        chosen, why = preset_for(recording.name, preset, task)
        base = model_mod.preset(chosen)
        click.echo(f"hyperparameters: preset {chosen} ({why})")
    config = TrainConfig(task=task, hyperparameters={**base, **_hp_overrides(hp_pairs)}, seed=seed, **options)
    chosen_by = "asked for" if options.get("lstm") else "the default on this CPU, see --lstm"
    click.echo(f"LSTM layer: {config.lstm} ({chosen_by})")
    return config


@main.command()
@click.argument("recording", type=click.Path(path_type=Path))
@click.option("--task", type=click.Choice(TASKS), required=True,
              help="object: classify the grasped object from hold-phase windows; grasp-phase: rest vs grasp on every window; "
                   "aperture: regress the layout's target signal (the hand aperture of synthetic sessions) on every window.")
@click.option("--name", default=None, help="Model folder name under --models-dir. Default: <session>-<task>.")
@click.option("--train-share", type=click.FloatRange(0.05, 0.95), default=0.8, help="Train+validation share of each object's trials.")
@training_options
def train(recording: Path, task: str, name: str | None, train_share: float, models_dir: Path, preset: str,
          hp_pairs: tuple[str, ...], hp_file: Path | None, bin_ms: float, label_bin: str, seed: int,
          reading: dict, **options) -> None:
    """Train a BiLSTM decoder on RECORDING and write models/<name>/, self-contained: the model, its
    test windows and calibration windows (so later stages need only the folder), history, split,
    metrics and the manifest.

    Validation uses the validation split only; the test split is scored once, after training.
    The object classifier is also compared with the naive Bayes baseline on the same split.
    """
    from host.render import trained
    from host.train.run import run_training

    config = _train_config(recording, task, preset, hp_pairs, hp_file, seed, options)
    click.echo(trained(run_training(recording, config, models_dir, name,
                                    {"bin_ms": bin_ms, "label_bin": label_bin, "train_val_share": train_share,
                                     "seed": seed, **reading}, progress=True)))


@main.command()
@click.argument("recording", type=click.Path(path_type=Path))
@search_options
@click.option("--name", default=None, help="Output folder under --models-dir. Default: <session>-<task>-tuning.")
@click.option("--models-dir", type=click.Path(file_okay=False, path_type=Path), default=Path("models"))
@click.option("--workers", type=click.IntRange(min=0), default=None,
              help="Distributed search (KerasTuner's chief and workers): this process is the chief and starts N "
                   "local workers; 0 = workers only elsewhere (`grasptpu tune-worker`, tools/slurm_tune.sh).")
@click.option("--chief-address", default=None, metavar="HOST:PORT",
              help="Where the chief serves (with --workers). Default: 127.0.0.1 and a free port; give one that the "
                   "other machines reach for workers elsewhere.")
@click.option("--worker-threads", type=click.IntRange(min=1), default=None,
              help="TensorFlow ops each local worker runs at once (each op on one thread). Default: the cores divided "
                   "among the workers.")
@_options(*_config_options(("lstm",)))
@click.option("--worker-timeout", type=click.FloatRange(min=1), default=3600.0,
              help="A worker elsewhere not heard of for this many seconds is dropped (its trial retried once, then "
                   "failed): KerasTuner workers report when a trial starts and ends, so make it longer than a "
                   "trial. Also how long the chief waits with trials left and no worker asking. A local worker "
                   "that dies is replaced at once.")
@data_options
def tune(recording: Path, task: str, name: str | None, models_dir: Path, max_trials: int, epochs: int,
         workers: int | None, chief_address: str | None, worker_threads: int | None, worker_timeout: float,
         lstm: str | None, bin_ms: float, label_bin: str, seed: int, reading: dict) -> None:
    """Bayesian hyperparameter search (KerasTuner) over the paper's space (Table 2), scored on the validation split.

    Writes results.tsv and best_hyperparameters.json (for `grasptpu train --hp-file`). With
    --workers N the trials run in N worker processes (KerasTuner's distributed mode): the same
    files, and a worker that dies mid-trial never stalls the search. Every trial, on any worker,
    trains the chief's --lstm layer (its CPU's default unless given); the results record it.
    """
    from host.render import tuned
    from host.train.tune import run_tuning

    plan = None if workers is None else _workers(recording, task, max_trials, epochs, workers, chief_address,
                                                 worker_threads, worker_timeout)
    click.echo(tuned(run_tuning(recording, task, models_dir, name, max_trials, epochs, seed,
                                {"bin_ms": bin_ms, "label_bin": label_bin, **reading}, plan, echo=click.echo,
                                lstm=lstm)))


def _workers(recording: Path, task: str, max_trials: int, epochs: int, count: int, chief_address,
             threads: int | None, timeout: float):
    """The chief's plan: its address and the local workers' command (the same search and data options,
    the seed among them)."""
    from host.train.config import usable_cores
    from host.train.distributed import Address, Workers, check_port_free, free_port, worker_command

    address = Address.parse(chief_address) if chief_address else Address("127.0.0.1", free_port())
    check_port_free(address)  # before the data is prepared; serve() checks again as it binds
    data_args = _data_args(click.get_current_context())
    threads = threads or max(1, usable_cores() // max(count, 1))
    return Workers(address, count, worker_command(recording, task, max_trials, epochs, address, threads, data_args),
                   timeout)


@main.command("tune-worker")
@click.argument("recording", type=click.Path(path_type=Path))
@search_options
@click.option("--chief", "chief_address", required=True, metavar="HOST:PORT", help="The chief's address.")
@click.option("--id", "tuner_id", required=True, help="This worker's id, unique in the search (tuner0, tuner1, ...).")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="TensorFlow ops run at once, each on one thread (default: all cores).")
@click.option("--wait-s", type=click.FloatRange(min=0.1), default=60.0, help="How long to wait for the chief.")
@data_options
def tune_worker(recording: Path, task: str, max_trials: int, epochs: int, chief_address: str, tuner_id: str,
                threads: int | None, wait_s: float, bin_ms: float, label_bin: str, seed: int, reading: dict) -> None:
    """One worker of a distributed `grasptpu tune`: trains the trials the chief hands out until its budget is done.

    Give it the same RECORDING, --task, --max-trials, --epochs, --seed and data options as the
    chief. Exits with one line if no chief answers within --wait-s.
    """
    import tempfile

    from host.train import distributed as dist

    if tuner_id.startswith("chief"):
        raise GrasptpuError("a worker's --id must not start with 'chief' (KerasTuner would take it for the chief)")
    address = dist.Address.parse(chief_address)
    local = dist.die_with_chief()
    if not local:  # before TensorFlow loads: a missing chief is one quick line
        dist.wait_for_chief(address, wait_s)

    from host.data.prepare import prepare
    from host.train.fit import use_threads
    from host.train.tune import make_tuner

    os.environ.update(dist.role_environment(tuner_id, address))
    use_threads(threads)  # N workers share the cores
    prepared = prepare(recording, seed=seed, bin_ms=bin_ms, label_bin=label_bin, **reading)
    with tempfile.TemporaryDirectory(prefix=f"grasptpu-{tuner_id}-") as workdir, dist.guarded_stdout():
        tuner = make_tuner(prepared, task, max_trials, epochs, seed, Path(workdir), verbose=0)
        if local:  # started by the chief, which loaded TensorFlow meanwhile: it serves soon
            dist.wait_for_chief(address, wait_s)
        # from here on each build is a trial's, with the chief's layer (the built one is named)
        tuner.hypermodel.announce = lambda kind: click.echo(f"tune-worker {tuner_id}: trial model built with the "
                                                            f"{kind} layer")
        tuner.search(epochs=epochs)
        click.echo(f"tune-worker {tuner_id}: the chief at {address} has no trial left")


@main.command()
@click.argument("recording", type=click.Path(path_type=Path))
@click.option("--task", type=click.Choice(["object", "aperture"]), default="object",
              help="object: test accuracy per share (the paper's Table 5); aperture: test R2 and RMSE per share.")
@click.option("--name", default=None, help="Output folder under --models-dir. Default: <session>-<task>-sweep.")
@click.option("--shares", default="0.8,0.7,0.6,0.5,0.4,0.3,0.2", show_default=True,
              help="Train+validation shares to sweep, comma-separated.")
@training_options
def sweep(recording: Path, task: str, name: str | None, shares: str, models_dir: Path, preset: str,
          hp_pairs: tuple[str, ...], hp_file: Path | None, bin_ms: float, label_bin: str, seed: int, reading: dict,
          **options) -> None:
    """Test score vs training share (the paper's Table 5 protocol): a table and a plot."""
    from host.render import sweep_header, sweep_row
    from host.train.sweep import run_sweep

    try:
        values = tuple(float(x) for x in shares.split(","))
    except ValueError:
        raise GrasptpuError(f"--shares {shares!r}: expected comma-separated numbers such as 0.8,0.5,0.2") from None
    if not all(0.05 <= v <= 0.95 for v in values):
        raise GrasptpuError(f"--shares {shares!r}: each share must lie in [0.05, 0.95]")
    config = _train_config(recording, task, preset, hp_pairs, hp_file, seed, options)
    click.echo(sweep_header(task))
    folder = run_sweep(recording, config, models_dir, name, values, {"bin_ms": bin_ms, "label_bin": label_bin, **reading},
                       on_row=lambda row: click.echo(sweep_row(row)))
    click.echo(f"written to {folder}")


def _finish(results, json_out: Path | None, failed: list[str], what: str = "") -> None:
    """End of a measuring command: the results as JSON when asked, then one line naming every
    failure and exit 1."""
    from host.files import write_json

    if json_out:
        write_json(json_out, results)
    if failed:
        click.echo(f"grasptpu: {what}{'; '.join(failed)}", err=True)
        sys.exit(1)


def _model_dirs(func):
    return click.argument("model_dirs", nargs=-1, required=True, type=click.Path(file_okay=False, path_type=Path))(func)


@main.command()
@_model_dirs
@click.option("--representative-size", type=click.IntRange(min=1), default=None,
              help="Calibrate on this many of the training windows `train` stored (stratified by label, the "
                   "busiest window kept). Default: all of them (--calibration-windows of train, 1000).")
@click.option("--representative", "rep_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Calibrate on these windows instead: a .npy of shape (n, window_bins, units).")
@click.option("--seed", type=click.IntRange(0, SEED_MAX), default=0, help="Seed of the --representative-size subsample.")
def quantize(model_dirs: tuple[Path, ...], representative_size: int | None, rep_file: Path | None, seed: int) -> None:
    """Full-int8 TFLite (and a float TFLite) of trained models, for the Edge TPU; results into each MODEL_DIR.

    Needs only the folder `train` wrote (its Keras model, test and calibration windows), not the
    recording. Also stores the host's Keras, float and int8 outputs on the test windows (for the
    board), the float-vs-int8 comparison and the Edge TPU compatibility report in the manifest.
    """
    from host.quantize.run import quantize as run
    from host.render import quantized

    rep = None
    if rep_file is not None:
        try:
            rep = np.load(rep_file, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise GrasptpuError(f"{rep_file}: not a readable .npy array ({exc})") from None
    for folder in model_dirs:
        m = run(folder, representative_size, seed, rep)
        click.echo(quantized(m))
        click.echo(f"{m['name']}: written to {folder}")


@main.command("check-quant")
@_model_dirs
@click.option("--max-drop", type=click.FloatRange(min=0.0), default=1.0,
              help="Largest allowed int8 accuracy drop below Keras float, in points.")
@click.option("--min-agreement", type=click.FloatRange(0.0, 1.0), default=0.98,
              help="Smallest allowed share of test windows where int8 and float pick the same class.")
@click.option("--max-r2-drop", type=click.FloatRange(min=0.0), default=0.01,
              help="Aperture decoders: largest allowed int8 test R2 drop below Keras float.")
@click.option("--max-rms-error", type=click.FloatRange(min=0.0), default=1.0,
              help="Aperture decoders: largest allowed RMS difference of int8 from Keras float, in the target's unit (mm).")
@click.option("--json", "json_out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write the comparison here.")
def check_quant(model_dirs: tuple[Path, ...], max_drop: float, min_agreement: float, max_r2_drop: float,
                max_rms_error: float, json_out: Path | None) -> None:
    """Regression gate: Keras float vs float TFLite vs int8 TFLite on the test windows; exit 1 on a regression."""
    from host.quantize import gate as quantcheck
    from host.render import quant_table

    failed, results = [], {}
    for folder in model_dirs:
        result, title = quantcheck.check_folder(folder)
        results[str(folder)] = result
        click.echo(quant_table(result, title))
        problems = quantcheck.gate(result, max_drop, min_agreement, max_r2_drop, max_rms_error)
        if not result["int8_matches_stored_outputs"]:
            problems.append("int8 outputs differ from those stored at quantize time (runtime changed?)")
        for p in problems:
            click.echo(f"  FAIL: {p}")
        if problems:
            failed.append(f"{folder}: {problems[0]}")
        elif result["task"] == "aperture":
            click.echo(f"  PASS: R2 drop <= {max_r2_drop:g}, RMS difference <= {max_rms_error:g} {result['units']}")
        else:
            click.echo(f"  PASS: drop <= {max_drop:g} points, agreement >= {min_agreement:.0%}")
    _finish(results, json_out, failed, "int8 regression: ")


@main.command("edgetpu-check")
@click.argument("models", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--per-op", is_flag=True, help="List every op, not just the op types.")
def edgetpu_check(models: tuple[Path, ...], per_op: bool) -> None:
    """Check a TFLite model (or a model folder's int8 model) against the Edge TPU's requirements, no compiler needed.

    Exit 1 when any op would not map to the Edge TPU.
    """
    from device.contract import INT8_MODEL
    from host.quantize import edgetpu_check as check
    from host.render import edgetpu_report

    partial = False
    for path in models:
        report = check.check_model(path / INT8_MODEL if path.is_dir() else path)
        click.echo(edgetpu_report(report, per_op))
        partial |= report.first_unmapped is not None
    sys.exit(1 if partial else 0)


@main.command("compile")
@_model_dirs
@click.option("--compiler", default="edgetpu_compiler", help="Compiler executable (name on PATH or a path).")
def compile_cmd(model_dirs: tuple[Path, ...], compiler: str) -> None:
    """Compile each quantised model with Coral's edgetpu_compiler; exit 3 when it is not installed here."""
    from host.quantize import compile as comp
    from host.render import compile_summary

    for folder in model_dirs:
        try:
            summary = comp.compile_model(folder, compiler)
        except comp.CompilerMissing as exc:
            click.echo(f"grasptpu: {exc}", err=True)
            sys.exit(comp.EXIT_NO_COMPILER)
        click.echo(f"{folder}: {compile_summary(summary)}")


@main.command("bench-local")
@_model_dirs
@click.option("--invokes", type=click.IntRange(min=1), default=2000, help="Timed single-window invokes.")
@click.option("--json", "json_out", type=click.Path(dir_okay=False, path_type=Path), default=None)
def bench_local(model_dirs: tuple[Path, ...], invokes: int, json_out: Path | None) -> None:
    """Run the board's runner (python -m device.bench) here; print it beside the host's float and int8 results."""
    from host.boards.local import run_device_bench
    from host.render import device_side_by_side

    results = {}
    for folder in model_dirs:
        result = run_device_bench(folder, invokes)
        results[str(folder)] = result
        click.echo(device_side_by_side(result))
    _finish(results, json_out, [])


def board_options(func):
    options = [
        click.option("--board", "board_names", multiple=True, metavar="NAME", help="Board from the inventory (repeatable)."),
        click.option("--all", "all_boards", is_flag=True, help="Every board in the inventory."),
        click.option("--inventory", type=click.Path(dir_okay=False, path_type=Path), default=None,
                     help="Board inventory (TOML). Default: $GRASPTPU_BOARDS, ./boards.toml, .boards/boards.toml."),
        click.option("--trust-new-host", is_flag=True,
                     help="Accept and record the host key of a board never seen before (a changed key is always refused)."),
    ]
    return _options(*options)(func)


@main.command()
@_model_dirs
@board_options
@click.option("--keep", type=click.IntRange(min=1), default=3, help="Releases kept on each board.")
@click.option("--wait", "wait_s", type=click.FloatRange(min=0), default=0.0,
              help="Seconds to wait for another deploy's lock on a board before failing.")
def deploy(model_dirs: tuple[Path, ...], board_names: tuple[str, ...], all_boards: bool, inventory: Path | None,
           trust_new_host: bool, keep: int, wait_s: float) -> None:
    """Push quantised MODEL_DIRS, the device runner and firmware_tests/ to boards as one atomic release.

    Boards in parallel; each verifies every byte before `current` switches; on any failure the
    previous release stays active. Exit 1 if any board failed.
    """
    from host.boards.inventory import load_inventory, pick
    from host.boards.deploy import deploy as run_deploy

    boards = pick(load_inventory(inventory), board_names, all_boards)
    done, failed = run_deploy(boards, list(model_dirs), keep, wait_s, trust_new_host)
    for d in done:
        click.echo(f"board {d['board']}: current = {d['current']} ({d['files']} files, {d['bytes'] / 1024:.0f} KiB, "
                   f"{d['seconds']:.1f} s); releases kept: {len(d['releases'])}")
        if d["lock_note"]:
            click.echo(f"board {d['board']}: note: {d['lock_note']}", err=True)
        if d["lock_problem"]:
            click.echo(f"board {d['board']}: warning: {d['lock_problem']}", err=True)
    for line in failed:
        click.echo(f"grasptpu: error: {line}", err=True)
    if failed:
        sys.exit(1)


@main.command()
@board_options
@click.option("--wait", "wait_s", type=click.FloatRange(min=0), default=0.0,
              help="Seconds to wait for a running deploy's lock on a board before failing.")
def rollback(board_names: tuple[str, ...], all_boards: bool, inventory: Path | None, trust_new_host: bool,
             wait_s: float) -> None:
    """Make the release before the current one active again on each board (under the deploy lock)."""
    from host.boards.inventory import load_inventory, pick
    from host.boards.deploy import rollback as run_rollback

    for board in pick(load_inventory(inventory), board_names, all_boards):
        current, note = run_rollback(board, trust_new_host, wait_s)
        if note:
            click.echo(f"board {board.name}: note: {note}", err=True)
        click.echo(f"board {board.name}: current = {current}")


@main.command()
@board_options
@click.option("--force", is_flag=True, help="Also remove the lock of a deploy still running on this machine.")
def unlock(board_names: tuple[str, ...], all_boards: bool, inventory: Path | None, trust_new_host: bool,
           force: bool) -> None:
    """Remove a board's deploy lock left by a deploy that died on another machine.

    A deploy from this machine that died is recognised and its lock removed by the next deploy;
    a lock from elsewhere only you can judge: check that its owner (printed) is not running.
    """
    from host.boards.inventory import load_inventory, pick
    from host.boards.lock import unlock as run_unlock

    for board in pick(load_inventory(inventory), board_names, all_boards):
        owner = run_unlock(board, trust_new_host, force)
        click.echo(f"board {board.name}: " + (f"removed the deploy lock of {owner}" if owner else "no deploy lock"))


@main.command("bench")
@board_options
@click.option("--invokes", type=click.IntRange(min=1), default=2000, help="Timed single-window invokes per model.")
@click.option("--stream/--no-stream", default=True, help="Also replay the test trials with device.stream.")
@click.option("--max-drop", type=click.FloatRange(min=0), default=0.5,
              help="Allowed accuracy drop on the board below the host's int8 model, in points.")
@click.option("--min-agreement", type=click.FloatRange(0, 1), default=0.99,
              help="Least share of test windows whose argmax equals the host int8 model's (bit-exactness is "
                   "reported, not required: runtimes round LOGISTIC/TANH differently).")
@click.option("--max-p99-ms", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Allowed p99 latency per window. Default: the board's max_p99_ms in the inventory (2 ms if unset: "
                   "20x headroom in a 40 ms bin).")
@click.option("--max-miss-rate", type=click.FloatRange(0, 1), default=None,
              help="Allowed share of stream bins over the 40 ms deadline (0 = every deadline). Default: the board's "
                   "max_miss_rate in the inventory (1e-4 if unset).")
@click.option("--json", "json_out", type=click.Path(dir_okay=False, path_type=Path), default=None)
def bench_cmd(board_names: tuple[str, ...], all_boards: bool, inventory: Path | None, trust_new_host: bool,
              invokes: int, stream: bool, max_drop: float, min_agreement: float, max_p99_ms: float | None,
              max_miss_rate: float | None, json_out: Path | None) -> None:
    """Benchmark the deployed decoders on boards over SSH, beside the host's results; exit 1 on a miss.

    A board passes on what carries across runtimes: accuracy and argmax agreement with the host's
    int8 model, and p99 latency within the board's own threshold."""
    from device.stream import format_result as format_stream
    from host.boards.bench import MAX_BOARD_R2_DROP, bench_board, judge
    from host.render import device_side_by_side, software_line
    from host.boards.inventory import load_inventory, pick

    failed, results = [], []
    for board in pick(load_inventory(inventory), board_names, all_boards):
        result = bench_board(board, invokes, stream, trust_new_host=trust_new_host)
        results.append(result)
        click.echo(software_line(board, result["software"]))
        for r in result["models"].values():
            click.echo(device_side_by_side(r, where=f"board {board.name}"))
        if "stream" in result:
            click.echo(format_stream(result["stream"]))
        threshold = max_p99_ms if max_p99_ms is not None else board.max_p99_ms
        misses = max_miss_rate if max_miss_rate is not None else board.max_miss_rate
        why = "--max-p99-ms" if max_p99_ms is not None else (board.latency_note or "the inventory's default")
        click.echo(f"board {board.name}: gate: accuracy within {max_drop:g} points of the host int8, argmax agreement "
                   f">= {min_agreement:.0%}, aperture R2 within {MAX_BOARD_R2_DROP:g} of the host int8, "
                   f"p99 <= {threshold:g} ms, stream bins past the deadline <= {misses:g} ({why})")
        result["thresholds"] = {"max_drop": max_drop, "min_agreement": min_agreement, "max_p99_ms": threshold,
                                "max_miss_rate": misses}
        problems = judge(result, threshold, max_drop, min_agreement, misses)
        failed += [f"board {board.name}: {p}" for p in problems]
        click.echo(f"board {board.name}: " + ("PASS" if not problems else "FAIL: " + "; ".join(problems)))
    _finish(results, json_out, failed)


@main.command("firmware-test")
@board_options
@click.option("--reports", type=click.Path(file_okay=False, path_type=Path), default=Path("reports"),
              help="Where the boards' junit reports are fetched to.")
def firmware_test_cmd(board_names: tuple[str, ...], all_boards: bool, inventory: Path | None, trust_new_host: bool,
                      reports: Path) -> None:
    """Run the on-board test suite (firmware_tests/) on boards; fetch each junit report; exit 1 on a failure."""
    from host.boards.bench import firmware_test
    from host.render import software_line
    from host.boards.inventory import load_inventory, pick

    worst = 0
    for board in pick(load_inventory(inventory), board_names, all_boards):
        code, summary, junit, software = firmware_test(board, reports, trust_new_host)
        click.echo(software_line(board, software))
        click.echo(f"board {board.name}: firmware tests exit {code}; junit report {junit}")
        click.echo(summary)
        worst = max(worst, code)
    if worst:
        sys.exit(1)


@main.command()
@click.argument("source", type=click.Path(path_type=Path))
@click.option("--stream", required=True, help="LSL stream name to publish (device.live --stream takes the same).")
@click.option("--trials", "count", type=click.IntRange(min=0), default=0, help="Publish this many trials (0 = all).")
@click.option("--first-trial", type=click.IntRange(min=0), default=0, help="Start at this trial of the source.")
@click.option("--which", type=click.Choice(["test", "all"]), default="test",
              help="For a recording: its test split (as `grasptpu train` holds it out, same --seed) or every trial.")
@click.option("--gap-bins", type=click.IntRange(min=1), default=1,
              help="Silent bins between trials (trials are not adjacent in a recording: the decoder restarts).")
@click.option("--wait-s", type=click.FloatRange(min=0.1), default=30.0, help="Wait this long for a subscriber.")
@click.option("--log", "log_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write what was sent (stamp, trial, bin per sample) to this .npz.")
@data_options
def replay(source: Path, stream: str, count: int, first_trial: int, which: str, gap_bins: int, wait_s: float,
           log_path: Path | None, bin_ms: float, label_bin: str, seed: int, reading: dict) -> None:
    """Publish SOURCE's trials as a real-time LSL stream of binned counts: the acquisition system's stand-in.

    SOURCE is a model folder (its test trials: the bins the board's offline replay uses) or a
    recording (binned here; --which test|all). One float32 sample per bin, channels labelled
    unit<N> in the model's order, stamped when pushed; it starts once a subscriber is connected.
    """
    from host.live.streams import model_trials, recording_trials, replay as run_replay

    trials = model_trials(source) if source.is_dir() else recording_trials(source, which, reading, bin_ms, seed)
    result = run_replay(trials.pick(first_trial, count), stream, log_path, gap_bins, wait_s, echo=click.echo)
    click.echo(f"replay: sent {result['bins']} bins of {result['trials']} trials on {stream}"
               + (" (interrupted)" if result["interrupted"] else "") + (f"; log {log_path}" if log_path else ""))


@main.command()
@click.argument("stream")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True, help="Where to write (.npz).")
@click.option("--resolve-s", type=click.FloatRange(min=0.1), default=30.0, help="Wait this long for the stream.")
@click.option("--idle-stop", type=click.FloatRange(min=0.1), default=3.0,
              help="Stop this many seconds after the last sample (Ctrl-C also stops and writes).")
@click.option("--ready-file", type=click.Path(dir_okay=False, path_type=Path), default=None, hidden=True)
def record(stream: str, out: Path, resolve_s: float, idle_stop: float, ready_file: Path | None) -> None:
    """Subscribe to an LSL stream (the board's decisions) and write every sample with its stamp and receive time."""
    from host.live.streams import record as run_record

    run_record(stream, out, resolve_s, idle_stop, ready=(lambda: ready_file.touch()) if ready_file else None,
               echo=click.echo)


@main.command()
@_model_dirs
@board_options
@click.option("--local", is_flag=True, help="Run device.live here (this machine's Python and TFLite runtime), no board.")
@click.option("--trials", type=click.IntRange(min=0), default=20, help="Test trials to replay in real time, 40 ms a bin (0 = all).")
@click.option("--stream", default="grasptpu-live", help="Name of the replayed LSL stream (the decisions: NAME-decoded).")
@click.option("--gap-bins", type=click.IntRange(min=1), default=1, help="Silent bins between trials.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder for the session's files. Default: reports/live-<board or local>.")
def live(model_dirs: tuple[Path, ...], board_names: tuple[str, ...], all_boards: bool, inventory: Path | None,
         trust_new_host: bool, local: bool, trials: int, stream: str, gap_bins: int, out_dir: Path | None) -> None:
    """Replay test trials over LSL into device.live on a board, record its decisions, compare with the offline replay.

    Prints end-to-end latency per bin, missed bins and bin-for-bin agreement with device.stream on
    the same board; exit 1 if a bin was missed or a decision differs.
    """
    from host.live.session import BoardRunner, LocalRunner, by_task, run_session
    from host.render import live_summary

    folders = by_task(list(model_dirs))
    if local:
        runner = LocalRunner(folders)
    else:
        from host.boards.inventory import load_inventory, pick

        boards = pick(load_inventory(inventory), board_names, all_boards)
        if len(boards) != 1:
            raise GrasptpuError("grasptpu live runs on one board at a time; name it with --board")
        runner = BoardRunner(boards[0], trust_new_host, folders)
    try:
        summary = run_session(folders, runner, out_dir or Path("reports") / f"live-{runner.name}", trials, stream,
                              gap_bins)
    finally:
        runner.close()
    click.echo(live_summary(summary))
    ag = summary["agreement"]
    if summary["missed_bins"] or ag["identical"] != ag["bins"]:
        sys.exit(1)


@main.command()
@click.option("--bench", "bench_json", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Board bench JSON from `grasptpu bench --board NAME --json FILE` (latency histograms per model).")
@click.option("--live", "live_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="A live session folder from `grasptpu live` (summary.json, bins.npz), e.g. reports/live-board1.")
@click.option("--trials", type=click.IntRange(min=0), default=3,
              help="Per-bin timelines of this many trials (the first the session sent that have a hold).")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=Path("reports/report.html"),
              help="The HTML page to write (self-contained: figures inlined, opens without a server).")
def report(bench_json: Path | None, live_dir: Path | None, trials: int, out: Path) -> None:
    """One self-contained HTML page of a board bench and a live session: latency histograms, per-bin trial
    timelines (raster, phases, detector, classifier and confidence, aperture), Hold onset to a correct object."""
    from host.live.report_page import build_report

    if bench_json is None and live_dir is None:
        raise GrasptpuError("nothing to report: give --bench FILE and/or --live FOLDER")
    result = build_report(out, bench_json, live_dir, trials)
    click.echo(f"report: {result['path']} ({len(result['figures'])} figures: {', '.join(result['figures'])})")


if __name__ == "__main__":
    main()
