"""Everything the command line prints, in one place: the stages return records, this turns them into text.

Each function takes a stage's record (a dict or dataclass the stage returned) and gives the lines
a person reads; nothing here computes a figure, so what is printed is what the stage measured.
"""

from __future__ import annotations

import numpy as np

from host.boards.inventory import Board
from host.data.prepare import Prepared
from host.quantize.edgetpu_check import CORAL_MAX_OP_VERSION, CORAL_TFLITE, Report
from host.quantize.gate import MODELS


def trained(t) -> str:
    """A `host.train.run.Trained`: epochs, speed, the test-split figures and, for the object
    classifier, the naive Bayes baseline beside it."""
    r = t.result
    lines = [f"{t.name}: trained {r.epochs_run} epochs (best {r.best_epoch}) in {r.seconds:.1f} s, "
             f"{r.windows_per_second:.0f} windows/s",
             f"{t.name}: test split ({t.test_metrics['trials']} trials): {format_metrics(t.test_metrics, t.task)}"]
    if t.baseline and t.task == "aperture":
        lines.append(continuous_side_by_side(t.test_metrics, t.baseline))
    elif t.baseline:
        lines.append(baseline_side_by_side(t.test_metrics, t.baseline))
    lines.append(f"{t.name}: written to {t.folder}")
    return "\n".join(lines)


def continuous_side_by_side(bilstm: dict, baseline: dict) -> str:
    """The BiLSTM beside the Wiener and Kalman filters on the same test windows."""
    u = bilstm["units"]
    lines = [f"  {'decoder (test split)':<34} {'R2':>7} {'r':>7} {'RMSE ' + u:>10}"]
    for label, m in (("BiLSTM", bilstm), ("Wiener filter (ridge, 12 bins)", baseline["wiener"]),
                     ("Kalman filter (steady state)", baseline["kalman"])):
        lines.append(f"  {label:<34} {m['r2']:>7.3f} {m['pearson_r']:>7.3f} {m['rmse']:>10.2f}")
    return "\n".join(lines)


def baseline_side_by_side(bilstm: dict, baseline: dict) -> str:
    """The BiLSTM beside the naive Bayes baseline, one row each."""
    rows = [("BiLSTM, test-split windows", bilstm),
            ("naive Bayes (hold counts), test-split trials", baseline["test_split"]),
            ("naive Bayes (hold counts), leave-one-out trials", baseline["leave_one_out"])]
    lines = [f"  {'decoder':<48} {'accuracy':>9} {'relaxed':>8} {'shape':>6} {'size':>6}"]
    for label, m in rows:
        shape = "-" if m.get("shape_accuracy") is None else f"{m['shape_accuracy']:.1%}"
        size = "-" if m.get("size_accuracy") is None else f"{m['size_accuracy']:.1%}"
        lines.append(f"  {label:<48} {m['accuracy']:>9.1%} {m['relaxed_accuracy']:>8.1%} {shape:>6} {size:>6}")
    return "\n".join(lines)


def quantized(m: dict) -> str:
    """The manifest `grasptpu quantize` returned: sizes, calibration, the float-vs-int8 table and
    the Edge TPU check."""
    t, c = m["tflite"], m["edgetpu_check"]
    first = c["first_unmapped"]
    return "\n".join([
        f"{m['name']}: int8 {t['int8']['bytes'] / 1024:.0f} KiB, float {t['float']['bytes'] / 1024:.0f} KiB "
        f"(int8/float {t['int8']['bytes'] / t['float']['bytes']:.2f}); calibrated on "
        f"{t['representative']['windows']} windows ({t['representative']['source']}); {m['quantize_seconds']:.1f} s",
        quant_table(m["quantization"], f"{m['name']}: test split"),
        f"{m['name']}: Edge TPU check: {c['mapped']} of {c['ops']} ops map ({c['mapped_share']:.0%})"
        + ("" if first is None else f"; first blocker #{first['index']} {first['op']}: {first['why']}"),
    ])


def tuned(t) -> str:
    """A `host.train.tune.Tuned`: the trial table, the best values and how to train with them."""
    import json

    from host.train.tune import OBJECTIVES, tsv

    objective = OBJECTIVES[t.task][0]
    what = {"val_accuracy": "validation accuracy", "val_loss": "validation loss"}[objective]
    return "\n".join([tsv(t.rows),
                      f"best ({what} {t.rows[0][objective]:.4f}): {json.dumps(t.best)}; every trial trained "
                      f"the {t.rows[0]['lstm']} layer",
                      f"written to {t.best_file}; train with: grasptpu train {t.recording} --task {t.task} "
                      f"--hp-file {t.best_file} --lstm {t.rows[0]['lstm']}"])


def _natural(item: tuple) -> tuple:
    """Sort key putting class '9' before '10' (names are text; the paper's are numbers)."""
    name = str(item[0])
    return (0, int(name), name) if name.isdigit() else (1, 0, name)


def prepared_summary(p: Prepared) -> str:
    """What a person needs to trust the numbers downstream: data, drops, classes, split, windows."""
    b = p.binned
    lines = [
        f"session {b.session}: {b.source.get('path', '?')} ({b.source.get('n_trials_in_file', '?')} trials in file)",
        f"  units {b.n_units}, bin {b.bin_ms:g} ms, trials kept {b.n_trials}, bins {int(b.trial_offsets[-1])}"
        f" ({'cache hit' if p.cache_hit else 'loaded and binned'})",
    ]
    if b.layout:
        lines.append(f"  layout {b.layout.get('name')}: class from {b.layout.get('class_key')!r}, region of interest "
                     f"{' .. '.join(b.layout.get('roi', []))}")
    for reason, count in b.drops.items():
        lines.append(f"  dropped {count:4d} trials: {reason}")
    if b.dropped_objects:
        lines.append("  dropped classes (kept trials): "
                     + ", ".join(f"{o} ({n})" for o, n in sorted(b.dropped_objects.items(), key=_natural)))
    if b.merged:
        lines.append("  merged classes (trials): "
                     + ", ".join(f"{o}({n})" for o, n in sorted(b.merged.items(), key=_natural)))
    per_class = np.bincount(b.class_index, minlength=len(b.classes))
    lines.append(f"  classes {len(b.classes)}: trials per class min {per_class.min()}, "
                 f"median {int(np.median(per_class))}, max {per_class.max()}")
    s = p.split
    lines.append(f"  split (seed {s.seed}, train+val {s.train_val_share:.0%}, val {s.validation_share:.0%} of it): "
                 + ", ".join(f"{k} {len(v)} trials" for k, v in s.as_dict().items()))
    for name in ("train", "validation", "test"):
        g, o = p.grasp_phase[name], p.object[name]
        gc = g.label_counts()
        lines.append(f"  {name:>10}: grasp-phase windows {len(g):7d} (rest {gc['rest']}, grasp {gc['grasp']}),"
                     f" object windows {len(o):6d} over {int((np.bincount(o.label, minlength=len(b.classes)) > 0).sum())} classes"
                     + ("" if p.aperture is None else f", aperture windows {len(p.aperture[name]):7d}"))
    if p.aperture is not None:
        lines.append(f"  target {b.layout.get('target')!r} in {b.target_units or 'no unit'}: binned like the counts")
    elif b.target_problem:
        lines.append(f"  target: not decodable ({b.target_problem})")
    note = p.target_note()
    if note:
        lines.append(f"  {note}")
    return "\n".join(lines)


def format_metrics(result: dict, task: str) -> str:
    """One or two lines a person reads at a glance."""
    if task == "aperture":
        u = result["units"]
        phases = ", ".join(f"{name} {m['rmse']:.1f}" for name, m in result["per_phase"].items())
        return (f"R2 {result['r2']:.3f}, Pearson r {result['pearson_r']:.3f}, RMSE {result['rmse']:.2f} {u} "
                f"({result['windows']} windows; RMSE by phase: {phases})")
    if task == "object":
        shape = result.get("shape_accuracy")
        size = result.get("size_accuracy")
        extra = ""
        if shape is not None and size is not None:
            extra = f", shape {shape:.1%}, size {size:.1%}"
        return (f"accuracy {result['accuracy']:.1%}, relaxed {result['relaxed_accuracy']:.1%}, "
                f"balanced {result['balanced_accuracy']:.1%}, macro F1 {result['macro_f1']:.3f}{extra} "
                f"({result['windows']} windows, {result['classes']} classes, chance {result['chance']:.1%})")
    (tn, fp), (fn, tp) = result["confusion"]
    return (f"accuracy {result['accuracy']:.2%}, F1 {result['f1']:.3f}, balanced {result['balanced_accuracy']:.1%} "
            f"({result['windows']} windows; rest->rest {tn}, rest->grasp {fp}, grasp->rest {fn}, grasp->grasp {tp})")


def quant_table(result: dict, title: str) -> str:
    """One row per model; a person reads it at a glance."""
    if result["task"] == "aperture":
        return _regression_quant_table(result, title)
    second = "relaxed" if result["task"] == "object" else "F1"
    key = "relaxed_accuracy" if result["task"] == "object" else "f1"
    lines = [title, f"  {'model':<14} {'accuracy':>9} {second:>8} {'agree':>8} {'strict':>8} {'ties':>6} "
                    f"{'max|err|':>9} {'mean|err|':>10}"]
    labels = {"keras": "Keras float", "float": "float TFLite", "int8": "int8 TFLite"}
    for name in MODELS:
        m = result[name]
        sec = f"{m[key]:.1%}" if key == "relaxed_accuracy" else f"{m[key]:.3f}"
        lines.append(f"  {labels[name]:<14} {m['accuracy']:>9.2%} {sec:>8} {m['agreement']:>8.2%} "
                     f"{m['strict_agreement']:>8.2%} {m['ties']:>6.1%} "
                     f"{m['max_abs_error']:>9.4f} {m['mean_abs_error']:>10.5f}")
    lines.append(f"  int8 accuracy drop: {result['int8_accuracy_drop_points']:+.2f} points "
                 "(agree: float's class among int8's top, ties included; strict: first-index tie-break; "
                 "errors: |probability - Keras probability|)")
    return "\n".join(lines)


def sweep_row(r: dict) -> str:
    trials = f"{r['train_trials']}/{r['validation_trials']}/{r['test_trials']}"
    head = f"{r['train_val_share']:5.0%}  {r['validation_share']:9.0%}  {trials:>21}  {r['test_windows']:12d}  {r['epochs']:6d}"
    if "r2" in r:
        return f"{head}  {r['r2']:6.3f}  {r['pearson_r']:6.3f}  {r['rmse']:7.2f} {r['units']}"
    paper = "" if r["paper_accuracy"] is None else f"{r['paper_accuracy']:.1%} / {r['paper_relaxed']:.1%}"
    return f"{head}  {r['accuracy']:8.1%}  {r['relaxed_accuracy']:7.1%}   {paper}"


def sweep_header(task: str) -> str:
    head = "share  val-share  train/val/test trials  test windows  epochs"
    return f"{head}      R2       r     RMSE" if task == "aperture" else f"{head}  accuracy  relaxed   paper acc/relaxed"


def _regression_quant_table(result: dict, title: str) -> str:
    u = result["units"]
    lines = [title, f"  {'model':<14} {'R2':>7} {'r':>7} {'RMSE':>8}   vs Keras float: {'max|err|':>9} {'RMS err':>8}"]
    labels = {"keras": "Keras float", "float": "float TFLite", "int8": "int8 TFLite"}
    for name in MODELS:
        m = result[name]
        lines.append(f"  {labels[name]:<14} {m['r2']:>7.4f} {m['pearson_r']:>7.4f} {m['rmse']:>5.2f} {u:<2}"
                     f"                   {m['max_abs_error']:>6.3f} {u:<2} {m['rms_error']:>5.3f} {u}")
    lines.append(f"  int8 R2 drop: {result['int8_r2_drop']:+.4f} ({result['windows']} test windows; "
                 f"errors: |output - Keras output| in {u})")
    return "\n".join(lines)


def compile_summary(s: dict) -> str:
    def mib(key: str) -> str:
        return "?" if s.get(key) is None else f"{s[key] / 2**20:.2f} MiB"

    return (f"compiled with edgetpu_compiler {s.get('compiler_version', '?')}: {s.get('ops_on_edgetpu', '?')} of "
            f"{s.get('total_ops', '?')} ops on the Edge TPU, {s.get('ops_on_cpu', '?')} on the CPU, "
            f"{s.get('edgetpu_subgraphs', '?')} Edge TPU subgraph(s); on-chip memory used {mib('on_chip_used_bytes')}, "
            f"off-chip {mib('off_chip_used_bytes')}")


def edgetpu_report(report: Report, per_op: bool = False) -> str:
    """Per op type (like the compiler's log), every op that cannot map, the first blocker and the share."""
    first = report.first_unmapped
    cut = report.mapped
    lines = [f"{report.path}: Edge TPU compatibility (Coral's published requirements; no compiler used)"]
    for problem in report.model_problems:
        lines.append(f"  model: {problem}")
    lines.append(f"  {'operator':<30} {'version':>7} {'Coral max':>9} {'count':>6}  status")
    rows: dict[tuple[str, int, str], int] = {}
    for op in report.ops:
        status = ("maps to the Edge TPU" if op.index < cut else
                  "cannot map: " + "; ".join(op.problems) if not op.supported else
                  "after the first unmapped op: runs on the CPU")
        rows[(op.op, op.version, status)] = rows.get((op.op, op.version, status), 0) + 1
    for (name, version, status), count in rows.items():
        coral = CORAL_MAX_OP_VERSION.get(name)
        lines.append(f"  {name:<30} {version:>7} {'-' if coral is None else coral:>9} {count:>6}  {status}")
    lines.append(f"  (Coral max: the highest op version TFLite {CORAL_TFLITE} registers, which Coral's runtime and "
                 "edgetpu_compiler 16 accept; docs/coral-board.md)")
    if per_op:
        lines.append("  per op:")
        for op in report.ops:
            state = "maps" if op.index < cut else ("NO: " + "; ".join(op.problems) if not op.supported else "CPU (after cut)")
            lines.append(f"    {op.index:>4} {op.op:<28} v{op.version:<3} {state}")
    if first is None:
        lines.append(f"  all {len(report.ops)} ops map: 100% of the model on the Edge TPU")
    else:
        why = "; ".join(first.problems or report.model_problems)
        lines.append(f"  first op that stops the mapping: #{first.index} {first.op}: {why}")
        lines.append(f"  mapped: {report.mapped} of {len(report.ops)} ops ({report.mapped_share:.1%}); "
                     "the rest would run on the CPU")
    return "\n".join(lines)


def device_side_by_side(device: dict, where: str = "this machine") -> str:
    """Host Keras / float TFLite / int8 TFLite beside the device runner, one row each."""
    host, acc, lat = device.get("host") or {}, device["accuracy"], device["latency"]
    if device["task"] == "aperture":
        return _regression_side_by_side(device, where)
    obj = device["task"] == "object"
    second = "relaxed" if obj else "F1"
    lines = [f"{device['model']}: {device['task']}, {device['data']}",
             f"  {'decoder':<44} {'accuracy':>9} {second:>8} {'agree':>8} {'p50 ms':>8} {'p99 ms':>8}"]
    for key, label in (("keras", "host: Keras float"), ("float", "host: float TFLite"), ("int8", "host: int8 TFLite")):
        if key in host:
            m = host[key]
            sec = f"{m['relaxed_accuracy']:.1%}" if obj else f"{m['f1']:.3f}"
            lines.append(f"  {label:<44} {m['accuracy']:>9.2%} {sec:>8} {m['agreement']:>8.2%} {'':>8} {'':>8}")
    sec = f"{acc['relaxed_accuracy']:.1%}" if obj else f"{acc['f1']:.3f}"
    label = f"device on {where}: {device['runtime']}{' + Edge TPU' if device['edgetpu'] else ''}"
    lines.append(f"  {label:<44} {acc['accuracy']:>9.2%} {sec:>8} {acc['host_float_agreement']:>8.2%} "
                 f"{lat['p50_ms']:>8.3f} {lat['p99_ms']:>8.3f}")
    lines.append(f"  device vs host int8: {acc['host_int8_bit_exact']:.2%} of windows bit-exact, argmax "
                 f"{acc['host_int8_argmax_agreement']:.2%}; {lat['n']} timed invokes, {device['threads']} thread(s); "
                 f"model file {device['model_file']} ({device['detail']})")
    sat = device.get("input_saturated") or {}
    if sat.get("counts"):
        lines.append(f"  input: {sat['counts']} counts in {sat['windows']} windows above the calibrated range "
                     f"(> {sat['max_count']:.1f} spikes/bin) saturated the int8 input")
    lines += [f"  not used: {why}" for why in device["skipped"]]
    return "\n".join(lines)


def _regression_side_by_side(device: dict, where: str) -> str:
    """The aperture decoder: R2 / r / RMSE of the host's three models and of the device, one row each."""
    host, acc, lat = device.get("host") or {}, device["accuracy"], device["latency"]
    u = acc["units"]
    lines = [f"{device['model']}: {device['task']}, {device['data']}",
             f"  {'decoder':<44} {'R2':>8} {'r':>8} {'RMSE ' + u:>9} {'p50 ms':>8} {'p99 ms':>8}"]
    for key, label in (("keras", "host: Keras float"), ("float", "host: float TFLite"), ("int8", "host: int8 TFLite")):
        if key in host:
            m = host[key]
            lines.append(f"  {label:<44} {m['r2']:>8.4f} {m['pearson_r']:>8.4f} {m['rmse']:>9.2f} {'':>8} {'':>8}")
    label = f"device on {where}: {device['runtime']}{' + Edge TPU' if device['edgetpu'] else ''}"
    lines.append(f"  {label:<44} {acc['r2']:>8.4f} {acc['pearson_r']:>8.4f} {acc['rmse']:>9.2f} "
                 f"{lat['p50_ms']:>8.3f} {lat['p99_ms']:>8.3f}")
    lines.append(f"  device vs host int8: {acc['host_int8_bit_exact']:.2%} of windows bit-exact, largest difference "
                 f"{acc['host_int8_max_step_diff']} int8 steps; vs host float: RMS {acc['host_float_rms_error']:.3f} {u}; "
                 f"{lat['n']} timed invokes, {device['threads']} thread(s); model file {device['model_file']} "
                 f"({device['detail']})")
    lines += [f"  not used: {why}" for why in device["skipped"]]
    return "\n".join(lines)


def _listed(software: dict) -> str:
    """'Python 3.7.16, numpy 1.19.5, tflite_runtime 2.7.0' from the keys that have a value."""
    return ", ".join(v if k == "runtime" else f"{k} {v}" for k, v in software.items() if v) or "nothing"


def software_line(board: Board, about: dict) -> str:
    """What the board runs, as it reported it, beside what the inventory records (a mismatch said)."""
    reported = {"Python": about["python"], "numpy": about["numpy"],
                "runtime": f"{about['runtime']} {about['runtime_version']}"}
    recorded = {"Python": board.python_version, "numpy": board.numpy_version, "runtime": board.runtime}
    differ = [key for key, value in recorded.items() if value and value != reported[key]]
    line = (f"board {board.name}: runs {_listed(reported)} ({about['detail']}) on {about['machine']}; "
            f"inventory records {_listed(recorded)}")
    return line + (f" (they differ in {', '.join(differ)}: update the inventory)" if differ else "")


def inspection(i) -> str:
    """A `host.data.inspect.Inspection`: what a layout file may name, and a suggested layout."""
    lo, mid, hi = i.duration_s
    lines = [f"recording {i.name}: {i.n_trials} trials, {i.n_units} units, {i.spikes} spikes",
             f"  trial duration: min {lo:.3g} s, median {mid:.3g} s, max {hi:.3g} s",
             f"  event labels ({len(i.events)}; trials that have it, median onset from the trial start):"]
    lines += [f"    {e.label!r:24} {e.trials:6d} trials   {e.median_onset_s:8.3f} s"
              + (f"   ({e.count} onsets)" if e.count > e.trials else "") for e in i.events] or ["    none"]
    lines.append(f"  per-trial annotations ({len(i.annotations)}; values with their trial counts):")
    for a in i.annotations:
        shown = ", ".join(f"{v} ({n})" for v, n in a.values)
        more = f", ... {a.distinct - len(a.values)} more" if a.distinct > len(a.values) else ""
        missing = f"; missing in {a.missing} trials" if a.missing else ""
        lines.append(f"    {a.name!r:24} {a.kind}, {a.distinct} values: {shown}{more}{missing}")
    if not i.annotations:
        lines.append("    none")
    lines.append(f"  signals ({len(i.signals)}; a layout's `target` names one):")
    lines += [f"    {name!r:24} {units}, {rate:g} Hz, in {n} trials" for name, units, rate, n in i.signals] or ["    none"]
    if i.paper_layout:
        lines.append("layout: this file has the paper's layout (obj, correct, Hold .. Rew): no --layout needed")
    else:
        lines += ["suggested layout (save as a .toml file, check it, pass it with --layout):", i.suggestion]
    return "\n".join(lines)


def live_summary(s: dict) -> str:
    """A `grasptpu live` session's summary (host.live.session.run_session): end-to-end latency, bins
    sent, received and missed, the board's own figures and agreement with the offline replay."""
    lat, ag, b = s["latency"], s["agreement"], s["board_live"]
    cpu = b.get("cpu", {})
    share = "-" if cpu.get("share") is None else f"{cpu['share']:.1%}"
    lines = [
        f"live on {s['board']} ({b.get('runtime')} {b.get('runtime_version', '')}, {b.get('detail')}) | "
        f"{' + '.join(s['models'].values())} | replayed {s['trials']} test trials of {s['session']} "
        f"({s['bins_sent']} bins at {s['bin_ms']:g} ms, real-time pace, {s['gap_bins']} silent bin(s) between trials)",
        f"  end to end (the bin's acquisition stamp -> its decision received, one clock): p50 {lat['p50_ms']:.3f} ms, "
        f"p99 {lat['p99_ms']:.3f} ms, max {lat['max_ms']:.3f} ms (of which the replay's own lateness in pushing: "
        f"p99 {s['replay_late_ms']['p99']:.3f} ms)",
        f"  bins: {s['bins_sent']} sent, {s['bins_received']} decisions received, {s['missed_bins']} missed; the board "
        f"counted {b.get('gaps')} gaps ({b.get('missed_bins')} bins: the replay's pauses between trials), "
        f"{b.get('invalid')} invalid bins",
        f"  board per bin: pull to push p50 {b['board_ms']['p50']:.3f} ms, p99 {b['board_ms']['p99']:.3f} ms; "
        f"CPU {cpu.get('ms_per_bin', 0):.3f} ms per bin = {share} of one core",
        f"  vs device.stream offline on the same board and trials: {ag['identical']} of {ag['bins']} bins identical"
        + (f"; aperture identical (to 0.001 mm) on {ag['aperture_identical']} of {ag['aperture_bins']} bins"
           if "aperture_bins" in ag else ""),
    ]
    if "first_difference" in ag:
        lines.append(f"  first difference: {ag['first_difference']}")
    return "\n".join(lines)
