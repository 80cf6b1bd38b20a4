"""Synthetic grasping sessions that stand in for the real recordings, which are not public.

The real data cannot be shipped, so every stage after the reader is developed and tested on
sessions drawn from a generative model built to be hard in the same ways: per-session unit
counts, long trials that give about 10 rest windows per grasp window, object tuning that is
smooth in shape and size (neighbouring sizes get confused, shapes do not), trial-to-trial gain
noise, imbalanced and rare objects, duplicate ids, incorrect and aborted trials, and special
objects (id >= 85) that the loader must drop. `docs/synthetic.md` describes the model.

The result is a `Recording`, the same flat form the MATLAB reader returns, so the rest of the
pipeline cannot tell a synthetic session from a real one.

Randomness comes from one `SeedSequence` per (seed, session) split into independent streams
(objects, units, trial table, spikes): the trial table does not depend on `n_units`, so a test
can draw the full trial table of a session with few units.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter1d

from host.data import aperture, objects
from host.errors import GrasptpuError
from host.data.recording import Recording, Signal

PHASE_LABELS: tuple[str, ...] = ("Start", "Fix", "Cue", "Mem", "Go", "Mov", "Hold", "Rew", "End")
# Every phase but End lasts until the next event; End is the trial's t_stop.
_TIMED_PHASES = PHASE_LABELS[:-1]
# Onsets that evoke a brief burst on top of the sustained phase rate.
_TRANSIENT_PHASES = ("Cue", "Go", "Mov", "Hold")
_ABORT_PHASES = ("Fix", "Cue", "Mem", "Go", "Mov")  # the phase in which an aborted trial ends
_SPECIAL_IDS = np.arange(85, 89)  # non-grasp trials (id >= 85), not in objects.all_object_ids()

_GRID_S = 0.010  # rates are piecewise constant on this grid: 4 cells per 40 ms bin
_EDGE_SMOOTH_S = 0.040  # neurons anticipate and lag phase changes: soften the edges
_TRANSIENT_TAU_S = 0.150
_HAND_SD = 0.25  # log-rate weight of aperture / velocity per unit: decodable, not trivially
_HAND_APERTURE_SCALE_MM = 40.0  # aperture above rest, mm, to about unit range (peaks reach ~2)
_HAND_VELOCITY_SCALE_MM_S = 200.0  # opening and closing speeds peak at a few hundred mm/s
_LATENT_TAU_S = 0.300  # shared slow fluctuations within a trial (attention, arousal)
_MAX_RATE_HZ = 150.0
_LATENT_DIM = 10
_SHAPE_SEPARATION = 2.0  # typical latent norm of a shape's centre
_SIZE_SPAN = 1.5  # latent distance from size 1 to size 6 along the straight part of the curve
_SIZE_BEND = 0.3


@dataclass(frozen=True)
class SessionSpec:
    """Size and animal of one recording session (the paper's Table 1; docs/method.md)."""

    name: str
    animal: str
    n_units: int
    n_trials: int


@dataclass(frozen=True)
class AnimalModel:
    """What differs between the two monkeys: rates, tuning strength and behaviour timing.

    Attributes:
        median_rate_hz: median over units of the baseline (fixation) rate.
        rate_log_sd: spread of log baseline rates over units.
        tuned_fraction: share of units tuned to the object.
        tuning_log_sd: log-rate spread over objects of a typical tuned unit in hold at
            difficulty 1 (M decodes better than Z in the paper, so M is larger).
        phase_s: per timed phase, (median, log sd, min, max) of its duration in seconds.
    """

    median_rate_hz: float
    rate_log_sd: float
    tuned_fraction: float
    tuning_log_sd: float
    phase_s: dict[str, tuple[float, float, float, float]]


ANIMALS: dict[str, AnimalModel] = {
    "M": AnimalModel(
        median_rate_hz=6.5, rate_log_sd=0.7, tuned_fraction=0.7, tuning_log_sd=0.65,
        phase_s={
            "Start": (0.50, 0.20, 0.30, 0.90), "Fix": (1.10, 0.20, 0.70, 1.60),
            "Cue": (0.80, 0.05, 0.70, 0.90), "Mem": (1.50, 0.25, 0.90, 2.40),
            "Go": (0.28, 0.20, 0.18, 0.50), "Mov": (0.60, 0.20, 0.40, 1.00),
            "Hold": (0.75, 0.20, 0.50, 1.00), "Rew": (2.80, 0.12, 2.20, 3.60),
        },
    ),
    "Z": AnimalModel(
        median_rate_hz=5.5, rate_log_sd=0.7, tuned_fraction=0.6, tuning_log_sd=0.55,
        phase_s={
            "Start": (0.50, 0.20, 0.30, 0.90), "Fix": (1.20, 0.20, 0.80, 1.80),
            "Cue": (0.80, 0.05, 0.70, 0.90), "Mem": (1.30, 0.25, 0.80, 2.00),
            "Go": (0.35, 0.25, 0.22, 0.60), "Mov": (0.75, 0.25, 0.50, 1.20),
            "Hold": (0.70, 0.20, 0.50, 1.00), "Rew": (2.70, 0.12, 2.10, 3.50),
        },
    ),
}

SESSIONS: dict[str, SessionSpec] = {
    s.name: s for s in (
        SessionSpec("MRec40", "M", 552, 745), SessionSpec("MRec41", "M", 568, 757),
        SessionSpec("MRec42", "M", 554, 653), SessionSpec("ZRec32", "Z", 391, 687),
        SessionSpec("ZRec35", "Z", 388, 724), SessionSpec("ZRec50", "Z", 369, 610),
    )
}
# Smallest session: fastest end to end on a 2-core host, smallest model input for the Edge TPU.
DEFAULT_SESSION = "ZRec50"

# Object tuning per phase, relative to hold: visual during cue, planning during memory, motor
# during movement and strongest while the hand holds the object; a trace remains at reward.
_TUNING_PROFILE = {"Start": 0.0, "Fix": 0.0, "Cue": 0.25, "Mem": 0.4, "Go": 0.5,
                   "Mov": 0.8, "Hold": 1.0, "Rew": 0.2}
# Which tuning vector each phase uses: planning codes the object differently from grasping.
_TUNING_GROUP = {"Start": 0, "Fix": 0, "Cue": 0, "Mem": 0, "Go": 0, "Mov": 1, "Hold": 2, "Rew": 2}
# Object-independent phase modulation (mean, sd over units) of the log rate; hold and movement
# differ from rest and from each other so the grasp-phase detector has an easy job.
_PHASE_MODULATION = {"Start": (0.0, 0.05), "Fix": (0.0, 0.10), "Cue": (0.10, 0.25),
                     "Mem": (0.0, 0.20), "Go": (0.10, 0.25), "Mov": (0.30, 0.50),
                     "Hold": (0.20, 0.70), "Rew": (0.0, 0.30)}

# Noise sds at difficulty 1 (log rate); they grow with sqrt(difficulty).
_TRIAL_GAIN_SD = 0.15  # shared by all units of a trial
_UNIT_TRIAL_GAIN_SD = 0.25  # per unit and trial
_LATENT_SD = 0.15  # slow within-trial fluctuations, shared through per-unit loadings
_DRIFT_SD = 0.10  # slow per-unit drift over the session


@dataclass(frozen=True)
class _TrialTable:
    """Behaviour of a session: what was presented, how it went, when each phase began."""

    object_ids: np.ndarray
    correct: np.ndarray
    t_start_s: np.ndarray
    event_labels: list[list[str]]
    event_offsets_s: list[np.ndarray]  # relative to t_start; last one is End = duration


@dataclass(frozen=True)
class _Units:
    """Fixed per-unit parameters of a session's population."""

    log_base: np.ndarray  # (units,) log baseline rate, Hz
    refractory_s: np.ndarray  # (units,)
    phase_coef: np.ndarray  # (units, n_timed + n_transient + n_latent) object-free weights
    tuning: np.ndarray  # (3, n_objects, units) log-rate shift per tuning group and object
    drift_amp: np.ndarray  # (units,)
    drift_freq: np.ndarray  # (units,) cycles per session
    drift_phase: np.ndarray  # (units,)
    hand_coef: np.ndarray  # (units, 2) log-rate weight of the hand's aperture and of its velocity


def generate(session: str = DEFAULT_SESSION, *, seed: int = 0, difficulty: float = 1.0,
             n_trials: int | None = None, n_units: int | None = None,
             progress: bool = False) -> Recording:
    """Draw one synthetic session, deterministic in all arguments.

    Args:
        session: a key of `SESSIONS`; sets the animal and the default size.
        seed: different seeds give different sessions of the same kind.
        difficulty: 1 is the calibrated default; higher weakens object tuning (by 1/difficulty)
            and raises trial noise (by sqrt(difficulty)).
        n_trials, n_units: override the session's size (tests use tiny sessions).
        progress: show a tqdm bar over trials.

    Returns:
        A `Recording` in absolute session time, like one read from a real file.
    """
    spec = _session_spec(session)
    if not difficulty > 0:
        raise GrasptpuError(f"difficulty must be > 0, got {difficulty}")
    n_trials = spec.n_trials if n_trials is None else _positive("n_trials", n_trials)
    n_units = spec.n_units if n_units is None else _positive("n_units", n_units)
    model = ANIMALS[spec.animal]
    rng_objects, rng_units, rng_trials, rng_spikes, rng_hand, rng_hand_units = _streams(seed, spec.name)
    object_table = np.concatenate([objects.all_object_ids(), _SPECIAL_IDS]).astype(np.int16)
    latents = _object_latents(object_table, rng_objects)
    units = _draw_units(n_units, model, latents, difficulty, rng_units, rng_hand_units)
    table = _draw_trial_table(n_trials, model, object_table, rng_trials)
    hand = [aperture.key_points(labels, onsets, int(obj), rng_hand)
            for labels, onsets, obj in zip(table.event_labels, table.event_offsets_s, table.object_ids)]
    times, counts = _draw_spikes(table, units, object_table, difficulty, rng_spikes, progress, hand)
    offsets = np.zeros(n_trials * n_units + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    durations = np.array([o[-1] for o in table.event_offsets_s])
    return Recording(
        name=spec.name, n_units=n_units,
        trial_annotations={"obj": table.object_ids.astype(np.float64), "correct": table.correct.astype(np.float64)},
        t_start_s=table.t_start_s, t_stop_s=table.t_start_s + durations,
        event_labels=table.event_labels,
        event_times_s=[t0 + o for t0, o in zip(table.t_start_s, table.event_offsets_s)],
        spike_times_s=times, train_offsets=offsets,
        annotations={"synthetic": 1, "animal": spec.animal, "seed": seed,
                     "difficulty": difficulty},
        signals={"aperture": _aperture_signal(hand, durations, table.t_start_s)},
    )


APERTURE_RATE_HZ = 100.0


def _aperture_signal(hand: list[tuple[np.ndarray, np.ndarray]], durations: np.ndarray,
                     t_start_s: np.ndarray) -> Signal:
    """The hand aperture of every trial, sampled at APERTURE_RATE_HZ from the trial start to its end."""
    trials = [aperture.min_jerk(np.arange(int(np.ceil(d * APERTURE_RATE_HZ))) / APERTURE_RATE_HZ, times, values)
              for (times, values), d in zip(hand, durations)]
    return Signal.from_trials("aperture", "mm", APERTURE_RATE_HZ, trials, t_start_s)


def _session_spec(session: str) -> SessionSpec:
    """Look the session up, or say which names exist."""
    if session not in SESSIONS:
        raise GrasptpuError(
            f"unknown session {session!r}; valid sessions: {', '.join(SESSIONS)}")
    return SESSIONS[session]


def _positive(name: str, value: int) -> int:
    """A size override, checked here so a zero fails with its name rather than deep inside."""
    if int(value) < 1:
        raise GrasptpuError(f"{name} must be >= 1, got {value}")
    return int(value)


def _streams(seed: int, session: str) -> list[np.random.Generator]:
    """Independent generators for objects, units, trial table, spikes, the hand aperture and the
    units' hand tuning (the last two added later: every earlier stream draws as before).

    crc32 rather than hash(): Python salts string hashes per process.
    """
    root = np.random.SeedSequence([int(seed), zlib.crc32(session.encode())])
    return [np.random.default_rng(s) for s in root.spawn(6)]  # spawn(6) keeps spawn(4)'s first four


# ---------------------------------------------------------------- objects

def _object_latents(object_table: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A latent vector per object: shapes apart, sizes of a shape along a smooth curve.

    Size is partly coded along one axis shared by all shapes (grip aperture) and partly along
    a shape's own curved path, so size transfers across shapes only in part. Duplicate ids get
    their canonical object's vector: they are the same physical object.
    """
    d = _LATENT_DIM
    size_axis = _unit_vector(rng.standard_normal(d))
    # Mixed and special objects: isolated points, as far from everything as shapes are.
    latents = rng.standard_normal((len(object_table), d)) * _SHAPE_SEPARATION / np.sqrt(d)
    for turntable in objects.SHAPES:
        centre = rng.standard_normal(d) * _SHAPE_SEPARATION / np.sqrt(d)
        own_axis, bend_axis = (_unit_vector(v) for v in rng.standard_normal((2, d)))
        x = np.linspace(-0.5, 0.5, objects.SIZES_PER_SHAPE)
        curve = (np.outer(x, _SIZE_SPAN * (size_axis + own_axis) / np.sqrt(2))
                 + np.outer(x ** 2 - np.mean(x ** 2), _SIZE_BEND * bend_axis))
        rows = np.searchsorted(object_table, 10 * turntable + np.arange(1, 7))
        latents[rows] = centre + curve
    for duplicate, canonical in objects.DUPLICATE_IDS.items():
        latents[object_table == duplicate] = latents[object_table == canonical]
    latents -= latents.mean(axis=0)
    return latents / np.sqrt(np.mean(np.sum(latents ** 2, axis=1)))


def _unit_vector(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


# ---------------------------------------------------------------- units

def _draw_units(n_units: int, model: AnimalModel, latents: np.ndarray, difficulty: float,
                rng: np.random.Generator, rng_hand: np.random.Generator) -> _Units:
    """Baseline rates, phase modulation, object tuning and hand tuning of every unit."""
    log_base = np.log(model.median_rate_hz) + model.rate_log_sd * rng.standard_normal(n_units)
    sustained = np.stack([m + s * rng.standard_normal(n_units)
                          for m, s in (_PHASE_MODULATION[p] for p in _TIMED_PHASES)], axis=1)
    transient = 0.2 + 0.35 * rng.standard_normal((n_units, len(_TRANSIENT_PHASES)))
    latent_load = rng.standard_normal((n_units, 2)) * np.sqrt(difficulty) * _LATENT_SD
    return _Units(
        log_base=log_base,
        refractory_s=rng.uniform(0.0015, 0.002, n_units),
        phase_coef=np.concatenate([sustained, transient, latent_load], axis=1),
        tuning=_tuning(n_units, model, latents, difficulty, rng),
        drift_amp=_DRIFT_SD * np.sqrt(difficulty) * np.abs(rng.standard_normal(n_units)),
        drift_freq=rng.uniform(0.2, 1.5, n_units),
        drift_phase=rng.uniform(0, 2 * np.pi, n_units),
        hand_coef=_HAND_SD / np.sqrt(difficulty) * rng_hand.standard_normal((n_units, 2)),
    )


def _tuning(n_units: int, model: AnimalModel, latents: np.ndarray, difficulty: float,
            rng: np.random.Generator) -> np.ndarray:
    """Log-rate shift per (tuning group, object, unit): linear in the object's latent vector.

    Linear-in-latent keeps tuning smooth: close objects evoke close responses. Planning,
    movement and hold use related but different weight vectors, as in AIP/F5 where visual and
    motor object codes overlap only in part.
    """
    hold_w = rng.standard_normal((n_units, _LATENT_DIM))
    mov_w = 0.8 * hold_w + 0.6 * rng.standard_normal((n_units, _LATENT_DIM))
    plan_w = 0.6 * hold_w + 0.8 * rng.standard_normal((n_units, _LATENT_DIM))
    depth = rng.lognormal(0.0, 0.5, n_units) * (rng.random(n_units) < model.tuned_fraction)
    scale = depth * model.tuning_log_sd / difficulty
    return np.stack([latents @ (w * scale[:, None]).T for w in (plan_w, mov_w, hold_w)])


# ---------------------------------------------------------------- trial table

def _draw_trial_table(n_trials: int, model: AnimalModel, object_table: np.ndarray,
                      rng: np.random.Generator) -> _TrialTable:
    """Objects, outcomes and phase timing of every trial, and the session clock."""
    object_ids = _draw_objects(n_trials, rng)
    correct = (rng.random(n_trials) >= 0.05).astype(np.int8)
    special = rng.random(n_trials) < 0.03
    object_ids[special] = rng.choice(_SPECIAL_IDS, special.sum())
    correct[special] = 1  # the monkey did what was asked; the loader drops them by id
    aborted = (correct == 0) & (rng.random(n_trials) < 0.5)
    labels, offsets = [], []
    for k in range(n_trials):
        lab, off = _trial_events(model, bool(aborted[k]), rng)
        labels.append(lab)
        offsets.append(off)
    durations = np.array([o[-1] for o in offsets])
    gaps = rng.uniform(1.5, 4.0, n_trials)
    t_start = rng.uniform(2.0, 10.0) + np.concatenate([[0.0], np.cumsum(durations + gaps)[:-1]])
    return _TrialTable(object_ids.astype(np.int16), correct, t_start, labels, offsets)


def _draw_objects(n_trials: int, rng: np.random.Generator) -> np.ndarray:
    """Presented objects, unevenly: a few common, a few rare, duplicates a modest share.

    The rare objects are canonical ids without a duplicate, so merging cannot rescue them:
    they end up with fewer than 3 correct trials and the loader must drop them.
    """
    ids = objects.all_object_ids().astype(np.int64)
    weights = rng.lognormal(0.0, 0.5, len(ids))
    duplicates = np.isin(ids, list(objects.DUPLICATE_IDS))
    weights[duplicates] *= 0.35
    protected = duplicates | np.isin(ids, list(objects.DUPLICATE_IDS.values()))
    rare = rng.choice(ids[~protected], 3, replace=False)
    weights[np.isin(ids, rare)] = 0.0
    weights *= (1.0 - 3 * 1.2 / n_trials) / weights.sum()
    weights[np.isin(ids, rare)] = 1.2 / n_trials  # about one trial each, often zero or two
    return rng.choice(ids, n_trials, p=weights / weights.sum())


def _trial_events(model: AnimalModel, aborted: bool,
                  rng: np.random.Generator) -> tuple[list[str], np.ndarray]:
    """Phase labels and onsets (s from trial start) of one trial; the last is End.

    An aborted trial stops in a random pre-hold phase and ends shortly after: no Hold, no Rew.
    """
    n_phases = len(_TIMED_PHASES)
    if aborted:
        n_phases = _TIMED_PHASES.index(str(rng.choice(_ABORT_PHASES))) + 1
    phases = _TIMED_PHASES[:n_phases]
    durations = np.array([_phase_duration(model.phase_s[p], rng) for p in phases])
    if aborted:
        durations[-1] = rng.uniform(0.2, 0.6) + rng.uniform(0.3, 0.8)  # error, then timeout
    onsets = np.concatenate([[0.0], np.cumsum(durations)])
    return [*phases, "End"], onsets


def _phase_duration(params: tuple[float, float, float, float], rng: np.random.Generator) -> float:
    median, log_sd, low, high = params
    return float(np.clip(median * np.exp(log_sd * rng.standard_normal()), low, high))


# ---------------------------------------------------------------- spikes

def _draw_spikes(table: _TrialTable, units: _Units, object_table: np.ndarray, difficulty: float,
                 rng: np.random.Generator, progress: bool,
                 hand: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """All spike times (absolute, trial-major, unit-minor) and the count per (trial, unit)."""
    n_trials, n_units = len(table.object_ids), len(units.log_base)
    noise = np.sqrt(difficulty)
    trial_gain = _TRIAL_GAIN_SD * noise * rng.standard_normal(n_trials)
    session_phase = np.linspace(0.0, 1.0, n_trials)
    object_rows = np.searchsorted(object_table, table.object_ids)
    times, counts = [], np.zeros((n_trials, n_units), dtype=np.int64)
    trials = range(n_trials)
    if progress:
        from tqdm import tqdm
        trials = tqdm(trials, desc="synthetic trials", unit="trial", disable=None, leave=False)
    for k in trials:
        drift = units.drift_amp * np.sin(
            2 * np.pi * units.drift_freq * session_phase[k] + units.drift_phase)
        gain = (trial_gain[k] + drift
                + _UNIT_TRIAL_GAIN_SD * noise * rng.standard_normal(n_units))
        t, counts[k] = _trial_spikes(table, k, units, object_rows[k], gain, rng, hand[k])
        times.append(t)
    return np.concatenate(times) if times else np.zeros(0), counts.ravel()


def _trial_spikes(table: _TrialTable, k: int, units: _Units, object_row: int, gain: np.ndarray,
                  rng: np.random.Generator, hand: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Spike times of every unit in trial k, sorted within units, refractory respected."""
    labels, offsets = table.event_labels[k], table.event_offsets_s[k]
    basis, cell_start, cell_width = _trial_basis(labels, offsets, rng)
    basis = np.concatenate([basis, _hand_basis(hand, cell_start, cell_width)], axis=1)
    coef = np.concatenate([units.phase_coef, units.hand_coef], axis=1)
    for i, phase in enumerate(_TIMED_PHASES):
        coef[:, i] += _TUNING_PROFILE[phase] * units.tuning[_TUNING_GROUP[phase], object_row]
    # float32, C-ordered and in place: exp on this grid is the slowest step of the generator.
    # The cumulative rate that places spikes is still summed in float64.
    log_rate = coef.astype(np.float32) @ np.ascontiguousarray(basis.T, dtype=np.float32)
    log_rate += (units.log_base + gain).astype(np.float32)[:, None]
    np.minimum(log_rate, np.float32(np.log(_MAX_RATE_HZ)), out=log_rate)
    rate_hz = np.exp(log_rate, out=log_rate)
    t_rel, unit = _inhomogeneous_poisson(rate_hz, cell_start, cell_width, rng)
    t0, t_stop = table.t_start_s[k], table.t_start_s[k] + offsets[-1]
    times = np.minimum(t0 + t_rel, np.nextafter(t_stop, -np.inf))
    keep = _refractory_keep(times, unit, units.refractory_s)
    return times[keep], np.bincount(unit[keep], minlength=len(units.log_base))


def _trial_basis(labels: list[str], offsets: np.ndarray,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Time courses (cells x basis) that unit weights mix into a log rate.

    Columns: one softened indicator per timed phase, one decaying onset burst per transient
    phase, and two shared slow fluctuations (fresh every trial).
    """
    duration = offsets[-1]
    cell_start = np.arange(0.0, duration - 1e-9, _GRID_S)  # no zero-width last cell
    cell_width = np.diff(np.append(cell_start, duration))
    phase_of_cell = np.searchsorted(offsets[:-1], cell_start, side="right") - 1
    phase_index = np.array([_TIMED_PHASES.index(p) for p in labels[:-1]])
    indicator = np.zeros((len(cell_start), len(_TIMED_PHASES)))
    indicator[np.arange(len(cell_start)), phase_index[phase_of_cell]] = 1.0
    indicator = gaussian_filter1d(indicator, _EDGE_SMOOTH_S / _GRID_S, axis=0, mode="nearest")
    onsets = np.array([offsets[labels.index(p)] if p in labels else np.inf
                       for p in _TRANSIENT_PHASES])
    since = cell_start[:, None] - onsets[None, :]
    transient = np.where(since >= 0, np.exp(-np.maximum(since, 0) / _TRANSIENT_TAU_S), 0.0)
    latent = _slow_noise(len(cell_start), rng)
    return np.concatenate([indicator, transient, latent], axis=1), cell_start, cell_width


def _hand_basis(hand: tuple[np.ndarray, np.ndarray], cell_start: np.ndarray, cell_width: np.ndarray) -> np.ndarray:
    """(cells x 2): the hand's aperture above rest and its velocity at each cell's centre, scaled
    to about unit range, which the units' hand_coef weigh (M1 units carry both; docs/method.md)."""
    times, values = hand
    centre = cell_start + cell_width / 2
    a = aperture.min_jerk(centre, times, values)
    velocity = np.gradient(a, centre) if len(centre) > 1 else np.zeros_like(a)
    return np.stack([(a - aperture.REST_MM) / _HAND_APERTURE_SCALE_MM, velocity / _HAND_VELOCITY_SCALE_MM_S], axis=1)


def _slow_noise(n_cells: int, rng: np.random.Generator) -> np.ndarray:
    """Two smooth unit-variance noise traces over the trial's cells."""
    sigma = _LATENT_TAU_S / _GRID_S
    white = rng.standard_normal((n_cells, 2))
    # Smoothing white noise with a Gaussian of sd sigma leaves variance 1 / (2 sqrt(pi) sigma).
    smooth = gaussian_filter1d(white, sigma, axis=0, mode="wrap")
    return smooth * np.sqrt(2 * np.sqrt(np.pi) * sigma)


def _inhomogeneous_poisson(rate_hz: np.ndarray, cell_start: np.ndarray, cell_width: np.ndarray,
                           rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Poisson spikes of every unit (rows) for a piecewise-constant rate, by time rescaling.

    Each unit's count is Poisson in its integrated rate; its spikes are uniform in integrated
    rate, mapped back to time through the cumulative rate. All units share one flattened
    cumulative so the whole trial needs a single sort and a single search.
    """
    n_units, n_cells = rate_hz.shape
    expected = (rate_hz * cell_width).ravel().astype(np.float64, copy=False)
    cumulative = np.cumsum(expected)
    unit_end = cumulative[n_cells - 1::n_cells]
    unit_total = np.diff(np.concatenate([[0.0], unit_end]))
    n_spikes = rng.poisson(unit_total)
    unit = np.repeat(np.arange(n_units), n_spikes)
    # Stride 2 keeps units apart even if unit + u rounds up; u stays exactly recoverable.
    u = np.sort(2.0 * unit + rng.random(unit.size)) - 2.0 * unit
    target = (unit_end - unit_total)[unit] + u * unit_total[unit]
    cell = np.searchsorted(cumulative, target, side="right")
    cell = np.clip(cell, unit * n_cells, unit * n_cells + n_cells - 1)
    before = cumulative[cell] - expected[cell]
    fraction = np.clip((target - before) / expected[cell], 0.0, 1.0)
    time_cell = cell - unit * n_cells
    return cell_start[time_cell] + fraction * cell_width[time_cell], unit


def _refractory_keep(times: np.ndarray, unit: np.ndarray, refractory_s: np.ndarray) -> np.ndarray:
    """Drop every spike closer than the refractory period to the previous spike of its unit.

    Comparing with the previous drawn spike (kept or not) is vectorisable and still guarantees
    the kept spikes are at least one refractory period apart; it thins bursts slightly more
    than a true dead time would.
    """
    keep = np.ones(times.size, dtype=bool)
    if times.size > 1:
        too_close = np.diff(times) < refractory_s[unit[1:]]
        keep[1:] = ~(too_close & (unit[1:] == unit[:-1]))
    return keep
