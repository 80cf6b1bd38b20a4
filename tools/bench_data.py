"""Data-stage benchmark: our synth / prepare against plain neo.io, measured in the same run.

Each step runs in a fresh Python process so that its peak RSS is its own. Steps:
  synth          generate the session + write it with host.data.matfile        (ours)
  neo-write      build Neo objects from the same session + NeoMatlabIO.write_block  (baseline)
  prepare-cold   load + select + bin + split + window, no cache            (ours)
  neo-read       NeoMatlabIO(path).read_block() alone                      (baseline)
  prepare-warm   the same prepare on a cache hit                           (ours)
With --format nwb the session is written as NWB (host.data.nwbwrite) and the baseline of
prepare-cold is pynwb's NWBHDF5IO(path).read() alone (nwb-read); there is no neo-write step.
Usage: python tools/bench_data.py [--session MRec41] [--format mat|nwb] [--units N --trials N]
                                  [--out data/bench] [--skip-baselines]
"""

from __future__ import annotations

import json
import resource
import sys
import tempfile
import time
from pathlib import Path

import click

from child_run import ROOT, child_json  # tools/, this script's own folder
sys.path.insert(0, str(ROOT))


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def step_synth(session: str, path: Path, units: int | None = None, trials: int | None = None, **_) -> dict:
    from host.data import matfile
    from host.data import synth
    from host.data.nwbwrite import save_nwb

    t0 = time.perf_counter()
    rec = synth.generate(session, n_units=units, n_trials=trials)
    (save_nwb if path.suffix == ".nwb" else matfile.save_recording)(rec, path)
    return {"seconds": time.perf_counter() - t0, "spikes": int(len(rec.spike_times_s)),
            "file_mb": path.stat().st_size / 1e6}


def step_neo_write(session: str, path: Path, **_) -> dict:
    import neo
    import quantities as pq
    from neo.io import NeoMatlabIO

    from host.data import synth

    rec = synth.generate(session)
    t0 = time.perf_counter()
    block = neo.Block(name=rec.name)
    for k in range(rec.n_trials):
        seg = neo.Segment(name=f"trial {k}", obj=int(rec.object_ids[k]), correct=int(rec.correct[k]))
        t_start, t_stop = rec.t_start_s[k] * pq.s, rec.t_stop_s[k] * pq.s
        for u in range(rec.n_units):
            seg.spiketrains.append(neo.SpikeTrain(rec.train(k, u), units="s", t_start=t_start, t_stop=t_stop))
        seg.events.append(neo.Event(rec.event_times_s[k] * pq.s, labels=rec.event_labels[k]))
        block.segments.append(seg)
    t1 = time.perf_counter()
    baseline = path.with_name(path.name.replace(".neo.mat", ".neo-baseline.mat"))
    NeoMatlabIO(str(baseline)).write_block(block)
    t2 = time.perf_counter()
    size_mb = baseline.stat().st_size / 1e6
    baseline.unlink()
    return {"seconds": t2 - t0, "build_s": t1 - t0, "write_s": t2 - t1, "file_mb": size_mb,
            "trains": sum(len(s.spiketrains) for s in block.segments)}


def step_prepare(path: Path, cache_dir: Path, use_cache: bool, **_) -> dict:
    from host.data.prepare import prepare

    t0 = time.perf_counter()
    p = prepare(path, cache_dir=cache_dir, use_cache=use_cache)
    seconds = time.perf_counter() - t0
    windows = [w for task in (p.grasp_phase, p.object) for w in task.values()]
    index_bytes = sum(w.end_row.nbytes + w.label.nbytes + w.trial.nbytes for w in windows)
    dense_bytes = sum(len(w) * w.window_bins * p.binned.n_units for w in windows)
    return {"seconds": seconds, "cache_hit": p.cache_hit, "counts_bytes": int(p.binned.counts.nbytes),
            "index_bytes": int(index_bytes), "materialised_bytes": int(dense_bytes),
            "n_windows": int(sum(len(w) for w in windows)), "parts": p.seconds}


def step_neo_read(path: Path, **_) -> dict:
    from neo.io import NeoMatlabIO

    t0 = time.perf_counter()
    block = NeoMatlabIO(str(path)).read_block()
    return {"seconds": time.perf_counter() - t0, "segments": len(block.segments)}


def step_nwb_read(path: Path, **_) -> dict:
    import warnings

    from pynwb import NWBHDF5IO

    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with NWBHDF5IO(str(path), "r") as io:
            nwb = io.read()
            seconds = time.perf_counter() - t0
            return {"seconds": seconds, "trials": len(nwb.trials), "units": len(nwb.units)}


def step_nwb_frames(path: Path, **_) -> dict:
    """read() is lazy (no spike time is read); pynwb's usual way to the data is a DataFrame per table."""
    import warnings

    from pynwb import NWBHDF5IO

    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with NWBHDF5IO(str(path), "r") as io:
            nwb = io.read()
            units, trials = nwb.units.to_dataframe(), nwb.trials.to_dataframe()
            return {"seconds": time.perf_counter() - t0, "trials": len(trials), "units": len(units)}


STEPS = {"synth": step_synth, "neo-write": step_neo_write, "prepare-cold": step_prepare,
         "neo-read": step_neo_read, "nwb-read": step_nwb_read, "nwb-frames": step_nwb_frames,
         "prepare-warm": step_prepare}


def run_step(name: str, **kwargs) -> dict:
    """Run one step in a child process; its JSON result plus its own peak RSS and wall time."""
    args = json.dumps({k: str(v) if isinstance(v, Path) else v for k, v in kwargs.items()})
    t0 = time.perf_counter()
    result = child_json([__file__, "--step", name, "--args", args])
    result["process_s"] = time.perf_counter() - t0
    return result


def child(step: str, args: str) -> None:
    kwargs = json.loads(args)
    for key in ("path", "cache_dir"):  # JSON carried them as text
        if key in kwargs:
            kwargs[key] = Path(kwargs[key])
    result = STEPS[step](**kwargs)
    result["peak_rss_mb"] = _peak_rss_mb()
    print(json.dumps(result))


def _row(label: str, ours: dict, base: dict | None, target: str) -> str:
    if base is None:
        return f"  {label:<34} {ours['seconds']:8.2f} s  {ours['peak_rss_mb']:7.0f} MB  {'':>30}  {target}"
    ratio = base["seconds"] / ours["seconds"]
    return (f"  {label:<34} {ours['seconds']:8.2f} s  {ours['peak_rss_mb']:7.0f} MB  vs {base['seconds']:8.2f} s "
            f"{base['peak_rss_mb']:7.0f} MB  {ratio:6.1f}x faster  {target}")


@click.command()
@click.option("--session", default="MRec41", show_default=True, help="Session to benchmark (MRec41 is the largest).")
@click.option("--out", type=click.Path(path_type=Path), default=Path("data/bench"), show_default=True)
@click.option("--format", "fmt", type=click.Choice(["mat", "nwb"]), default="mat", show_default=True)
@click.option("--units", type=int, default=None, help="Override the session's unit count.")
@click.option("--trials", type=int, default=None, help="Override the session's trial count.")
@click.option("--skip-baselines", is_flag=True, help="Only our steps (the neo.io baselines take minutes).")
@click.option("--step", hidden=True)
@click.option("--args", "step_args", hidden=True)
def main(session: str, out: Path, fmt: str, units: int | None, trials: int | None, skip_baselines: bool,
         step: str | None, step_args: str | None) -> None:
    """Data-stage benchmark with its baselines measured in the same run."""
    if step:
        child(step, step_args)
        return
    out.mkdir(parents=True, exist_ok=True)
    path = (out / (f"{session}.neo.mat" if fmt == "mat" else f"{session}.nwb")).resolve()
    cache_dir = Path(tempfile.mkdtemp(prefix="grasptpu-bench-cache-"))
    print(f"data-stage benchmark: session {session}" + (f" ({units} units, {trials} trials)" if units or trials else "")
          + f", file {path}, cache {cache_dir}, python {sys.version.split()[0]}")
    res = {"synth": run_step("synth", session=session, path=path, units=units, trials=trials)}
    res["prepare-cold"] = run_step("prepare-cold", path=path, cache_dir=cache_dir, use_cache=False)
    run_step("prepare-cold", path=path, cache_dir=cache_dir, use_cache=True)  # fills the cache
    res["prepare-warm"] = run_step("prepare-warm", path=path, cache_dir=cache_dir, use_cache=True)
    if not skip_baselines and fmt == "mat":
        res["neo-write"] = run_step("neo-write", session=session, path=path)
        res["neo-read"] = run_step("neo-read", path=path)
    if not skip_baselines and fmt == "nwb":
        res["neo-read"] = run_step("nwb-read", path=path)  # the baseline of prepare-cold: pynwb's read() alone
        res["nwb-frames"] = run_step("nwb-frames", path=path)
    s = res["synth"]
    print(f"  file: {s['file_mb']:.0f} MB, {s['spikes']} spikes")
    print(f"  {'step':<34} {'ours':>10}  {'peak RSS':>10}  {'baseline (same run)':>30}")
    print(_row("synth (generate + write)", s, res.get("neo-write"), "target >= 3x"))
    if "neo-write" in res:
        nw = res["neo-write"]
        print(f"    baseline = build Neo objects {nw['build_s']:.1f} s + NeoMatlabIO.write_block {nw['write_s']:.1f} s"
              f" ({nw['trains']} spike trains, {nw['file_mb']:.0f} MB file)")
    print(_row("prepare, cold (no cache)", res["prepare-cold"], res.get("neo-read"),
               "target >= 4x vs read_block alone, RSS < 2500 MB" if fmt == "mat" else "baseline: NWBHDF5IO.read() alone"))
    if "nwb-frames" in res:
        print("    read() alone is lazy (it reads no spike time); " + _row(
            "beside read() + units/trials to_dataframe()", res["prepare-cold"], res["nwb-frames"], "").strip())
    print(_row("prepare, warm (cache hit)", res["prepare-warm"], None, "target < 1 s"))
    cold = res["prepare-cold"]
    print("  cold parts: " + ", ".join(f"{k} {v:.2f} s" for k, v in cold["parts"].items()))
    print(f"  windows: {cold['n_windows']} over {cold['counts_bytes'] / 1e6:.0f} MB of binned counts + "
          f"{cold['index_bytes'] / 1e6:.1f} MB of indices and labels; materialised they would take "
          f"{cold['materialised_bytes'] / 1e9:.2f} GB")
    (out / f"bench-data-{session}-{fmt}.json").write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
